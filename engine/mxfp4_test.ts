/**
 * gpt-oss's MXFP4 experts: the kernel that reads the 4-bit blocks and E8M0
 * scales on the GPU against a CPU dequantisation (several tiles of several
 * rows, a chunk that starts past expert 0, both epilogues), and a checkpoint
 * whose block shapes or dtypes disagree with config.json refused with one
 * sentence naming the fields.
 */
import assert from "node:assert/strict";
import { DataError } from "../common/errors.ts";
import { openCheckpoint } from "./checkpoint.ts";
import { FIXTURE_MODELS } from "./golden.ts";
import { createGpuContext, readBack, Recorder } from "./gpu.ts";
import { matmulMxfp4 } from "./kernels/matmul_mxfp4.ts";
import { readHeader, readTensorBytes, writeSafetensors } from "./safetensors.ts";

Deno.env.set("XDG_RUNTIME_DIR", Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp");

const FP4 = [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0, -0.5, -1, -1.5, -2, -3, -4, -6];

Deno.test("the MXFP4 kernel computes what a CPU dequantisation of the blocks does", async () => {
  const E = 4, N = 16, K = 96, rows = 7, base = 1; // the chunk holds experts 1..3
  let seed = 7;
  const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  const blocks = new Uint8Array(E * N * (K / 32) * 16).map(() => Math.floor(rnd() * 256));
  const scales = new Uint8Array(E * N * (K / 32)).map(() => 118 + Math.floor(rnd() * 12));
  const bias = new Float32Array(E * N).map(() => rnd() - 0.5);
  const a = new Float32Array(rows * K).map(() => rnd() * 2 - 1);
  const w = (e: number, n: number, k: number) => {
    const block = (e * N + n) * (K / 32) + Math.floor(k / 32), i = k % 32;
    const byte = blocks[block * 16 + (i >> 1)]!;
    return FP4[i % 2 ? byte >> 4 : byte & 15]! * 2 ** (scales[block]! - 127);
  };
  const dot = (row: number, e: number, n: number) => {
    let d = 0;
    for (let k = 0; k < K; k++) d += a[row * K + k]! * w(e, n, k);
    return d + bias[e * N + n]!;
  };
  // tiles: expert 2 with slots 0..3, expert 3 with slots 3..7, expert 0 (outside the chunk), padding
  const tiles = new Uint32Array([2, 0, 3, 3, 3, 7, 0, 7, 7, 0xffffffff, 0, 0]);
  const expertOf = [2, 2, 2, 3, 3, 3, 3];
  const rowToken = new Uint32Array([6, 1, 4, 0, 2, 5, 3]);
  const rowWeight = new Float32Array(rows).map(() => rnd());
  const words = (u: Uint8Array) => {
    const out = new Uint8Array(Math.ceil(u.length / 4) * 4);
    out.set(u);
    return out;
  };
  const ctx = await createGpuContext();
  try {
    const P = ctx.pool;
    // the chunk's buffers start at expert `base`, as mxfp4_weights.ts uploads them
    const perBlocks = N * (K / 32) * 16, perScales = N * (K / 32);
    const weights = {
      blocks: P.upload("blocks", words(blocks.subarray(base * perBlocks))),
      scales: P.upload("scales", words(scales.subarray(base * perScales))),
      bias: P.upload("bias", bias.subarray(base * N)),
      n: N,
      k: K,
    };
    const common = {
      a: P.upload("a", a),
      ...weights,
      tiles: P.upload("tiles", tiles),
      tiles_: 4,
      expertBase: base,
      expertCount: E - base,
    };
    const hidden = P.storage("hidden", rows * (N / 2) * 4), out = P.storage("out", rows * N * 4);
    const rec = new Recorder(ctx);
    matmulMxfp4(rec, {
      ...common,
      y: hidden,
      rowToken: P.upload("row token", rowToken),
      limit: 7,
    }, "swiglu-clamp");
    matmulMxfp4(
      rec,
      { ...common, y: out, rowWeight: P.upload("row weight", rowWeight) },
      "bias-scale",
    );
    rec.finish().submit();
    const [h, o] = await readBack(ctx, [
      { buffer: hidden, bytes: rows * (N / 2) * 4 },
      { buffer: out, bytes: rows * N * 4 },
    ]);
    const gotH = new Float32Array(h!), gotO = new Float32Array(o!);
    for (let s = 0; s < rows; s++) {
      const e = expertOf[s]!;
      for (let j = 0; j < N / 2; j++) {
        const g = Math.min(dot(rowToken[s]!, e, 2 * j), 7);
        const u = Math.max(-7, Math.min(7, dot(rowToken[s]!, e, 2 * j + 1)));
        const want = (u + 1) * g / (1 + Math.exp(-1.702 * g));
        const got = gotH[s * (N / 2) + j]!;
        assert.ok(Math.abs(got - want) <= 1e-4 * Math.max(1, Math.abs(want)), `hidden ${s} ${j}`);
      }
      for (let n = 0; n < N; n++) {
        const want = dot(s, e, n) * rowWeight[s]!;
        const got = gotO[s * N + n]!;
        assert.ok(Math.abs(got - want) <= 1e-4 * Math.max(1, Math.abs(want)), `out ${s} ${n}`);
      }
    }
  } finally {
    ctx.pool.releaseAll();
    ctx.device.destroy();
  }
});

/** A copy of tiny-gpt-oss with `edit` applied to its config and tensors. */
async function brokenCopy(
  edit: (
    config: Record<string, unknown>,
    tensors: Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }>,
  ) => void,
): Promise<string> {
  const src = `${FIXTURE_MODELS}tiny-gpt-oss`;
  const dir = await Deno.makeTempDir({ prefix: "moetrace-mxfp4-" });
  const config = JSON.parse(await Deno.readTextFile(`${src}/config.json`));
  const tensors = new Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }>();
  for (const [name, info] of await readHeader(`${src}/model.safetensors`)) {
    tensors.set(name, {
      dtype: info.dtype,
      shape: [...info.shape],
      bytes: await readTensorBytes(info),
    });
  }
  edit(config, tensors);
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
  await writeSafetensors(`${dir}/model.safetensors`, Object.fromEntries(tensors));
  return dir;
}

Deno.test("MXFP4 blocks that disagree with config.json are one sentence naming the fields", async () => {
  const cases: [Parameters<typeof brokenCopy>[0], RegExp][] = [
    [
      (config) => (config.intermediate_size = 64),
      /^Tensor model\.layers\.0\.mlp\.experts\.gate_up_proj_blocks in .*model\.safetensors has shape \[8, 64, 2, 16\], expected \[8, 128, 2, 16\] from config\.json \(num_local_experts 8, 2 × intermediate_size 128 rows, hidden_size 64 \/ 32 blocks of 16 bytes\)\.$/,
    ],
    [
      (_, tensors) => {
        const t = tensors.get("model.layers.1.mlp.experts.down_proj_scales")!;
        tensors.set("model.layers.1.mlp.experts.down_proj_scales", {
          ...t,
          shape: [8, 64, 2],
          bytes: new Uint8Array(8 * 64 * 2).fill(127),
        });
      },
      /^Tensor model\.layers\.1\.mlp\.experts\.down_proj_scales in .* has shape \[8, 64, 2\], expected \[8, 64, 1\] from config\.json \(num_local_experts 8, hidden_size 64 rows, intermediate_size 32 \/ 32 blocks\)\.$/,
    ],
    [
      (_, tensors) => {
        const t = tensors.get("model.layers.0.mlp.experts.down_proj_blocks")!;
        tensors.set("model.layers.0.mlp.experts.down_proj_blocks", {
          ...t,
          dtype: "I8",
        });
      },
      /^Tensor model\.layers\.0\.mlp\.experts\.down_proj_blocks in .* has dtype I8, expected U8\.$/,
    ],
    [
      (config) => (config.intermediate_size = 48),
      /^Field intermediate_size in .*config\.json is 48, expected a multiple of 32 \(an MXFP4 block is 32 values of an expert input\)\.$/,
    ],
  ];
  for (const [edit, message] of cases) {
    const dir = await brokenCopy(edit);
    try {
      await assert.rejects(
        openCheckpoint(dir),
        (e: unknown) => e instanceof DataError && message.test(e.message),
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});
