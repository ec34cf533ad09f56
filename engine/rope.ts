/**
 * Rotary position embeddings as transformers computes them
 * (`modeling_rope_utils.py`): which dimensions rotate, how they pair, and the
 * cos/sin table [positions, dim/2, 2] the q/k kernels read, in f32 as Hugging
 * Face's rotary modules compute it (they force f32 even in a float64 model).
 *
 * - "default": inv_freq_i = 1 / θ^(2i / dim).
 * - "yarn" (DeepSeek-V2/V3, gpt-oss): inverse frequencies blended between
 *   interpolated (/ factor) and extrapolated ones over a linear ramp between
 *   the correction dimensions of beta_fast and beta_slow, and cos/sin
 *   multiplied by the attention factor (mscale).
 * Partial rotary (GLM `partial_rotary_factor`) rotates the first dim of the
 * head's d dimensions; MLA rotates its qk_rope_head_dim dimensions.
 */
import { DataError } from "../common/errors.ts";

export interface Rope {
  /** `rope_theta`. */
  theta: number;
  /** Rotated dimensions per q/k head (even), the first `dim` of the head. */
  dim: number;
  /**
   * Pairs (2i, 2i + 1) rotate together (DeepSeek's interleaved layout) or
   * (i, i + dim/2) (rotate_half, every other family).
   */
  interleaved: boolean;
  /** YaRN scaling, or null for the default RoPE. */
  yarn: Yarn | null;
}

export interface Yarn {
  factor: number;
  originalMaxPositions: number;
  betaFast: number;
  betaSlow: number;
  truncate: boolean;
  /** cos and sin are multiplied by this (`attention_factor`, or from mscale / mscale_all_dim). */
  attentionFactor: number;
  /** `mscale_all_dim` (0 when absent): DeepSeek's MLA also scales its softmax by mscale(factor, it)². */
  mscaleAllDim: number;
}

/** YaRN's mscale: 1 for factor ≤ 1, else 0.1 · m · ln(factor) + 1. */
export function yarnMscale(factor: number, m = 1): number {
  return factor <= 1 ? 1 : 0.1 * m * Math.log(factor) + 1;
}

/**
 * The RoPE of a config: `rope_parameters` (transformers 5) or `rope_scaling`
 * with `rope_theta` (older config.json files). `dim` is the rotated width per
 * head; `theta` the family's default θ.
 */
export function parseRope(
  c: Record<string, unknown>,
  file: string,
  o: { dim: number; theta: number; interleaved: boolean; maxPositions: number },
): Rope {
  const key = c.rope_parameters !== undefined && c.rope_parameters !== null
    ? "rope_parameters"
    : "rope_scaling";
  const raw = c[key] ?? null;
  if (raw !== null && (typeof raw !== "object" || Array.isArray(raw))) {
    throw new DataError(
      `Field ${key} in ${file} is ${JSON.stringify(raw)}, expected an object or null.`,
    );
  }
  const r = (raw ?? {}) as Record<string, unknown>;
  const type = r.rope_type ?? r.type ?? "default";
  let theta = o.theta;
  // θ ≤ 0 or infinite makes every rotation NaN; the engine would still route, on garbage.
  for (const [where, v] of [["rope_theta", c.rope_theta], [`${key}.rope_theta`, r.rope_theta]]) {
    if (v === undefined || v === null) continue;
    if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v)) {
      throw new DataError(
        `Field ${where} in ${file} is ${
          typeof v === "number" ? String(v) : JSON.stringify(v)
        }, expected a finite positive number.`,
      );
    }
    theta = v;
  }
  const rope: Rope = { theta, dim: o.dim, interleaved: o.interleaved, yarn: null };
  if (type === "default") return rope;
  if (type !== "yarn") {
    throw new DataError(
      `Field rope_parameters.rope_type in ${file} is ${
        JSON.stringify(type)
      }, expected "default" or "yarn".`,
    );
  }
  const num = (key: string): number | null => {
    const v = r[key];
    if (v === undefined || v === null) return null;
    if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v)) {
      throw new DataError(
        `Field rope_parameters.${key} in ${file} is ${
          typeof v === "number" ? String(v) : JSON.stringify(v)
        }, expected a finite positive number.`,
      );
    }
    return v;
  };
  const original = num("original_max_position_embeddings");
  if (original === null) {
    throw new DataError(
      `Field rope_parameters.original_max_position_embeddings in ${file} is missing, expected a positive integer for YaRN.`,
    );
  }
  if (theta <= 1) {
    throw new DataError(
      `Field rope_theta in ${file} is ${theta}, expected a number above 1 for YaRN (it divides by ln θ).`,
    );
  }
  const factor = num("factor") ?? o.maxPositions / original;
  const mscale = num("mscale"), mscaleAllDim = num("mscale_all_dim");
  const attentionFactor = num("attention_factor") ??
    (mscale && mscaleAllDim
      ? yarnMscale(factor, mscale) / yarnMscale(factor, mscaleAllDim)
      : yarnMscale(factor));
  rope.yarn = {
    factor,
    originalMaxPositions: original,
    betaFast: num("beta_fast") ?? 32,
    betaSlow: num("beta_slow") ?? 1,
    truncate: r.truncate !== false,
    attentionFactor,
    mscaleAllDim: mscaleAllDim ?? 0,
  };
  return rope;
}

/** The inverse frequencies [dim/2] in f32, as transformers' rope init functions compute them. */
export function inverseFrequencies(rope: Rope): Float32Array {
  const { theta, dim, yarn } = rope;
  const half = dim / 2;
  const f = Math.fround;
  const inv = new Float32Array(half);
  // base ** (arange(0, dim, 2) / dim) in f32
  const posFreq = (i: number) => f(Math.pow(theta, f((2 * i) / dim)));
  if (yarn === null) {
    for (let i = 0; i < half; i++) inv[i] = f(1 / posFreq(i));
    return inv;
  }
  const correction = (rotations: number) =>
    (dim * Math.log(yarn.originalMaxPositions / (rotations * 2 * Math.PI))) / (2 * Math.log(theta));
  let low = correction(yarn.betaFast), high = correction(yarn.betaSlow);
  if (yarn.truncate) {
    low = Math.floor(low);
    high = Math.ceil(high);
  }
  low = Math.max(low, 0);
  high = Math.min(high, dim - 1);
  if (low === high) high += 0.001;
  for (let i = 0; i < half; i++) {
    const pf = posFreq(i);
    const extrapolation = f(1 / pf);
    const interpolation = f(1 / f(yarn.factor * pf));
    const ramp = Math.min(1, Math.max(0, f(f(i - low) / f(high - low))));
    const extrapolationFactor = f(1 - ramp);
    inv[i] = f(
      f(interpolation * f(1 - extrapolationFactor)) + f(extrapolation * extrapolationFactor),
    );
  }
  return inv;
}

/** cos, sin of position × inv_freq (× YaRN's attention factor) for `positions` positions: [positions, dim/2, 2]. */
export function ropeTable(rope: Rope, positions: number): Float32Array {
  const inv = inverseFrequencies(rope);
  const half = rope.dim / 2;
  const scale = Math.fround(rope.yarn?.attentionFactor ?? 1);
  const out = new Float32Array(positions * rope.dim);
  for (let p = 0; p < positions; p++) {
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(p * inv[i]!);
      if (scale === 1) {
        out[p * rope.dim + 2 * i] = Math.cos(angle);
        out[p * rope.dim + 2 * i + 1] = Math.sin(angle);
      } else {
        out[p * rope.dim + 2 * i] = Math.fround(Math.cos(angle)) * scale;
        out[p * rope.dim + 2 * i + 1] = Math.fround(Math.sin(angle)) * scale;
      }
    }
  }
  return out;
}
