/**
 * config.json → ModelConfig for the router families: released checkpoints'
 * router fields give the Router that transformers runs, and a bad router or
 * attention field is one sentence naming it.
 */
import assert from "node:assert/strict";
import { DataError } from "../common/errors.ts";
import { parseConfig } from "./config.ts";
import { describeRouter, routerFor } from "./router.ts";

/** A small complete config.json of a family, with `fields` on top. */
function config(type: string, fields: Record<string, unknown> = {}): Record<string, unknown> {
  const base: Record<string, unknown> = {
    model_type: type,
    hidden_size: 64,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    vocab_size: 16,
    intermediate_size: 32,
    moe_intermediate_size: 32,
    num_experts_per_tok: 2,
  };
  if (type.startsWith("deepseek")) {
    Object.assign(base, {
      n_routed_experts: 16,
      first_k_dense_replace: 1,
      kv_lora_rank: 16,
      q_lora_rank: null,
      qk_nope_head_dim: 8,
      qk_rope_head_dim: 4,
      v_head_dim: 8,
      n_group: 1,
      topk_group: 1,
    });
  }
  if (type === "glm4_moe") Object.assign(base, { n_routed_experts: 16, n_group: 1, topk_group: 1 });
  if (type === "granitemoe" || type === "gpt_oss") base.num_local_experts = 8;
  if (type === "gpt_oss") base.quantization_config = { quant_method: "mxfp4" };
  return { ...base, ...fields };
}

const parse = (c: Record<string, unknown>) => parseConfig(c, "config.json");

Deno.test("released checkpoints' router fields give transformers' routers", () => {
  // DeepSeek-V3 / R1 (config.json as published)
  const v3 = routerFor(
    parse(config("deepseek_v3", {
      n_routed_experts: 256,
      num_experts_per_tok: 8,
      n_group: 8,
      topk_group: 4,
      routed_scaling_factor: 2.5,
      norm_topk_prob: true,
      scoring_func: "sigmoid",
      topk_method: "noaux_tc",
    })),
    "v3",
  );
  assert.equal(
    describeRouter(v3),
    "sigmoid + selection bias, top-8 of 256 in 4 of 8 groups (top2-sum), renormalised, × 2.5",
  );
  assert.equal(v3.probs, "sigmoid");
  // DeepSeek-V2: softmax, group max, × 16, norm_topk_prob ignored as transformers does
  const v2 = routerFor(
    parse(config("deepseek_v2", {
      n_routed_experts: 160,
      num_experts_per_tok: 6,
      topk_method: "group_limited_greedy",
      n_group: 8,
      topk_group: 3,
      routed_scaling_factor: 16.0,
      norm_topk_prob: true,
      scoring_func: "softmax",
    })),
    "v2",
  );
  assert.equal(describeRouter(v2), "softmax, top-6 of 160 in 3 of 8 groups (max), × 16");
  // gpt-oss-20b and Granite 3.0: softmax over the top-k logits
  assert.equal(
    describeRouter(
      routerFor(parse(config("gpt_oss", { num_local_experts: 32, num_experts_per_tok: 4 })), ""),
    ),
    "softmax-over-k + logit bias, top-4 of 32",
  );
  assert.equal(
    describeRouter(
      routerFor(parse(config("granitemoe", { num_local_experts: 40, num_experts_per_tok: 8 })), ""),
    ),
    "softmax-over-k, top-8 of 40",
  );
  // GLM-4.5: one group is no group
  const glm = parse(
    config("glm4_moe", {
      n_routed_experts: 160,
      num_experts_per_tok: 8,
      routed_scaling_factor: 2.5,
    }),
  );
  assert.equal(glm.routing.groups, null);
  assert.deepEqual(glm.isMoe, [false, true]);
  assert.equal(glm.sharedFfn, 0);
});

Deno.test("a bad router field is one sentence naming it", () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [
      config("deepseek_v3", { n_group: 3, topk_group: 2 }),
      /^Field n_group in config\.json is 3, expected a divisor of the number of experts \(16\)\.$/,
    ],
    [
      config("deepseek_v3", { n_group: 4, topk_group: 5 }),
      /^Field topk_group in config\.json is 5, expected at most n_group \(4\)\.$/,
    ],
    [
      config("deepseek_v3", { scoring_func: "softplus" }),
      /^Field scoring_func in config\.json is "softplus", expected "sigmoid" \(the deepseek_v3 router; transformers reads no other\)\.$/,
    ],
    [
      config("deepseek_v2", { scoring_func: "sigmoid" }),
      /^Field scoring_func in config\.json is "sigmoid", expected "softmax" /,
    ],
    [
      config("deepseek_v2", { topk_method: "noaux_tc" }),
      /^Field topk_method in config\.json is "noaux_tc", expected "greedy" or "group_limited_greedy"\.$/,
    ],
    [
      config("deepseek_v3", { n_group: 8, topk_group: 1, num_experts_per_tok: 3 }),
      /^Field num_experts_per_tok in config\.json is 3, expected at most topk_group × experts per group \(2\)\.$/,
    ],
    [
      config("glm4_moe", { n_group: 16, topk_group: 4 }),
      /^Field n_group in config\.json is 16, expected at most half the number of experts \(16\): a group scores its best two\.$/,
    ],
    [
      config("deepseek_v2", { moe_layer_freq: 2 }),
      /^Field moe_layer_freq in config\.json is 2, expected 1 /,
    ],
    [
      config("deepseek_v3", { num_key_value_heads: 2 }),
      /^Field num_key_value_heads in config\.json is 2, expected num_attention_heads \(4\) for multi-head latent attention\.$/,
    ],
    [
      config("gpt_oss", { quantization_config: null }),
      /^Field quantization_config in config\.json is null, expected \{"quant_method": "mxfp4"\}/,
    ],
    [
      config("gpt_oss", { hidden_size: 48 }),
      /^Field hidden_size in config\.json is 48, expected a multiple of 32 \(an MXFP4 block is 32 values of an expert input\)\.$/,
    ],
    [
      config("gpt_oss", { swiglu_limit: 10 }),
      /^Field swiglu_limit in config\.json is 10, expected 7\.0 /,
    ],
    [
      config("deepseek_v3", { rope_parameters: { rope_type: "longrope", rope_theta: 1e4 } }),
      /^Field rope_parameters\.rope_type in config\.json is "longrope", expected "default" or "yarn"\.$/,
    ],
    [
      config("deepseek_v3", {
        rope_parameters: { rope_type: "yarn", rope_theta: 1e4, factor: 40 },
      }),
      /^Field rope_parameters\.original_max_position_embeddings in config\.json is missing/,
    ],
    [
      config("glm4_moe", { partial_rotary_factor: 1.5 }),
      /^Field partial_rotary_factor in config\.json is 1\.5, expected a number in \(0, 1\]\.$/,
    ],
  ];
  for (const [c, message] of cases) {
    assert.throws(
      () => parse(c),
      (e: unknown) => e instanceof DataError && message.test(e.message),
    );
  }
});
