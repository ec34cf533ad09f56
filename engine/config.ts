/**
 * One readonly config for every supported family, read from a Hugging Face
 * `config.json`. Each field says which config.json key it comes from and its
 * default when the key is absent (the default of the transformers config
 * class), read as transformers' modeling code reads it.
 */
import { DataError } from "../common/errors.ts";
import { parseRope, type Rope, yarnMscale } from "./rope.ts";

export type Family =
  | "mixtral"
  | "olmoe"
  | "qwen2_moe"
  | "qwen3_moe"
  | "granitemoe"
  | "deepseek_v2"
  | "deepseek_v3"
  | "glm4_moe"
  | "gpt_oss";
/** The families the engine runs. */
export const FAMILIES: readonly Family[] = [
  "mixtral",
  "olmoe",
  "qwen2_moe",
  "qwen3_moe",
  "granitemoe",
  "deepseek_v2",
  "deepseek_v3",
  "glm4_moe",
  "gpt_oss",
];

/** Router variant fields (router.ts turns them into a Router). */
export interface RoutingConfig {
  /** softmax over all experts; sigmoid (deepseek_v3, glm4_moe); softmax over the k chosen logits (granitemoe, gpt_oss). */
  readonly scoring: "softmax" | "sigmoid" | "softmax-over-k";
  /** gpt_oss `mlp.router.bias`, added to the logits. */
  readonly logitBias: boolean;
  /** `e_score_correction_bias` (deepseek_v3, glm4_moe), added to the scores for choosing only. */
  readonly selectionBias: boolean;
  /**
   * `n_group` groups, `topk_group` of them compete: deepseek_v2 with
   * `topk_method: group_limited_greedy` (group score: max), deepseek_v3 and
   * glm4_moe (sum of the best two); null otherwise or when n_group is 1.
   */
  readonly groups: { count: number; top: number; score: "max" | "top2-sum" } | null;
  /** `routed_scaling_factor` (deepseek, glm; default 1). */
  readonly scale: number;
}

/** Multi-head latent attention (deepseek_v2, deepseek_v3). */
export interface MlaConfig {
  /** `q_lora_rank`: q = q_b(norm(q_a(x))); null: q = q_proj(x). */
  readonly qLoraRank: number | null;
  /** `kv_lora_rank`: the compressed K/V latent. */
  readonly kvLoraRank: number;
  /** `qk_nope_head_dim` and `qk_rope_head_dim`: q/k head = [nope | rope]; the rope part of k is shared by all heads. */
  readonly nopeDim: number;
  readonly ropeDim: number;
  /** `attention_bias`: biases on q_a_proj (or q_proj: never), kv_a_proj_with_mqa and o_proj. */
  readonly bias: boolean;
  /** Epsilon of q_a_layernorm and kv_a_layernorm: transformers builds them with its RMSNorm default 1e-6, not rms_norm_eps. */
  readonly normEps: number;
}

export interface ModelConfig {
  /** `model_type`. */
  readonly family: Family;
  /** `vocab_size` (embedding and lm_head rows; may exceed the tokenizer's size). */
  readonly vocabSize: number;
  /** `hidden_size`, H. */
  readonly hiddenSize: number;
  /** `num_hidden_layers`. */
  readonly numLayers: number;
  /** `num_attention_heads`, nq. */
  readonly numHeads: number;
  /** `num_key_value_heads`, nkv (default nq; MLA: nq, its K/V are per head once expanded). */
  readonly numKvHeads: number;
  /** q/k head dimension d: `head_dim` (null or absent: H / nq); MLA: qk_nope + qk_rope. */
  readonly headDim: number;
  /** v head dimension: d, or MLA's `v_head_dim`. */
  readonly vHeadDim: number;
  /** `num_local_experts` / `num_experts` / `n_routed_experts`, E. */
  readonly numExperts: number;
  /** `num_experts_per_tok`, k. */
  readonly topK: number;
  /** Routed expert FFN width: `intermediate_size` (mixtral, olmoe, granitemoe, gpt_oss), `moe_intermediate_size` (qwen, deepseek, glm). */
  readonly expertFfn: number;
  /** Dense-layer FFN width (`intermediate_size` where some layer is dense), else 0. */
  readonly denseFfn: number;
  /** Shared expert FFN width: qwen2_moe `shared_expert_intermediate_size`; deepseek/glm `moe_intermediate_size × n_shared_experts`; 0 = none. */
  readonly sharedFfn: number;
  /** Shared experts per MoE layer (fused into one FFN of width sharedFfn): `n_shared_experts`, 1 for qwen2_moe. */
  readonly numSharedExperts: number;
  /** The shared expert's output is scaled by sigmoid(xn · shared_expert_gate) (qwen2_moe). */
  readonly sharedGate: boolean;
  /** Per layer: true where the layer has a sparse MoE block (qwen: `mlp_only_layers`, `decoder_sparse_step`; deepseek/glm: l ≥ `first_k_dense_replace`). */
  readonly isMoe: readonly boolean[];
  /** Divide the top-k scores by their sum: always for mixtral, never for deepseek_v2 (transformers ignores it), `norm_topk_prob` otherwise (default false). */
  readonly normTopK: boolean;
  readonly routing: RoutingConfig;
  /** `rms_norm_eps` (default 1e-5 mixtral/olmoe/glm/gpt_oss, 1e-6 qwen/deepseek/granite). */
  readonly rmsEps: number;
  /** RoPE: theta, rotated dims, pairing, YaRN (rope.ts). */
  readonly rope: Rope;
  /** Per layer attention window W (key j visible from query i when i − W < j ≤ i), null = full causal. */
  readonly window: readonly (number | null)[];
  /** Bias on q/k/v projections (qwen2_moe always; `attention_bias` for olmoe, glm4_moe, granitemoe, gpt_oss). */
  readonly qkvBias: boolean;
  /** Bias on o_proj (`attention_bias` for granitemoe, gpt_oss, deepseek). */
  readonly oBias: boolean;
  /** q/k RMSNorm: olmoe over the whole projection, qwen3_moe and glm4_moe (`use_qk_norm`) per head, others none. */
  readonly qkNorm: "none" | "whole" | "per_head";
  /** `clip_qkv` (olmoe; default null = no clamp). */
  readonly clipQkv: number | null;
  /** Softmax scale of attention scores: 1/√d; granitemoe `attention_multiplier`; MLA 1/√d · mscale² under YaRN. */
  readonly attentionScale: number;
  /** gpt_oss: a learned per-head sink logit joins every softmax. */
  readonly sinks: boolean;
  /** Multi-head latent attention (deepseek), or null. */
  readonly mla: MlaConfig | null;
  /** granitemoe: `embedding_multiplier`, `residual_multiplier` (attention and MoE outputs), 1/`logits_scaling`; 1 elsewhere. */
  readonly multipliers: { embedding: number; residual: number; logits: number };
  /** Expert activation: SiLU-gated, or gpt_oss's clamped SwiGLU (gate ≤ limit, |up| ≤ limit, (up + 1) · gate · σ(1.702 · gate)). */
  readonly expertAct: "silu" | "clamped-swiglu";
  /** gpt_oss `swiglu_limit` (transformers hard-codes 7.0; anything else is refused). */
  readonly swigluLimit: number;
  /** Biases on the expert projections (gpt_oss). */
  readonly expertBias: boolean;
  /**
   * How routed experts are stored: one 2-D tensor per expert matrix (the Hub
   * layout of mixtral, olmoe, qwen, deepseek, glm), granitemoe's fused
   * `input_linear` [E, 2F, H] / `output_linear` [E, H, F], or gpt_oss's MXFP4
   * `*_blocks` + `*_scales` (`quantization_config.quant_method: mxfp4`).
   */
  readonly expertFormat: "per-expert" | "fused" | "mxfp4";
  /** `moetrace_weight_decomposed.rank` (mixtral only), null = ordinary experts. */
  readonly decomposedRank: number | null;
  /** `tie_word_embeddings` (default false): lm_head reuses the embedding. */
  readonly tieEmbeddings: boolean;
  /** `max_position_embeddings` (informational; RoPE tables grow past it as HF's do). */
  readonly maxPositions: number;
  /** `bos_token_id` (default 1) and `eos_token_id` (default 2; a list allowed). */
  readonly bosId: number | null;
  readonly eosIds: readonly number[];
}

/** Largest accepted value per config.json size field (others: 2^24). */
const LIMITS: Record<string, number> = {
  num_hidden_layers: 1024,
  hidden_size: 65536,
  num_attention_heads: 1024,
  num_key_value_heads: 1024,
  max_position_embeddings: 1 << 24,
  vocab_size: 1 << 22,
};

/** Families named when refusing a model_type: the common MoE families the engine does not run. */
const NOT_SUPPORTED = "llama4, phimoe, jamba, dbrx, jetmoe, minimax, qwen3_next";

/** A config value as written in an error: Infinity and NaN by name (JSON.stringify says null). */
export function shown(value: unknown): string {
  return typeof value === "number" && !Number.isFinite(value)
    ? String(value)
    : JSON.stringify(value) ?? String(value);
}

/** Readers of config.json fields that refuse a bad value with one sentence naming the field. */
function fieldReader(c: Record<string, unknown>, file: string) {
  const bad = (key: string, expected: string): never => {
    throw new DataError(`Field ${key} in ${file} is ${shown(c[key])}, expected ${expected}.`);
  };
  // Sizes are bounded before anything is allocated from them: a config that
  // claims 10^300 layers is refused here, not by an out-of-memory crash.
  const int = (key: string, fallback?: number, max = LIMITS[key] ?? 1 << 24): number => {
    const v = c[key];
    if ((v === undefined || v === null) && fallback !== undefined) return fallback;
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0 || v > max) {
      return bad(key, `a positive integer of at most ${max}`);
    }
    return v;
  };
  const num = (key: string, fallback: number): number => {
    const v = c[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v)) {
      return bad(key, "a finite positive number");
    }
    return v;
  };
  const bool = (key: string, fallback: boolean): boolean => {
    const v = c[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== "boolean") return bad(key, "true or false");
    return v;
  };
  return { bad, int, num, bool };
}

export function parseConfig(raw: unknown, file: string): ModelConfig {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new DataError(`${file} is not a JSON object.`);
  }
  const c = raw as Record<string, unknown>;
  const family = c.model_type;
  if (typeof family !== "string" || !FAMILIES.includes(family as Family)) {
    throw new DataError(
      `Field model_type in ${file} is ${JSON.stringify(family)}, expected one of ${
        FAMILIES.join(", ")
      } (not supported: ${NOT_SUPPORTED}).`,
    );
  }
  const f = family as Family;
  const { bad, int, num, bool } = fieldReader(c, file);
  const deepseek = f === "deepseek_v2" || f === "deepseek_v3";
  const qwen = f === "qwen2_moe" || f === "qwen3_moe";
  const act = c.hidden_act ?? "silu";
  if (act !== "silu") bad("hidden_act", '"silu"');
  const hiddenSize = int("hidden_size");
  const numLayers = int("num_hidden_layers");
  const numHeads = int("num_attention_heads");
  const numKvHeads = int("num_key_value_heads", numHeads);
  if (numHeads % numKvHeads !== 0) {
    bad("num_key_value_heads", `a divisor of num_attention_heads (${numHeads})`);
  }
  const mla = deepseek ? parseMla(c, file) : null;
  if (mla && numKvHeads !== numHeads) {
    bad("num_key_value_heads", `num_attention_heads (${numHeads}) for multi-head latent attention`);
  }
  let headDim: number;
  if (mla) headDim = mla.nopeDim + mla.ropeDim;
  else if (c.head_dim === undefined || c.head_dim === null) {
    if (hiddenSize % numHeads !== 0) {
      throw new DataError(
        `Field hidden_size in ${file} is ${hiddenSize}, expected a multiple of num_attention_heads (${numHeads}) since head_dim is not set.`,
      );
    }
    headDim = hiddenSize / numHeads;
  } else headDim = int("head_dim");
  if (headDim % 2 !== 0 || headDim > 256) {
    throw new DataError(
      `Head dimension in ${file} is ${headDim}, expected an even number of at most 256.`,
    );
  }
  const vHeadDim = mla ? int("v_head_dim") : headDim;
  if (vHeadDim > 256) bad("v_head_dim", "at most 256");

  // experts
  const expertsKey =
    (["num_local_experts", "num_experts", "n_routed_experts"] as const).find((k) =>
      c[k] !== undefined && c[k] !== null
    ) ?? (deepseek || f === "glm4_moe" ? "n_routed_experts" : "num_local_experts");
  const numExperts = int(expertsKey);
  if (numExperts > 256) bad(expertsKey, "at most 256");
  const topK = int("num_experts_per_tok");
  if (topK > numExperts) {
    bad("num_experts_per_tok", `at most the number of experts (${numExperts})`);
  }
  const moeWidth = qwen || deepseek || f === "glm4_moe";
  const expertFfn = moeWidth ? int("moe_intermediate_size") : int("intermediate_size");
  const isMoe = moeLayerMask(c, file, f, numLayers);
  const denseFfn = isMoe.every((m) => m) ? 0 : int("intermediate_size");
  let numSharedExperts = 0, sharedFfn = 0;
  if (f === "qwen2_moe") {
    numSharedExperts = 1;
    sharedFfn = int("shared_expert_intermediate_size");
  } else if (deepseek || f === "glm4_moe") {
    const n = c.n_shared_experts;
    if (n !== undefined && n !== null && n !== 0) numSharedExperts = int("n_shared_experts", 0, 64);
    sharedFfn = numSharedExperts * expertFfn;
  }
  if (deepseek && c.mlp_bias === true) {
    bad("mlp_bias", "false (no released DeepSeek checkpoint has MLP biases)");
  }
  const routing = parseRouting(c, file, f, { numExperts, topK });

  // attention
  const maxPositions = int("max_position_embeddings", 4096);
  let ropeDim = mla ? mla.ropeDim : headDim;
  if (f === "glm4_moe") {
    const params = (c.rope_parameters ?? {}) as Record<string, unknown>;
    const factor = params.partial_rotary_factor ?? c.partial_rotary_factor ?? 0.5;
    if (typeof factor !== "number" || !(factor > 0 && factor <= 1)) {
      bad("partial_rotary_factor", "a number in (0, 1]");
    }
    ropeDim = Math.floor(headDim * (factor as number));
    if (ropeDim % 2 !== 0) {
      bad("partial_rotary_factor", `a fraction of head_dim ${headDim} that is even`);
    }
  }
  const rope = parseRope(c, file, {
    dim: ropeDim,
    theta: f === "mixtral" ? 1e6 : f === "gpt_oss" ? 150000 : 1e4,
    // DeepSeek-V2 always, V3 unless rope_interleave is false: pairs (2i, 2i + 1)
    interleaved: f === "deepseek_v2" || (f === "deepseek_v3" && c.rope_interleave !== false),
    maxPositions,
  });
  let attentionScale = 1 / Math.sqrt(headDim);
  if (f === "granitemoe") attentionScale = num("attention_multiplier", 1);
  if (mla && rope.yarn && rope.yarn.mscaleAllDim) {
    const m = yarnMscale(rope.yarn.factor, rope.yarn.mscaleAllDim);
    attentionScale = attentionScale * m * m;
  }
  const attentionBias = bool("attention_bias", f === "gpt_oss");

  let decomposedRank: number | null = null;
  if (c.moetrace_weight_decomposed !== undefined && c.moetrace_weight_decomposed !== null) {
    const wd = c.moetrace_weight_decomposed as Record<string, unknown>;
    if (
      f !== "mixtral" || typeof wd.rank !== "number" || !Number.isInteger(wd.rank) || wd.rank <= 0
    ) {
      bad("moetrace_weight_decomposed", '{"rank": positive integer} on a mixtral model');
    }
    decomposedRank = wd.rank as number;
  }
  const expertFormat = f === "granitemoe" ? "fused" : f === "gpt_oss" ? "mxfp4" : "per-expert";
  if (f === "gpt_oss") checkMxfp4(c, file, { hiddenSize, expertFfn });
  const clip = c.clip_qkv;
  const eos = c.eos_token_id;
  const granite = f === "granitemoe";
  return {
    family: f,
    vocabSize: int("vocab_size"),
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    vHeadDim,
    numExperts,
    topK,
    expertFfn,
    denseFfn,
    sharedFfn,
    numSharedExperts,
    sharedGate: f === "qwen2_moe",
    isMoe,
    normTopK: f === "mixtral" ? true : f === "deepseek_v2" ? false : c.norm_topk_prob === true,
    routing,
    rmsEps: num("rms_norm_eps", qwen || deepseek || granite ? 1e-6 : 1e-5),
    rope,
    window: attentionWindows(c, f, numLayers, file),
    qkvBias: f === "qwen2_moe" ? c.qkv_bias !== false : !mla && attentionBias,
    oBias: (granite || f === "gpt_oss" || deepseek) && attentionBias,
    qkNorm: f === "olmoe"
      ? "whole"
      : f === "qwen3_moe" || (f === "glm4_moe" && c.use_qk_norm === true)
      ? "per_head"
      : "none",
    clipQkv: typeof clip === "number" && clip > 0 ? clip : null,
    attentionScale,
    sinks: f === "gpt_oss",
    mla,
    multipliers: granite
      ? {
        embedding: num("embedding_multiplier", 1),
        residual: num("residual_multiplier", 1),
        logits: 1 / num("logits_scaling", 1),
      }
      : { embedding: 1, residual: 1, logits: 1 },
    expertAct: f === "gpt_oss" ? "clamped-swiglu" : "silu",
    swigluLimit: f === "gpt_oss" ? swigluLimit(c, file) : 0,
    expertBias: f === "gpt_oss",
    expertFormat,
    decomposedRank,
    tieEmbeddings: c.tie_word_embeddings === true,
    maxPositions,
    bosId: typeof c.bos_token_id === "number" ? c.bos_token_id : null,
    eosIds: Array.isArray(eos) ? eos as number[] : typeof eos === "number" ? [eos] : [],
  };
}

/** MLA dimensions (deepseek). */
function parseMla(c: Record<string, unknown>, file: string): MlaConfig {
  const { int, bool } = fieldReader(c, file);
  const q = c.q_lora_rank;
  const ropeDim = int("qk_rope_head_dim", undefined, 256);
  if (ropeDim % 2 !== 0) {
    throw new DataError(
      `Field qk_rope_head_dim in ${file} is ${ropeDim}, expected an even number.`,
    );
  }
  return {
    qLoraRank: q === null || q === undefined ? null : int("q_lora_rank"),
    kvLoraRank: int("kv_lora_rank"),
    nopeDim: int("qk_nope_head_dim", undefined, 256),
    ropeDim,
    bias: bool("attention_bias", false),
    normEps: 1e-6,
  };
}

/** Which layers have a sparse MoE block. */
function moeLayerMask(
  c: Record<string, unknown>,
  file: string,
  f: Family,
  numLayers: number,
): boolean[] {
  const { int } = fieldReader(c, file);
  if (f === "qwen2_moe" || f === "qwen3_moe") {
    const mlpOnly = new Set<number>();
    if (Array.isArray(c.mlp_only_layers)) {
      for (const l of c.mlp_only_layers) mlpOnly.add(l as number);
    }
    const step = int("decoder_sparse_step", 1);
    return Array.from({ length: numLayers }, (_, l) => !mlpOnly.has(l) && (l + 1) % step === 0);
  }
  if (f === "deepseek_v2" || f === "deepseek_v3" || f === "glm4_moe") {
    // transformers builds an MoE block for every layer from first_k_dense_replace on
    const first = c.first_k_dense_replace ?? (f === "deepseek_v2" ? 0 : f === "glm4_moe" ? 1 : 3);
    if (typeof first !== "number" || !Number.isInteger(first) || first < 0 || first > numLayers) {
      throw new DataError(
        `Field first_k_dense_replace in ${file} is ${
          JSON.stringify(first)
        }, expected an integer from 0 to num_hidden_layers (${numLayers}).`,
      );
    }
    const freq = c.moe_layer_freq;
    if (freq !== undefined && freq !== null && freq !== 1) {
      throw new DataError(
        `Field moe_layer_freq in ${file} is ${
          JSON.stringify(freq)
        }, expected 1 (transformers puts an MoE block in every layer after first_k_dense_replace).`,
      );
    }
    return Array.from({ length: numLayers }, (_, l) => l >= first);
  }
  return Array(numLayers).fill(true);
}

/** The router variant of a family, with the group and scoring fields checked. */
function parseRouting(
  c: Record<string, unknown>,
  file: string,
  f: Family,
  o: { numExperts: number; topK: number },
): RoutingConfig {
  const { bad, int, num } = fieldReader(c, file);
  const scoring: RoutingConfig["scoring"] = f === "deepseek_v3" || f === "glm4_moe"
    ? "sigmoid"
    : f === "granitemoe" || f === "gpt_oss"
    ? "softmax-over-k"
    : "softmax";
  // scoring_func (DeepSeek's own config key): transformers fixes the scoring per family
  const func = c.scoring_func;
  if (func !== undefined && func !== null) {
    const expected = scoring === "sigmoid" ? "sigmoid" : "softmax";
    if (func !== expected || !(f.startsWith("deepseek") || f === "glm4_moe")) {
      bad("scoring_func", `"${expected}" (the ${f} router; transformers reads no other)`);
    }
  }
  let groupScore: "max" | "top2-sum" | null = null;
  if (f === "deepseek_v2") {
    const method = c.topk_method ?? "greedy";
    if (method === "group_limited_greedy") groupScore = "max";
    else if (method !== "greedy") bad("topk_method", '"greedy" or "group_limited_greedy"');
  } else if (f === "deepseek_v3" || f === "glm4_moe") groupScore = "top2-sum";
  let groups: RoutingConfig["groups"] = null;
  if (groupScore !== null) {
    const count = int("n_group", f === "deepseek_v3" ? 8 : 1);
    const top = int("topk_group", f === "deepseek_v3" ? 4 : 1);
    if (o.numExperts % count !== 0) {
      bad("n_group", `a divisor of the number of experts (${o.numExperts})`);
    }
    if (top > count) bad("topk_group", `at most n_group (${count})`);
    const per = o.numExperts / count;
    if (groupScore === "top2-sum" && per < 2 && count > 1) {
      bad(
        "n_group",
        `at most half the number of experts (${o.numExperts}): a group scores its best two`,
      );
    }
    if (o.topK > top * per) {
      bad("num_experts_per_tok", `at most topk_group × experts per group (${top * per})`);
    }
    if (count > 1) groups = { count, top, score: groupScore };
  }
  return {
    scoring,
    logitBias: f === "gpt_oss",
    selectionBias: f === "deepseek_v3" || f === "glm4_moe",
    groups,
    scale: f.startsWith("deepseek") || f === "glm4_moe"
      ? num("routed_scaling_factor", f === "deepseek_v3" ? 2.5 : 1)
      : 1,
  };
}

/** Per layer attention windows: mixtral's `sliding_window`, `layer_types` (qwen2_moe, gpt_oss), qwen3_moe's `use_sliding_window`. */
function attentionWindows(
  c: Record<string, unknown>,
  f: Family,
  numLayers: number,
  file: string,
): (number | null)[] {
  // null or absent: no window; anything else must be a positive integer, not silently ignored.
  const windowOf = (v: unknown): number | null => {
    if (v === undefined || v === null) return null;
    if (typeof v === "number" && Number.isInteger(v) && v > 0) return v;
    throw new DataError(
      `Field sliding_window in ${file} is ${shown(v)}, expected a positive integer or null.`,
    );
  };
  if (f === "mixtral") return Array(numLayers).fill(windowOf(c.sliding_window));
  if (f === "qwen2_moe" || f === "gpt_oss") {
    const types = Array.isArray(c.layer_types)
      ? c.layer_types
      : f === "gpt_oss"
      ? Array.from({ length: numLayers }, (_, l) => l % 2 === 0 ? "sliding_attention" : "")
      : [];
    return Array.from(
      { length: numLayers },
      (_, l) => types[l] === "sliding_attention" ? windowOf(c.sliding_window) : null,
    );
  }
  if (f === "qwen3_moe") {
    return Array(numLayers).fill(
      c.use_sliding_window === false ? null : windowOf(c.sliding_window),
    );
  }
  return Array(numLayers).fill(null);
}

/** gpt_oss: `swiglu_limit` as transformers applies it (hard-coded 7.0). */
function swigluLimit(c: Record<string, unknown>, file: string): number {
  const v = c.swiglu_limit ?? 7;
  if (v !== 7) {
    throw new DataError(
      `Field swiglu_limit in ${file} is ${
        JSON.stringify(v)
      }, expected 7.0 (transformers' gpt_oss clamps at 7.0 whatever the config says).`,
    );
  }
  return 7;
}

/** gpt_oss experts are read as published: MXFP4 blocks of 32 along each expert input. */
function checkMxfp4(
  c: Record<string, unknown>,
  file: string,
  o: { hiddenSize: number; expertFfn: number },
): void {
  const q = c.quantization_config as Record<string, unknown> | undefined | null;
  if (q === undefined || q === null || typeof q !== "object" || q.quant_method !== "mxfp4") {
    throw new DataError(
      `Field quantization_config in ${file} is ${
        JSON.stringify(q ?? null)
      }, expected {"quant_method": "mxfp4"}: gpt_oss experts are read as published, in MXFP4.`,
    );
  }
  for (const [key, v] of [["hidden_size", o.hiddenSize], ["intermediate_size", o.expertFfn]]) {
    if ((v as number) % 32 !== 0) {
      throw new DataError(
        `Field ${key} in ${file} is ${v}, expected a multiple of 32 (an MXFP4 block is 32 values of an expert input).`,
      );
    }
  }
}

/** Indices of the MoE layers, in order. */
export function moeLayers(config: ModelConfig): number[] {
  return config.isMoe.flatMap((m, l) => (m ? [l] : []));
}

/** Parameters of one routed expert (three matrices, or their six factors when decomposed; gpt_oss biases included). */
export function expertParams(config: ModelConfig): number {
  const { hiddenSize: h, expertFfn: f, decomposedRank: r } = config;
  const bias = config.expertBias ? 2 * f + h : 0;
  return (r === null ? 3 * h * f : 2 * (f * r + r * h) + (h * r + r * f)) + bias;
}
