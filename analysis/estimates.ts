/**
 * Statistics computed from a summed sufficient-statistic vector (one domain,
 * the whole corpus, or one bootstrap resample of either), and their random
 * baselines. Each `evaluate*` function calls `emit` once per statistic in a
 * fixed order, so the same code labels the point estimates and fills the
 * bootstrap matrices. Formulas are documented in README (readme.ts).
 */
import { Rng } from "../common/random.ts";
import type { BucketLayout, Dims, DocLayout } from "./layout.ts";

/** Statistic families of the document vector. */
export const enum Family {
  /** key = choice * E + expert; choice 0 first, 1 second, 2 top_k, 3 token_fraction. */
  Share,
  /** key 0 first_choice_repeat, 1 set_overlap. */
  Repetition,
  /** key = overlap size j (0..k). */
  Overlap,
  /** key 0 h_norm, 1 ex_rep, 2 delta_uniform, 3 l_norm, 4 bies. */
  Cosmoes,
  /** key 0 share_entropy, 1 max_vio, 2 router_entropy, 3 topk_mass, 4 topk_margin. */
  Load,
  /** Layer means; key = SUMMARY_KEYS index. */
  Summary,
  /** key = i * E + j (i ≠ j): co-activation N(i,j)/N(i). */
  Coactivation,
  /** key 0: mutual information between first choices of layers l and l+1, bits. */
  FlowInformation,
}

export type Emit = (family: Family, layer: number, key: number, value: number) => void;

export const CHOICES = ["first", "second", "top_k", "token_fraction"] as const;
export const REPETITION = ["first_choice_repeat", "set_overlap"] as const;
export const COSMOES = ["h_norm", "ex_rep", "delta_uniform", "l_norm", "bies"] as const;
export const LOAD = [
  "share_entropy",
  "max_vio",
  "router_entropy",
  "topk_mass",
  "topk_margin",
] as const;
/** Statistics averaged over layers for summary.csv: [family, key]. */
export const SUMMARY_KEYS: readonly (readonly [Family, number, string])[] = [
  [Family.Repetition, 0, "first_choice_repeat"],
  [Family.Repetition, 1, "set_overlap"],
  [Family.Cosmoes, 0, "h_norm"],
  [Family.Cosmoes, 1, "ex_rep"],
  [Family.Cosmoes, 2, "delta_uniform"],
  [Family.Cosmoes, 3, "l_norm"],
  [Family.Cosmoes, 4, "bies"],
  [Family.Load, 0, "share_entropy"],
  [Family.Load, 1, "max_vio"],
  [Family.Load, 2, "router_entropy"],
  [Family.Load, 3, "topk_mass"],
  [Family.Load, 4, "topk_margin"],
];
const SUMMARY_INDEX = (() => {
  const index = new Int32Array(8 * 8).fill(-1);
  SUMMARY_KEYS.forEach(([f, key], s) => index[f * 8 + key] = s);
  return index;
})();

/** Statistics that need the router distribution. */
export function needsProbs(family: Family, key: number): boolean {
  return (family === Family.Cosmoes && key >= 3) || (family === Family.Load && key >= 2);
}

/** Every statistic of a document-layout vector, in a fixed order. */
export function evaluateDoc(v: ArrayLike<number>, L: DocLayout, emit: Emit): void {
  const { layers: M, experts: E, topK: k, probs } = L.dims;
  const T = v[L.tokens]!;
  const P = v[L.pairs]!;
  const kk = k + 1;
  const layerValues = new Float64Array(SUMMARY_KEYS.length * M);
  const record = (family: Family, l: number, key: number, value: number) => {
    emit(family, l, key, value);
    const s = SUMMARY_INDEX[family * 8 + key]!;
    if (s >= 0) layerValues[s * M + l] = value;
  };
  for (let l = 0; l < M; l++) {
    const le = l * E;
    for (let e = 0; e < E; e++) emit(Family.Share, l, e, v[L.first + le + e]! / T);
    if (k > 1) {
      for (let e = 0; e < E; e++) emit(Family.Share, l, E + e, v[L.second + le + e]! / T);
    }
    for (let e = 0; e < E; e++) emit(Family.Share, l, 2 * E + e, v[L.any + le + e]! / (k * T));
    for (let e = 0; e < E; e++) emit(Family.Share, l, 3 * E + e, v[L.any + le + e]! / T);

    record(Family.Repetition, l, 0, v[L.sameFirst + l]! / P);
    record(Family.Repetition, l, 1, 1 - v[L.overlap + l * kk]! / P);
    let replaced = 0;
    for (let j = 0; j <= k; j++) {
      const pairsWith = v[L.overlap + l * kk + j]!;
      emit(Family.Overlap, l, j, pairsWith / P);
      replaced += pairsWith * (k - j);
    }
    const hNorm = replaced / (P * Math.min(k, E - k));
    record(Family.Cosmoes, l, 0, hNorm);
    record(Family.Cosmoes, l, 1, replaced / (P * k));
    let deviation = 0;
    let entropy = 0;
    let max = 0;
    for (let e = 0; e < E; e++) {
      const count = v[L.any + le + e]!;
      const share = count / (k * T);
      deviation += Math.abs(share - 1 / E);
      if (share > 0) entropy -= share * Math.log2(share);
      if (count > max) max = count;
    }
    record(Family.Cosmoes, l, 2, (100 * deviation) / E);
    const lNorm = probs ? v[L.leave + l]! / P : NaN;
    record(Family.Cosmoes, l, 3, lNorm);
    record(Family.Cosmoes, l, 4, hNorm * lNorm);
    record(Family.Load, l, 0, entropy);
    const mean = (k * T) / E;
    record(Family.Load, l, 1, (max - mean) / mean);
    record(Family.Load, l, 2, probs ? v[L.entropy + l]! / T / Math.LN2 : NaN);
    record(Family.Load, l, 3, probs ? v[L.topMass + l]! / T : NaN);
    record(Family.Load, l, 4, probs ? v[L.margin + l]! / T : NaN);
  }
  for (let s = 0; s < SUMMARY_KEYS.length; s++) {
    let sum = 0;
    for (let l = 0; l < M; l++) sum += layerValues[s * M + l]!;
    emit(Family.Summary, -1, s, sum / M);
  }
}

/** Whether per-domain co-activation rows are written (E ≤ 16); `all` always is. */
export function coactivationPerDomain(dims: Dims): boolean {
  return dims.experts <= 16;
}

/** Every statistic of a bucket-layout vector, in a fixed order. */
export function evaluateBucket(v: ArrayLike<number>, B: BucketLayout, emit: Emit): void {
  const { layers: M, experts: E } = B.dims;
  for (let l = 0; l < M; l++) {
    for (let i = 0; i < E; i++) {
      const ni = v[B.any + l * E + i]!;
      for (let j = 0; j < E; j++) {
        if (i === j) continue;
        const nij = v[B.coact + l * B.pairCount + B.pairIndex[i * E + j]!]!;
        emit(Family.Coactivation, l, i * E + j, nij / ni);
      }
    }
  }
  for (let l = 0; l + 1 < M; l++) {
    emit(Family.FlowInformation, l, 0, mutualInformation(v, B.flow + l * E * E, E));
  }
}

/** Plug-in mutual information (bits) of an E × E count table at `from`. */
export function mutualInformation(v: ArrayLike<number>, from: number, E: number): number {
  const rows = new Float64Array(E);
  const cols = new Float64Array(E);
  let n = 0;
  for (let i = 0; i < E; i++) {
    for (let j = 0; j < E; j++) {
      const c = v[from + i * E + j]!;
      rows[i]! += c;
      cols[j]! += c;
      n += c;
    }
  }
  if (n === 0) return NaN;
  let mi = 0;
  for (let i = 0; i < E; i++) {
    for (let j = 0; j < E; j++) {
      const c = v[from + i * E + j]!;
      if (c > 0) mi += (c / n) * Math.log2((c * n) / (rows[i]! * cols[j]!));
    }
  }
  return Math.max(0, mi);
}

/** Number of statistics an evaluate function emits. */
export function countStatistics<V>(evaluate: (v: V, emit: Emit) => void, v: V): number {
  let n = 0;
  evaluate(v, () => n++);
  return n;
}

// ---------------------------------------------------------------------------
// Baselines

/** Binomial coefficient C(n, r) as a float (0 when r < 0 or r > n). */
export function choose(n: number, r: number): number {
  if (r < 0 || r > n) return 0;
  let c = 1;
  for (let i = 1; i <= r; i++) c = (c * (n - r + i)) / i;
  return c;
}

/** P(|S ∩ S'| = j) for two independent uniform k-subsets of E experts (hypergeometric). */
export function overlapProbability(E: number, k: number, j: number): number {
  return (choose(k, j) * choose(E - k, k - j)) / choose(E, k);
}

/**
 * Expected share statistics under uniform random routing for T tokens, by
 * simulation: top-k counts are drawn from the Gaussian with the exact mean
 * kT/E and covariance T·v·E/(E−1)·(I − 11ᵀ/E), v = (k/E)(1 − k/E), of counts
 * of independent uniform k-subsets (seeded, 400 replicates).
 */
export function randomShareBaselines(
  E: number,
  k: number,
  T: number,
  seed = 12345,
): { deltaUniform: number; entropy: number; maxVio: number } {
  const replicates = 400;
  const rng = new Rng(seed);
  const mean = (k * T) / E;
  const v = (k / E) * (1 - k / E);
  const sd = Math.sqrt((T * v * E) / Math.max(1, E - 1));
  const z = new Float64Array(E);
  let delta = 0;
  let entropy = 0;
  let maxVio = 0;
  for (let r = 0; r < replicates; r++) {
    let zbar = 0;
    for (let e = 0; e < E; e++) {
      z[e] = rng.normal();
      zbar += z[e]! / E;
    }
    let dev = 0;
    let h = 0;
    let max = 0;
    for (let e = 0; e < E; e++) {
      const count = Math.max(0, mean + sd * (z[e]! - zbar));
      const share = count / (k * T);
      dev += Math.abs(share - 1 / E);
      if (share > 0) h -= share * Math.log2(share);
      max = Math.max(max, count);
    }
    delta += (100 * dev) / E / replicates;
    entropy += h / replicates;
    maxVio += (max - mean) / mean / replicates;
  }
  return { deltaUniform: delta, entropy, maxVio };
}

/**
 * The random baseline of each document-vector statistic: what uniform
 * random, independent routing gives (analytic where it exists, simulated for
 * the plug-in statistics that are biased at finite T), or for router
 * statistics the uniform router's value.
 */
export function docBaseline(
  dims: Dims,
  tokens: number,
): (family: Family, key: number) => number {
  const { experts: E, topK: k } = dims;
  const sim = randomShareBaselines(E, k, tokens);
  const cosmoes = (key: number): number => {
    switch (key) {
      case 0:
        return (k * (1 - k / E)) / Math.min(k, E - k);
      case 1:
        return 1 - k / E;
      case 2:
        return sim.deltaUniform;
      case 3:
        return 1 - k / E;
      default:
        return ((k * (1 - k / E)) / Math.min(k, E - k)) * (1 - k / E);
    }
  };
  const load = (key: number): number => [sim.entropy, sim.maxVio, Math.log2(E), k / E, 0][key]!;
  return (family, key) => {
    switch (family) {
      case Family.Share:
        return Math.floor(key / E) === 3 ? k / E : 1 / E;
      case Family.Repetition:
        return key === 0 ? 1 / E : 1 - overlapProbability(E, k, 0);
      case Family.Overlap:
        return overlapProbability(E, k, key);
      case Family.Cosmoes:
        return cosmoes(key);
      case Family.Load:
        return load(key);
      case Family.Summary: {
        const [f, k2] = SUMMARY_KEYS[key]!;
        return f === Family.Repetition
          ? (k2 === 0 ? 1 / E : 1 - overlapProbability(E, k, 0))
          : f === Family.Cosmoes
          ? cosmoes(k2)
          : load(k2);
      }
      default:
        return NaN;
    }
  };
}

/** Co-activation baseline (k − 1)/(E − 1); MI baseline: Miller–Madow bias (E−1)²/(2N ln 2) bits. */
export function bucketBaseline(dims: Dims, tokens: number): (family: Family) => number {
  const { experts: E, topK: k } = dims;
  return (family) =>
    family === Family.Coactivation ? (k - 1) / (E - 1) : ((E - 1) ** 2) / (2 * tokens * Math.LN2);
}

/**
 * Expected largest first-choice share of a token id seen n times under
 * uniform random routing: E[max_e N_e]/n, N ~ Multinomial(n, 1/E), by
 * simulation (exact draws up to n = 400, the Gaussian approximation above),
 * seeded and cached per n.
 */
export class VocabularyBaseline {
  #cache = new Map<number, number>();
  #E: number;
  #counts: Float64Array;

  constructor(E: number) {
    this.#E = E;
    this.#counts = new Float64Array(E);
  }

  expectedMaxShare(n: number): number {
    const cached = this.#cache.get(n);
    if (cached !== undefined) return cached;
    const E = this.#E;
    const replicates = 200;
    // Seeded by n, so a value does not depend on which others were asked for first.
    const rng = new Rng(777 + n);
    let total = 0;
    for (let r = 0; r < replicates; r++) {
      const c = this.#counts;
      c.fill(0);
      if (n <= 400) {
        for (let i = 0; i < n; i++) c[rng.int(E)]!++;
      } else {
        const sd = Math.sqrt((n * (1 / E) * (1 - 1 / E) * E) / Math.max(1, E - 1));
        let zbar = 0;
        for (let e = 0; e < E; e++) {
          c[e] = rng.normal();
          zbar += c[e]! / E;
        }
        for (let e = 0; e < E; e++) c[e] = n / E + sd * (c[e]! - zbar);
      }
      let max = 0;
      for (let e = 0; e < E; e++) max = Math.max(max, c[e]!);
      total += Math.min(1, max / n) / replicates;
    }
    this.#cache.set(n, total);
    return total;
  }
}
