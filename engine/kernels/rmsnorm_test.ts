/**
 * RMSNorm into a staging texture (a workgroup reduction per row) against an
 * f64 CPU reference and the storage-buffer kernel, at tiny-moe's hidden size
 * 192 and at 4096 (issue 17: the kernel it replaces compiled a private array
 * of n/4 texels in and took 613 s to compile at 4096 on lavapipe; bench
 * engine prints the compile time). The optional buffer copy holds the same
 * bits as the texture.
 */
import assert from "node:assert/strict";
import { createGpuContext, type GpuContext, readBack, Recorder } from "../gpu.ts";
import { rmsnorm } from "./rmsnorm.ts";
import { Rng } from "../../common/random.ts";

Deno.env.set("XDG_RUNTIME_DIR", Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp");

interface Case {
  n: number;
  rows: number;
  inRowOffset: number;
}

/** Random input rows (offset + rows of n) and weight, with rows of very different scales. */
function inputs(c: Case, seed: number): { x: Float32Array; w: Float32Array } {
  const rng = new Rng(seed);
  const x = new Float32Array((c.inRowOffset + c.rows) * c.n);
  for (let r = 0; r < c.inRowOffset + c.rows; r++) {
    const scale = 10 ** (r % 5 - 2);
    for (let i = 0; i < c.n; i++) x[r * c.n + i] = scale * rng.normal();
  }
  const w = Float32Array.from({ length: c.n }, () => 0.5 + rng.next());
  return { x, w };
}

/** y = w ⊙ x / sqrt(mean(x²) + eps) in f64, rows from the offset. */
function reference(c: Case, x: Float32Array, w: Float32Array, eps: number): Float64Array {
  const y = new Float64Array(c.rows * c.n);
  for (let r = 0; r < c.rows; r++) {
    const src = (c.inRowOffset + r) * c.n;
    let ss = 0;
    for (let i = 0; i < c.n; i++) ss += x[src + i]! ** 2;
    const inv = 1 / Math.sqrt(ss / c.n + eps);
    for (let i = 0; i < c.n; i++) y[r * c.n + i] = w[i]! * x[src + i]! * inv;
  }
  return y;
}

/** The kernel's output rows: from the texture, from its buffer copy, and from the storage variant. */
async function run(ctx: GpuContext, c: Case, x: Float32Array, w: Float32Array, eps: number) {
  const xb = ctx.pool.upload("x", x), wb = ctx.pool.upload("w", w);
  const copy = ctx.pool.storage("y copy", c.rows * c.n * 4);
  const storage = ctx.pool.storage("y storage", c.rows * c.n * 4);
  const fromTexture = ctx.pool.storage("y from texture", c.rows * c.n * 4);
  const texture = ctx.device.createTexture({
    size: [c.n / 4, c.rows],
    format: "rgba32float",
    usage: GPUTextureUsage.STORAGE_BINDING | GPUTextureUsage.COPY_SRC,
  });
  const rec = new Recorder(ctx);
  const args = { x: xb, weight: wb, rows: c.rows, n: c.n, eps, inRowOffset: c.inRowOffset };
  rmsnorm(rec, { ...args, y: texture.createView() });
  rmsnorm(rec, { ...args, y: storage });
  rec.finish().submit();
  // the variant with a buffer copy, separately, so that both texture writes are checked
  const rec2 = new Recorder(ctx);
  const texture2 = ctx.device.createTexture({
    size: [c.n / 4, c.rows],
    format: "rgba32float",
    usage: GPUTextureUsage.STORAGE_BINDING | GPUTextureUsage.COPY_SRC,
  });
  rmsnorm(rec2, { ...args, y: texture2.createView(), yBuffer: copy });
  rec2.finish().submit();
  const fromTexture2 = ctx.pool.storage("y from texture 2", c.rows * c.n * 4);
  const bytes = c.rows * c.n * 4;
  const [tex, tex2, buf, st] = await readBack(
    ctx,
    [fromTexture, fromTexture2, copy, storage].map((buffer) => ({ buffer, bytes })),
    (encoder) => {
      for (const [t, b] of [[texture, fromTexture], [texture2, fromTexture2]] as const) {
        encoder.copyTextureToBuffer({ texture: t }, { buffer: b, bytesPerRow: c.n * 4 }, [
          c.n / 4,
          c.rows,
        ]);
      }
    },
  );
  rec.destroy();
  rec2.destroy();
  texture.destroy();
  texture2.destroy();
  return {
    texture: new Float32Array(tex!),
    texture2: new Float32Array(tex2!),
    copy: new Float32Array(buf!),
    storage: new Float32Array(st!),
  };
}

for (
  const c of [
    { n: 192, rows: 130, inRowOffset: 3 },
    { n: 192, rows: 1, inRowOffset: 0 },
    { n: 4096, rows: 5, inRowOffset: 2 },
    { n: 64, rows: 7, inRowOffset: 0 },
  ]
) {
  Deno.test(`texture RMSNorm at n ${c.n}, ${c.rows} rows from row ${c.inRowOffset}: the CPU reference and the storage kernel`, async () => {
    const ctx = await createGpuContext();
    try {
      const eps = 1e-5;
      const { x, w } = inputs(c, c.n + c.rows);
      const want = reference(c, x, w, eps);
      const got = await run(ctx, c, x, w, eps);
      for (let i = 0; i < want.length; i++) {
        const tol = 2e-6 * Math.max(1, Math.abs(want[i]!));
        assert.ok(
          Math.abs(got.texture[i]! - want[i]!) <= tol,
          `texture ${i}: ${got.texture[i]} vs ${want[i]}`,
        );
        assert.ok(Math.abs(got.storage[i]! - got.texture[i]!) <= tol, `storage ${i}`);
      }
      assert.deepEqual(
        got.texture2,
        got.texture,
        "the variant with a buffer copy writes the same texture",
      );
      assert.deepEqual(got.copy, got.texture, "the buffer copy holds the texture's bits");
    } finally {
      ctx.pool.releaseAll();
      ctx.device.destroy();
    }
  });
}

Deno.test("a texture RMSNorm row has the same bits whatever the row count (prefill and decode alike)", async () => {
  const ctx = await createGpuContext();
  try {
    const all = { n: 192, rows: 70, inRowOffset: 0 };
    const { x, w } = inputs(all, 3);
    const many = await run(ctx, all, x, w, 1e-5);
    for (const r of [0, 9, 69]) {
      const one = await run(ctx, { n: 192, rows: 1, inRowOffset: r }, x, w, 1e-5);
      assert.deepEqual(one.texture, many.texture.subarray(r * 192, (r + 1) * 192), `row ${r}`);
    }
  } finally {
    ctx.pool.releaseAll();
    ctx.device.destroy();
  }
});
