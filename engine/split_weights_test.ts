/**
 * Issue 17, tensors past one binding or texture: weights larger than the
 * weight limits (gpu.ts `weightLimits`, lowered here so that splitting runs on
 * any machine) are uploaded in pieces (weight_reader.ts `uploadLinear`) and
 * linear.ts runs one matmul per piece.
 *
 * - `linear` on split weights against a CPU product written here, on both
 *   kernel paths, every epilogue a split allows (bias, accumulate, sigmoid
 *   scale, alpha, SwiGLU over column pieces).
 * - Whole checkpoints loaded twice, with the device's limits and with small
 *   ones: on storage buffers only column pieces occur, and each output column
 *   sums its K products in the same order as unsplit, so router logs and
 *   logits are bit-identical (tiny-moe, tiny-qwen2-moe with its gated shared
 *   expert and dense layer, tiny-deepseek-v3 with MLA, shared experts and a
 *   dense layer). On textures K is split too (o_proj, q|k|v, routers, shared
 *   and dense down projections, the LM head): each half of a dot product is
 *   summed on its own and the halves added, a different f32 rounding, so
 *   logits agree within 1e-4 relative and the router's choices are equal.
 */
import assert from "node:assert/strict";
import { createGpuContext, readBack, Recorder } from "./gpu.ts";
import { linear } from "./linear.ts";
import { loadModel } from "./model.ts";
import { writeRandomCheckpoint } from "./random_checkpoint.ts";
import { uploadLinear } from "./weight_reader.ts";
import { Rng } from "../common/random.ts";

Deno.env.set("XDG_RUNTIME_DIR", Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp");

const FIXTURES = new URL("../fixtures/models/", import.meta.url).pathname;

function randomMatrix(rng: Rng, n: number): Float32Array {
  return Float32Array.from({ length: n }, () => rng.normal());
}

/** y [rows, N] = epilogue(a [rows, K] · w [K, N]) in float64. */
function cpuLinear(
  a: Float32Array,
  w: Float32Array,
  rows: number,
  k: number,
  n: number,
  o: {
    w3?: Float32Array;
    bias?: Float32Array;
    gate?: Float32Array;
    alpha?: number;
    y0?: Float32Array;
  },
): Float64Array {
  const y = new Float64Array(rows * n);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < n; c++) {
      let s = 0, u = 0;
      for (let i = 0; i < k; i++) {
        s += a[r * k + i]! * w[i * n + c]!;
        if (o.w3) u += a[r * k + i]! * o.w3[i * n + c]!;
      }
      if (o.w3) s = s / (1 + Math.exp(-s)) * u;
      if (o.gate) s *= 1 / (1 + Math.exp(-o.gate[r]!));
      if (o.bias) s += o.bias[c]!;
      s *= o.alpha ?? 1;
      y[r * n + c] = (o.y0?.[r * n + c] ?? 0) + s;
    }
  }
  return y;
}

Deno.test("linear on weights split past the binding and texture limits equals a CPU product", async () => {
  const rng = new Rng(17);
  const cases = [
    // storage: column pieces of 8 (binding 2 KiB at K = 64); K pieces when 4 columns exceed it
    { textures: false, k: 64, n: 50, limits: { binding: 2048 } },
    { textures: false, k: 200, n: 12, limits: { binding: 2048 } },
    // textures: K pieces of 64 rows and column pieces of 4 × 64 texels
    { textures: true, k: 192, n: 300, limits: { texture: 64 } },
    { textures: true, k: 64, n: 300, limits: { texture: 64 } },
  ];
  for (const tc of cases) {
    const ctx = await createGpuContext({ textures: tc.textures, weightLimits: tc.limits });
    try {
      const rows = 20, { k, n } = tc;
      const a = randomMatrix(rng, rows * k);
      const w = randomMatrix(rng, k * n), w3 = randomMatrix(rng, k * n);
      const bias = randomMatrix(rng, n),
        gate = randomMatrix(rng, rows),
        y0 = randomMatrix(rng, rows * n);
      const opts = { allowTexture: true, half: null };
      const W = uploadLinear(ctx, "w", w, { k, n }, opts);
      const W3 = uploadLinear(ctx, "w3", w3, { k, n }, opts);
      assert.ok(
        (W.pieces?.length ?? 0) > 1,
        `[${k}, ${n}] under ${JSON.stringify(tc.limits)} is split`,
      );
      assert.equal(W.view, undefined);
      assert.equal(W.buffer, undefined);
      const act = { buffer: ctx.pool.upload("a", a) } as {
        buffer: GPUBuffer;
        view?: GPUTextureView;
      };
      if (tc.textures) act.view = ctx.pool.texture("a tex", k / 4, rows, a).createView();
      const variants = [
        {
          name: "bias + alpha",
          variant: { bias: true, alpha: true },
          args: { bias: true, alpha: 0.5 },
        },
        {
          name: "accumulate + sigmoid",
          variant: { accumulate: true, scale: "sigmoid" as const },
          args: { gate: true, y0: true },
        },
        ...(W.pieces!.some((p) => p.kFirst > 0)
          ? []
          : [{ name: "swiglu", variant: { swiglu: true }, args: { w3: true } }]),
      ];
      for (const v of variants) {
        const y = ctx.pool.upload("y", v.args.y0 ? y0 : new Float32Array(rows * n));
        const rec = new Recorder(ctx);
        const extra = {
          ...(v.args.bias ? { bias: ctx.pool.upload("bias", bias) } : {}),
          ...(v.args.gate ? { scale: ctx.pool.upload("gate", gate) } : {}),
          ...(v.args.alpha ? { alpha: v.args.alpha } : {}),
          ...(v.args.w3 ? { w3: W3 } : {}),
        };
        linear(rec, act, W, { y, rows, ...extra }, v.variant, false);
        rec.finish().submit();
        const [out] = await readBack(ctx, [{ buffer: y, bytes: rows * n * 4 }]);
        rec.destroy();
        const got = new Float32Array(out!);
        const want = cpuLinear(a, w, rows, k, n, {
          ...(v.args.w3 ? { w3 } : {}),
          ...(v.args.bias ? { bias } : {}),
          ...(v.args.gate ? { gate } : {}),
          ...(v.args.alpha ? { alpha: v.args.alpha } : {}),
          ...(v.args.y0 ? { y0 } : {}),
        });
        for (let i = 0; i < want.length; i++) {
          assert.ok(
            Math.abs(got[i]! - want[i]!) <= 1e-4 * Math.max(1, Math.abs(want[i]!)) * Math.sqrt(k),
            `${v.name} [${k}, ${n}] ${tc.textures ? "texture" : "storage"}: element ${i} is ${
              got[i]
            }, expected ${want[i]}`,
          );
        }
      }
    } finally {
      ctx.pool.releaseAll();
      ctx.device.destroy();
    }
  }
});

const IDS = Uint32Array.from({ length: 40 }, (_, i) => (i * 41 + 9) % 500 + 3);

/** Loads `dir` with the device's weight limits and with `limits`; compares router logs and logits. */
async function compareSplit(
  dir: string,
  o: { textures: boolean; limits: { binding?: number; texture?: number }; exact: boolean },
): Promise<void> {
  const whole = await loadModel(dir, { maxBatchTokens: 64, textures: o.textures });
  const split = await loadModel(dir, {
    maxBatchTokens: 64,
    textures: o.textures,
    weightLimits: o.limits,
  });
  try {
    assert.equal(whole.splitWeights(), 0, `${dir} fits the device's limits whole`);
    assert.ok(split.splitWeights() > 0, `${dir} is split under ${JSON.stringify(o.limits)}`);
    const ids = IDS.map((id) => id % whole.vocabSize);
    const route = { probs: true, lookahead: 1 };
    const [a] = await whole.route([ids, ids.subarray(0, 7)], route);
    const [b] = await split.route([ids, ids.subarray(0, 7)], route);
    assert.deepEqual(Array.from(b!.experts), Array.from(a!.experts), `${dir}: experts`);
    assert.deepEqual(Array.from(b!.spec!), Array.from(a!.spec!), `${dir}: lookahead picks`);
    const la = await whole.logits(ids), lb = await split.logits(ids);
    if (o.exact) {
      assert.deepEqual(Array.from(b!.weights), Array.from(a!.weights), `${dir}: gate weights`);
      assert.deepEqual(Array.from(b!.probs!), Array.from(a!.probs!), `${dir}: probs`);
      assert.deepEqual(Array.from(lb), Array.from(la), `${dir}: logits`);
      return;
    }
    for (let j = 0; j < a!.weights.length; j++) {
      assert.ok(Math.abs(a!.weights[j]! - b!.weights[j]!) < 1e-5, `${dir}: gate weight ${j}`);
    }
    let worst = 0;
    for (let j = 0; j < la.length; j++) {
      worst = Math.max(worst, Math.abs(la[j]! - lb[j]!) / Math.max(1, Math.abs(la[j]!)));
    }
    assert.ok(worst <= 1e-4, `${dir}: logits differ by up to ${worst} (relative)`);
  } finally {
    whole.destroy();
    split.destroy();
  }
}

Deno.test("checkpoints split into column pieces on storage buffers give bit-identical router logs and logits", async () => {
  // tiny-moe: experts [192, 384] of 288 KiB in 64 KiB pieces; the embedding and LM head in chunks
  await compareSplit(FIXTURES + "tiny-moe", {
    textures: false,
    limits: { binding: 65536 },
    exact: true,
  });
  // the gated shared expert, a dense layer, biases of q|k|v; MLA, two shared experts
  for (const name of ["tiny-qwen2-moe", "tiny-deepseek-v3"]) {
    await compareSplit(FIXTURES + name, {
      textures: false,
      limits: { binding: 1024 },
      exact: true,
    });
  }
});

Deno.test("checkpoints split along K and N on textures give the same router choices and logits within 1e-4", async () => {
  // tiny-moe under a 128-texel side: q|k|v, o_proj, routers and LM head split along K = 192;
  // experts ([192, 384] > 128) move to storage in 64 KiB column pieces
  await compareSplit(FIXTURES + "tiny-moe", {
    textures: true,
    limits: { texture: 128, binding: 65536 },
    exact: false,
  });
  // a qwen2_moe with H = 128 on textures: the shared expert's down projection (K = 256) and the
  // dense layer's (K = 192) split along K, as Qwen2-57B's (20480 rows) is on a real device
  const dir = await Deno.makeTempDir({ prefix: "moetrace-split-" });
  try {
    await writeRandomCheckpoint(dir, {
      architectures: ["Qwen2MoeForCausalLM"],
      model_type: "qwen2_moe",
      hidden_size: 128,
      intermediate_size: 192,
      moe_intermediate_size: 64,
      shared_expert_intermediate_size: 256,
      mlp_only_layers: [1],
      decoder_sparse_step: 1,
      num_experts: 6,
      num_experts_per_tok: 2,
      norm_topk_prob: false,
      num_hidden_layers: 3,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      qkv_bias: true,
      vocab_size: 700,
      max_position_embeddings: 256,
      rms_norm_eps: 1e-6,
      rope_parameters: { rope_type: "default", rope_theta: 10000.0 },
      use_sliding_window: false,
      tie_word_embeddings: false,
      hidden_act: "silu",
      bos_token_id: 1,
      eos_token_id: 2,
      dtype: "float32",
    }, 5);
    await compareSplit(dir, { textures: true, limits: { texture: 128 }, exact: false });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
