/**
 * The one configurable router against transformers' own router modules
 * (fixtures/routers, made by fixtures/train/router_goldens.py in float64) at
 * the shapes of released models: DeepSeek-V2 greedy and group-limited (160
 * experts, group max), DeepSeek-V3 (256 experts, sigmoid + correction bias,
 * top-2-sum groups, renormalised, × 2.5), one group, top-16, GLM-4.5-Air,
 * Granite and gpt-oss (softmax over the top-k; gpt-oss with a logit bias, here
 * already in the logits), Qwen3. Each case's Router comes from config.json
 * fields through parseConfig and routerFor; the kernel runs on HF's logits.
 * Ids equal outside near-ties, weights and probs within 1e-5.
 */
import assert from "node:assert/strict";
import { parseConfig } from "./config.ts";
import { createGpuContext, readBack, Recorder } from "./gpu.ts";
import { readAll } from "./safetensors.ts";
import { describeRouter, recordRouting, routerFor } from "./router.ts";
import type { RunState } from "./run_state.ts";

Deno.env.set("XDG_RUNTIME_DIR", Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp");

const DIR = new URL("../fixtures/routers/", import.meta.url).pathname;

/** A complete config.json around a case's router fields. */
export function routerConfig(fields: Record<string, unknown>): Record<string, unknown> {
  const base: Record<string, unknown> = {
    hidden_size: 64,
    num_hidden_layers: 1,
    num_attention_heads: 4,
    vocab_size: 16,
    intermediate_size: 32,
    moe_intermediate_size: 32,
  };
  const type = fields.model_type;
  if (type === "deepseek_v2" || type === "deepseek_v3") {
    Object.assign(base, {
      first_k_dense_replace: 0,
      kv_lora_rank: 16,
      q_lora_rank: null,
      qk_nope_head_dim: 8,
      qk_rope_head_dim: 4,
      v_head_dim: 8,
    });
  }
  if (type === "glm4_moe") base.first_k_dense_replace = 0;
  if (type === "gpt_oss") base.quantization_config = { quant_method: "mxfp4" };
  const config = { ...base, ...fields };
  delete config.router;
  delete config.near_ties;
  return config;
}

Deno.test("the router matches transformers' router modules of every family", async () => {
  const golden = await readAll(`${DIR}golden.safetensors`);
  const description = JSON.parse(await Deno.readTextFile(`${DIR}golden.json`));
  const T: number = description.tokens;
  const f32 = (name: string) => new Float32Array(golden.get(name)!.bytes.slice().buffer);
  const i32 = (name: string) => new Int32Array(golden.get(name)!.bytes.slice().buffer);
  const ctx = await createGpuContext();
  try {
    for (const [name, fields] of Object.entries(description.cases as Record<string, unknown>)) {
      const t0 = performance.now();
      const c = parseConfig(routerConfig(fields as Record<string, unknown>), `${name} config`);
      const router = routerFor(c, name);
      const E = router.experts, k = router.topK;
      const pool = ctx.pool;
      const info = new Uint32Array(T * 4);
      for (let t = 0; t < T; t++) info.set([t, t, t, t], t * 4);
      const state = {
        routerLogits: pool.upload(`${name} logits`, f32(`${name}.logits`)),
        info: pool.upload(`${name} info`, info),
        choice: pool.storage("choice", T * k * 4),
        choiceWeight: pool.storage("choice weight", T * k * 4),
        logExperts: pool.storage("log experts", T * k * 4),
        logWeights: pool.storage("log weights", T * k * 4),
        logProbs: pool.storage("log probs", T * E * 4),
        logSpec: pool.storage("log spec", T * k * 4),
      } as unknown as RunState;
      const bias = golden.has(`${name}.selection_bias`)
        ? { selectionBias: pool.upload("bias", f32(`${name}.selection_bias`)) }
        : {};
      assert.equal(router.selection.bias, bias.selectionBias !== undefined, name);
      const call = {
        router,
        state,
        xn: { buffer: state.routerLogits },
        weights: { weight: { k: 0, n: 0, format: "f32" as const }, ...bias },
        rows: T,
        decode: false,
        moeIndex: 0,
        numMoe: 1,
      };
      const rec = new Recorder(ctx);
      recordRouting(rec, call, { probs: true });
      recordRouting(rec, call, { lookahead: 1, distance: 1 });
      rec.finish().submit();
      const [ids, weights, probs, spec] = await readBack(ctx, [
        { buffer: state.logExperts, bytes: T * k * 4 },
        { buffer: state.logWeights, bytes: T * k * 4 },
        { buffer: state.logProbs!, bytes: T * E * 4 },
        { buffer: state.logSpec!, bytes: T * k * 4 },
      ]);
      rec.destroy();
      const got = {
        ids: new Uint32Array(ids!),
        weights: new Float32Array(weights!),
        probs: new Float32Array(probs!),
        spec: new Uint32Array(spec!),
      };
      const want = {
        ids: i32(`${name}.topk_ids`),
        weights: f32(`${name}.topk_weights`),
        probs: f32(`${name}.probs`),
        tie: i32(`${name}.near_tie`),
      };
      assert.deepEqual(Array.from(got.spec), Array.from(got.ids), `${name}: lookahead picks`);
      let compared = 0;
      for (let t = 0; t < T; t++) {
        for (let e = 0; e < E; e++) {
          const d = Math.abs(got.probs[t * E + e]! - want.probs[t * E + e]!);
          assert.ok(d <= 1e-6, `${name} token ${t} prob ${e}: ${got.probs[t * E + e]}`);
        }
        if (want.tie[t]) continue;
        compared++;
        for (let j = 0; j < k; j++) {
          const at = t * k + j;
          assert.equal(got.ids[at], want.ids[at], `${name} token ${t} choice ${j}`);
          const d = Math.abs(got.weights[at]! - want.weights[at]!);
          assert.ok(d <= 1e-5 * Math.max(1, router.scale), `${name} token ${t} weight ${j}: ${d}`);
        }
      }
      assert.ok(compared >= T - 5, `${name}: ${T - compared} near ties`);
      pool.releaseAll();
      console.log(
        `${name}: ${describeRouter(router)}; ${compared}/${T} tokens compared (${
          ((performance.now() - t0) / 1000).toFixed(1)
        } s)`,
      );
    }
  } finally {
    ctx.pool.releaseAll();
    ctx.device.destroy();
  }
});
