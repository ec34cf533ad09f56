/**
 * The texture kernels (matmul_tex, kv_texture + texture attention) against
 * the storage-buffer kernels that the fixture goldens pin (the fixtures'
 * sizes are not multiples of 64, so only these take the storage path): on a
 * random checkpoint of tiny-moe's shape, both paths give the same logits,
 * router logs and greedy tokens. Also batch packing: routing documents in one
 * call equals routing each alone.
 */
import assert from "node:assert/strict";
import { loadModel } from "./model.ts";
import { readHeader, toFloat32, toHalfBits, writeSafetensors } from "./safetensors.ts";
import { writeRandomCheckpoint, writeRandomMixtral } from "./random_checkpoint.ts";

Deno.env.set("XDG_RUNTIME_DIR", Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp");

Deno.test("texture and storage kernels agree on a tiny-moe-shaped checkpoint", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-model-test-" });
  try {
    // hidden 128, FFN 192, 4 heads of 32 (2 KV heads): every K a multiple of 64.
    await writeRandomMixtral(dir, {
      hidden: 128,
      ffn: 192,
      layers: 3,
      heads: 4,
      kvHeads: 2,
      vocab: 512,
      slidingWindow: 16,
    });
    const tex = await loadModel(dir, { maxBatchTokens: 256 });
    const buf = await loadModel(dir, { maxBatchTokens: 256, textures: false });
    try {
      const docs = [40, 7, 90].map((n, d) =>
        Uint32Array.from({ length: n }, (_, i) => (i * 37 + d * 11 + 5) % 509 + 3)
      );
      const before = tex.readbacks();
      const a = await tex.route(docs, { probs: true, lookahead: 2 });
      assert.equal(tex.readbacks() - before, 1, "one readback per route call");
      const b = await buf.route(docs, { probs: true, lookahead: 2 });
      const alone = await tex.route([docs[2]!], { probs: true, lookahead: 2 });
      for (let i = 0; i < docs.length; i++) {
        assert.deepEqual(Array.from(a[i]!.experts), Array.from(b[i]!.experts));
        assert.deepEqual(Array.from(a[i]!.spec!), Array.from(b[i]!.spec!));
        for (let j = 0; j < a[i]!.probs!.length; j++) {
          assert.ok(Math.abs(a[i]!.probs![j]! - b[i]!.probs![j]!) < 1e-5);
        }
      }
      assert.deepEqual(Array.from(alone[0]!.experts), Array.from(a[2]!.experts));
      const la = await tex.logits(docs[0]!), lb = await buf.logits(docs[0]!);
      for (let j = 0; j < la.length; j++) {
        assert.ok(Math.abs(la[j]! - lb[j]!) <= 1e-4 * Math.max(1, Math.abs(lb[j]!)), `logit ${j}`);
      }
      const opts = { maxNewTokens: 24, temperature: 0, seed: 0, probs: false, lookahead: 1 };
      const beforeGen = tex.readbacks();
      const ga = await tex.generate(docs[1]!, opts);
      assert.equal(
        tex.readbacks() - beforeGen,
        1,
        "generate reads back tokens and router log together once, not per token",
      );
      const gb = await buf.generate(docs[1]!, opts);
      assert.deepEqual(Array.from(ga.tokens), Array.from(gb.tokens));
      assert.deepEqual(Array.from(ga.log.experts), Array.from(gb.log.experts));
      const [forced] = await tex.route([ga.tokens], { probs: false, lookahead: 1 });
      assert.deepEqual(Array.from(forced!.experts), Array.from(ga.log.experts));
      // seeded sampling is reproducible and differs from greedy
      const s1 = await tex.generate(docs[1]!, { ...opts, temperature: 1, seed: 5 });
      const s2 = await tex.generate(docs[1]!, { ...opts, temperature: 1, seed: 5 });
      assert.deepEqual(Array.from(s1.tokens), Array.from(s2.tokens));
      assert.notDeepEqual(Array.from(s1.tokens), Array.from(ga.tokens));
      // stop ids end generation after the stop token
      const stop = ga.tokens[docs[1]!.length + 3]!;
      const stopped = await tex.generate(docs[1]!, { ...opts, stopIds: [stop] });
      const firstStop = Array.from(ga.tokens).indexOf(stop, docs[1]!.length);
      assert.equal(stopped.tokens.length, firstStop + 1);
      assert.equal(stopped.log.experts.length, (firstStop + 1) * 3 * 2);
    } finally {
      tex.destroy();
      buf.destroy();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Small configs of the other families with every K a multiple of 64, so they take the texture path. */
const FAMILY_CONFIGS: Record<string, Record<string, unknown>> = {
  qwen2_moe: {
    model_type: "qwen2_moe",
    hidden_size: 128,
    num_hidden_layers: 3,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    num_experts: 8,
    num_experts_per_tok: 2,
    moe_intermediate_size: 128,
    shared_expert_intermediate_size: 192,
    intermediate_size: 192,
    mlp_only_layers: [1],
    norm_topk_prob: false,
    qkv_bias: true,
    vocab_size: 320,
  },
  qwen3_moe: {
    model_type: "qwen3_moe",
    hidden_size: 128,
    head_dim: 32,
    num_hidden_layers: 2,
    num_attention_heads: 6,
    num_key_value_heads: 2,
    num_local_experts: 8,
    num_experts_per_tok: 4,
    moe_intermediate_size: 64,
    intermediate_size: 256,
    norm_topk_prob: true,
    vocab_size: 320,
  },
  olmoe: {
    model_type: "olmoe",
    hidden_size: 128,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 4,
    num_experts: 8,
    num_experts_per_tok: 3,
    intermediate_size: 64,
    clip_qkv: 1.0,
    vocab_size: 320,
  },
  granitemoe: {
    model_type: "granitemoe",
    hidden_size: 128,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    num_local_experts: 8,
    num_experts_per_tok: 3,
    intermediate_size: 64,
    embedding_multiplier: 3.0,
    attention_multiplier: 0.05,
    residual_multiplier: 0.5,
    logits_scaling: 4.0,
    attention_bias: true,
    vocab_size: 320,
  },
  glm4_moe: {
    model_type: "glm4_moe",
    hidden_size: 128,
    head_dim: 32, // partial rotary: the first 16 of each head rotate
    num_hidden_layers: 3,
    first_k_dense_replace: 1,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    n_routed_experts: 16,
    n_shared_experts: 1,
    num_experts_per_tok: 4,
    n_group: 2,
    topk_group: 1,
    routed_scaling_factor: 2.5,
    norm_topk_prob: true,
    use_qk_norm: true,
    attention_bias: true,
    partial_rotary_factor: 0.5,
    moe_intermediate_size: 64,
    intermediate_size: 256,
    vocab_size: 320,
  },
  // MLA with every low-rank width on the texture path, rotate_half RoPE, YaRN
  deepseek_v3: {
    model_type: "deepseek_v3",
    hidden_size: 128,
    num_hidden_layers: 3,
    first_k_dense_replace: 1,
    num_attention_heads: 4,
    q_lora_rank: 64,
    kv_lora_rank: 64,
    qk_nope_head_dim: 32,
    qk_rope_head_dim: 16,
    v_head_dim: 32,
    rope_interleave: false,
    rope_parameters: {
      rope_type: "yarn",
      rope_theta: 10000.0,
      factor: 4.0,
      original_max_position_embeddings: 64,
      mscale: 1.0,
      mscale_all_dim: 0.8,
    },
    n_routed_experts: 16,
    n_shared_experts: 2,
    num_experts_per_tok: 4,
    n_group: 4,
    topk_group: 2,
    routed_scaling_factor: 2.5,
    norm_topk_prob: true,
    moe_intermediate_size: 64,
    intermediate_size: 256,
    vocab_size: 320,
  },
  // sinks in both attention kernels, sliding and full layers, MXFP4 experts reading xn from storage
  gpt_oss: {
    model_type: "gpt_oss",
    hidden_size: 128,
    head_dim: 32,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    num_local_experts: 8,
    num_experts_per_tok: 2,
    intermediate_size: 64,
    sliding_window: 8,
    layer_types: ["sliding_attention", "full_attention"],
    quantization_config: { quant_method: "mxfp4" },
    rope_parameters: {
      rope_type: "yarn",
      rope_theta: 150000.0,
      factor: 4.0,
      beta_fast: 32.0,
      beta_slow: 1.0,
      truncate: false,
      original_max_position_embeddings: 64,
    },
    vocab_size: 320,
  },
};

for (const [family, config] of Object.entries(FAMILY_CONFIGS)) {
  Deno.test(`texture and storage kernels agree on a random ${family} checkpoint`, async () => {
    const dir = await Deno.makeTempDir({ prefix: `moetrace-${family}-` });
    try {
      await writeRandomCheckpoint(dir, {
        hidden_act: "silu",
        rms_norm_eps: 1e-6,
        rope_parameters: { rope_type: "default", rope_theta: 10000.0 },
        max_position_embeddings: 256,
        tie_word_embeddings: false,
        ...config,
      }, 3);
      const tex = await loadModel(dir, { maxBatchTokens: 128 });
      const buf = await loadModel(dir, { maxBatchTokens: 128, textures: false });
      try {
        const docs = [30, 45].map((n, d) =>
          Uint32Array.from({ length: n }, (_, i) => (i * 13 + d * 5) % 317 + 3)
        );
        const a = await tex.route(docs, { probs: true, lookahead: 1 });
        const b = await buf.route(docs, { probs: true, lookahead: 1 });
        for (let i = 0; i < docs.length; i++) {
          assert.deepEqual(Array.from(a[i]!.experts), Array.from(b[i]!.experts));
          for (let j = 0; j < a[i]!.weights.length; j++) {
            assert.ok(Math.abs(a[i]!.weights[j]! - b[i]!.weights[j]!) < 1e-5);
          }
        }
        const la = await tex.logits(docs[1]!), lb = await buf.logits(docs[1]!);
        for (let j = 0; j < la.length; j++) {
          assert.ok(
            Math.abs(la[j]! - lb[j]!) <= 1e-4 * Math.max(1, Math.abs(lb[j]!)),
            `logit ${j}`,
          );
        }
        const opts = { maxNewTokens: 16, temperature: 0, seed: 0, probs: false, lookahead: 0 };
        const ga = await tex.generate(docs[0]!, opts), gb = await buf.generate(docs[0]!, opts);
        assert.deepEqual(Array.from(ga.tokens), Array.from(gb.tokens));
      } finally {
        tex.destroy();
        buf.destroy();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("f16 and bf16 checkpoints stay 16-bit in textures and compute what their widened f32 copies do", async () => {
  const base = await Deno.makeTempDir({ prefix: "moetrace-half-" });
  try {
    await writeRandomMixtral(`${base}/f32`, {
      hidden: 128,
      ffn: 128,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      vocab: 256,
    });
    const header = await readHeader(`${base}/f32/model.safetensors`);
    const raw = await Deno.readFile(`${base}/f32/model.safetensors`);
    for (const dtype of ["F16", "BF16"]) {
      const half: Record<string, { shape: number[]; dtype: string; bytes: Uint8Array }> = {};
      const wide: Record<string, { shape: number[]; data: Float32Array }> = {};
      for (const info of header.values()) {
        const f = new Float32Array(raw.slice(info.begin, info.end).buffer);
        const bits = Uint16Array.from(
          f,
          (x) =>
            dtype === "F16"
              ? toHalfBits(x)
              : new Uint32Array(new Float32Array([x]).buffer)[0]! >>> 16,
        );
        const bytes = new Uint8Array(bits.buffer);
        half[info.name] = { shape: [...info.shape], dtype, bytes };
        wide[info.name] = { shape: [...info.shape], data: toFloat32(bytes, dtype, info.name) };
      }
      for (const [name, tensors] of [["half", half], ["wide", wide]] as const) {
        await Deno.mkdir(`${base}/${dtype}-${name}`);
        await Deno.copyFile(`${base}/f32/config.json`, `${base}/${dtype}-${name}/config.json`);
        await writeSafetensors(`${base}/${dtype}-${name}/model.safetensors`, tensors);
      }
      const a = await loadModel(`${base}/${dtype}-half`, { maxBatchTokens: 64 });
      const b = await loadModel(`${base}/${dtype}-wide`, { maxBatchTokens: 64 });
      try {
        const ids = Uint32Array.from({ length: 40 }, (_, i) => (i * 29 + 3) % 250 + 3);
        const la = await a.logits(ids), lb = await b.logits(ids);
        for (let j = 0; j < la.length; j++) {
          assert.ok(Math.abs(la[j]! - lb[j]!) <= 1e-5, `${dtype} logit ${j}`);
        }
        assert.equal(a.facts.dtype, dtype === "F16" ? "float16" : "bfloat16");
      } finally {
        a.destroy();
        b.destroy();
      }
    }
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});
