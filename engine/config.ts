/**
 * One readonly config for every supported family, read from a Hugging Face
 * `config.json`. Each field says which config.json key it comes from and its
 * default when the key is absent (the default of the transformers config class).
 */
import { DataError } from "../common/errors.ts";

export type Family = "mixtral" | "olmoe" | "qwen2_moe" | "qwen3_moe";
export const FAMILIES: readonly Family[] = ["mixtral", "olmoe", "qwen2_moe", "qwen3_moe"];

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
  /** `num_key_value_heads`, nkv (default nq). */
  readonly numKvHeads: number;
  /** `head_dim`, d (null or absent: H / nq). */
  readonly headDim: number;
  /** `num_local_experts` (mixtral, qwen3_moe) or `num_experts` (olmoe, qwen2_moe), E. */
  readonly numExperts: number;
  /** `num_experts_per_tok`, k. */
  readonly topK: number;
  /** Routed expert FFN width: `intermediate_size` (mixtral, olmoe), `moe_intermediate_size` (qwen). */
  readonly expertFfn: number;
  /** Dense-layer FFN width (`intermediate_size`, qwen families with `mlp_only_layers`), else 0. */
  readonly denseFfn: number;
  /** `shared_expert_intermediate_size` (qwen2_moe only), 0 = no shared expert. */
  readonly sharedFfn: number;
  /** Per layer: true where the layer has a sparse MoE block (qwen: not in `mlp_only_layers` and `(l+1) % decoder_sparse_step == 0`). */
  readonly isMoe: readonly boolean[];
  /** Divide the top-k probabilities by their sum: always for mixtral, `norm_topk_prob` otherwise (default false). */
  readonly normTopK: boolean;
  /** `rms_norm_eps` (default 1e-5 mixtral/olmoe, 1e-6 qwen). */
  readonly rmsEps: number;
  /** `rope_parameters.rope_theta` or `rope_theta` (default 1e6 mixtral, 1e4 others); only the default rope type. */
  readonly ropeTheta: number;
  /** Per layer attention window W (key j visible from query i when i − W < j ≤ i), null = full causal. */
  readonly window: readonly (number | null)[];
  /** Bias on q/k/v projections (qwen2_moe always; olmoe `attention_bias`, default false). */
  readonly qkvBias: boolean;
  /** q/k RMSNorm: olmoe over the whole projection, qwen3_moe per head, others none. */
  readonly qkNorm: "none" | "whole" | "per_head";
  /** `clip_qkv` (olmoe; default null = no clamp). */
  readonly clipQkv: number | null;
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
      }.`,
    );
  }
  const f = family as Family;
  // Sizes are bounded before anything is allocated from them: a config that
  // claims 10^300 layers is refused here, not by an out-of-memory crash.
  const int = (key: string, fallback?: number, max = LIMITS[key] ?? 1 << 24): number => {
    const v = c[key];
    if ((v === undefined || v === null) && fallback !== undefined) return fallback;
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0 || v > max) {
      throw new DataError(
        `Field ${key} in ${file} is ${
          JSON.stringify(v)
        }, expected a positive integer of at most ${max}.`,
      );
    }
    return v;
  };
  const num = (key: string, fallback: number): number => {
    const v = c[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== "number" || !(v > 0)) {
      throw new DataError(
        `Field ${key} in ${file} is ${JSON.stringify(v)}, expected a positive number.`,
      );
    }
    return v;
  };
  const act = c.hidden_act ?? "silu";
  if (act !== "silu") {
    throw new DataError(`Field hidden_act in ${file} is ${JSON.stringify(act)}, expected "silu".`);
  }
  const hiddenSize = int("hidden_size");
  const numLayers = int("num_hidden_layers");
  const numHeads = int("num_attention_heads");
  const numKvHeads = int("num_key_value_heads", numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw new DataError(
      `Field num_key_value_heads in ${file} is ${numKvHeads}, expected a divisor of num_attention_heads (${numHeads}).`,
    );
  }
  let headDim: number;
  if (c.head_dim === undefined || c.head_dim === null) {
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
  const expertsKey = f === "olmoe" || f === "qwen2_moe" ? "num_experts" : "num_local_experts";
  const numExperts = int(
    expertsKey in c
      ? expertsKey
      : expertsKey === "num_experts"
      ? "num_local_experts"
      : "num_experts",
  );
  if (numExperts > 256) {
    throw new DataError(`Field ${expertsKey} in ${file} is ${numExperts}, expected at most 256.`);
  }
  const topK = int("num_experts_per_tok");
  if (topK > numExperts) {
    throw new DataError(
      `Field num_experts_per_tok in ${file} is ${topK}, expected at most the number of experts (${numExperts}).`,
    );
  }
  const qwen = f === "qwen2_moe" || f === "qwen3_moe";
  const expertFfn = qwen ? int("moe_intermediate_size") : int("intermediate_size");
  const mlpOnly = new Set<number>();
  if (qwen && Array.isArray(c.mlp_only_layers)) {
    for (const l of c.mlp_only_layers) mlpOnly.add(l as number);
  }
  const step = qwen ? int("decoder_sparse_step", 1) : 1;
  const isMoe = Array.from(
    { length: numLayers },
    (_, l) => !mlpOnly.has(l) && (l + 1) % step === 0,
  );
  const denseFfn = isMoe.every((m) => m) ? 0 : int("intermediate_size");
  const sharedFfn = f === "qwen2_moe" ? int("shared_expert_intermediate_size") : 0;

  const rope = c.rope_parameters ?? c.rope_scaling ?? null;
  let ropeTheta = f === "mixtral" ? 1e6 : 1e4;
  if (typeof c.rope_theta === "number") ropeTheta = c.rope_theta;
  if (rope !== null && typeof rope === "object") {
    const r = rope as Record<string, unknown>;
    const type = r.rope_type ?? r.type ?? "default";
    if (type !== "default") {
      throw new DataError(
        `Field rope_parameters.rope_type in ${file} is ${
          JSON.stringify(type)
        }, expected "default".`,
      );
    }
    if (typeof r.rope_theta === "number") ropeTheta = r.rope_theta;
  }

  const windowOf = (v: unknown): number | null =>
    typeof v === "number" && Number.isInteger(v) && v > 0 ? v : null;
  let window: (number | null)[];
  if (f === "mixtral") window = Array(numLayers).fill(windowOf(c.sliding_window));
  else if (f === "qwen2_moe") {
    const types = Array.isArray(c.layer_types) ? c.layer_types : [];
    window = Array.from(
      { length: numLayers },
      (_, l) => types[l] === "sliding_attention" ? windowOf(c.sliding_window) : null,
    );
  } else if (f === "qwen3_moe") {
    window = Array(numLayers).fill(
      c.use_sliding_window === false ? null : windowOf(c.sliding_window),
    );
  } else window = Array(numLayers).fill(null);

  let decomposedRank: number | null = null;
  if (c.moetrace_weight_decomposed !== undefined && c.moetrace_weight_decomposed !== null) {
    const wd = c.moetrace_weight_decomposed as Record<string, unknown>;
    if (
      f !== "mixtral" || typeof wd.rank !== "number" || !Number.isInteger(wd.rank) || wd.rank <= 0
    ) {
      throw new DataError(
        `Field moetrace_weight_decomposed in ${file} is ${
          JSON.stringify(c.moetrace_weight_decomposed)
        }, expected {"rank": positive integer} on a mixtral model.`,
      );
    }
    decomposedRank = wd.rank;
  }
  const clip = c.clip_qkv;
  const eos = c.eos_token_id;
  return {
    family: f,
    vocabSize: int("vocab_size"),
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    numExperts,
    topK,
    expertFfn,
    denseFfn,
    sharedFfn,
    isMoe,
    normTopK: f === "mixtral" ? true : c.norm_topk_prob === true,
    rmsEps: num("rms_norm_eps", qwen ? 1e-6 : 1e-5),
    ropeTheta,
    window,
    qkvBias: f === "qwen2_moe" ? c.qkv_bias !== false : c.attention_bias === true,
    qkNorm: f === "olmoe" ? "whole" : f === "qwen3_moe" ? "per_head" : "none",
    clipQkv: typeof clip === "number" && clip > 0 ? clip : null,
    decomposedRank,
    tieEmbeddings: c.tie_word_embeddings === true,
    maxPositions: int("max_position_embeddings", 4096),
    bosId: typeof c.bos_token_id === "number" ? c.bos_token_id : null,
    eosIds: Array.isArray(eos) ? eos as number[] : typeof eos === "number" ? [eos] : [],
  };
}

/** Indices of the MoE layers, in order. */
export function moeLayers(config: ModelConfig): number[] {
  return config.isMoe.flatMap((m, l) => (m ? [l] : []));
}

/** Parameters of one routed expert (three matrices, or their six factors when decomposed). */
export function expertParams(config: ModelConfig): number {
  const { hiddenSize: h, expertFfn: f, decomposedRank: r } = config;
  return r === null ? 3 * h * f : 2 * (f * r + r * h) + (h * r + r * f);
}
