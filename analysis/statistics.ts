/**
 * The routing statistics by name, their formulas, and where each one sits in
 * a statistics vector.
 *
 * A statistics vector is what one evaluation of a summed sufficient-statistic
 * vector (one domain, the whole corpus, or one bootstrap resample of either)
 * gives: a flat Float64Array, because the bootstrap keeps one per resample
 * and takes percentiles slot by slot. `DocStatistics` and `BucketStatistics`
 * name its slots (`perLayer.ex_rep + l` is the expert replacement ratio at
 * layer l), their `evaluate` computes each statistic into its named slot, and
 * the tables (tables.ts) read values and intervals back by the same names.
 * Formulas are documented in README (readme.ts).
 */
import type { BucketLayout, Dims, DocLayout } from "./layout.ts";

/** How an expert's share is counted: the `choice` column of expert_shares.csv, in row order. */
export const CHOICES = ["first", "second", "top_k", "token_fraction"] as const;
export type Choice = typeof CHOICES[number];

/**
 * The statistics with one value per layer, by the CSV that holds them, in row
 * order; their names are the CSVs' `statistic` column.
 */
export const LAYER_STATISTICS = {
  repetition: ["first_choice_repeat", "set_overlap"],
  cosmoes: ["h_norm", "ex_rep", "delta_uniform", "l_norm", "bies"],
  load_balance: ["share_entropy", "max_vio", "router_entropy", "topk_mass", "topk_margin"],
} as const;
export type LayerTable = keyof typeof LAYER_STATISTICS;
export type LayerStatistic = typeof LAYER_STATISTICS[LayerTable][number];

/** Every per-layer statistic: summary.csv holds their means over layers, in this order. */
export const SUMMARY_STATISTICS: readonly LayerStatistic[] = [
  ...LAYER_STATISTICS.repetition,
  ...LAYER_STATISTICS.cosmoes,
  ...LAYER_STATISTICS.load_balance,
];

/**
 * Statistics whose plug-in value is biased at finite sample size by a term
 * of order 1/n: their value is the jackknife bias-corrected estimate, and
 * the plug-in goes in the `plug_in` column.
 */
export const BIAS_CORRECTED: ReadonlySet<LayerStatistic> = new Set<LayerStatistic>([
  "share_entropy",
]);

/**
 * Statistics of the expert shares that sit on the boundary of their range
 * under uniform routing (0), where no resampling interval is consistent: their
 * value and interval come from simultaneous intervals of the shares
 * (uniformity.ts), the plug-in goes in `plug_in`.
 */
export const SHARE_DEVIATIONS: ReadonlySet<LayerStatistic> = new Set<LayerStatistic>([
  "delta_uniform",
  "max_vio",
]);

/**
 * Pair statistics with a within-document shuffle baseline (shuffle.ts): the
 * `baseline_marginal` column, and a test of value − baseline_marginal.
 */
export const MARGINAL_STATISTICS = [
  "first_choice_repeat",
  "set_overlap",
  "h_norm",
  "ex_rep",
] as const;
export type MarginalStatistic = typeof MARGINAL_STATISTICS[number];

/** Statistics computed from the router distribution: NaN, and left out, in a trace without it. */
export const NEEDS_PROBS: ReadonlySet<LayerStatistic> = new Set<LayerStatistic>([
  "l_norm",
  "bies",
  "router_entropy",
  "topk_mass",
  "topk_margin",
]);

/** A kind of statistics: its vector's length, and how to compute it from summed sufficient statistics. */
export interface Statistics {
  /** Length of the statistics vector. */
  readonly size: number;
  /** Writes every statistic of the summed vector `v` into `out` (length `size`). */
  evaluate(v: ArrayLike<number>, out: Float64Array): void;
}

/**
 * The statistics of a document-layout vector and their slots. `[M, E]`
 * blocks are indexed `l * E + e`.
 */
export class DocStatistics implements Statistics {
  readonly layout: DocLayout;
  readonly dims: Dims;
  /** The share choices this trace has: all but `second` when k = 1. */
  readonly choices: readonly Choice[];
  /**
   * [M, E] per choice: tokens whose first (second) choice is e over T,
   * tokens with e in their top-k over kT (`top_k`: a share of assignments)
   * and over T (`token_fraction`). The `second` block is empty when k = 1.
   */
  readonly shares: Readonly<Record<Choice, number>>;
  /** [M, k+1] pairs with |S_t ∩ S_t−1| = j, over all pairs. */
  readonly overlap: number;
  /** [M] per statistic: its value at each layer. */
  readonly perLayer: Readonly<Record<LayerStatistic, number>>;
  /** One slot per statistic: the unweighted mean of its values over layers. */
  readonly layerMean: Readonly<Record<LayerStatistic, number>>;
  /** [M] per pair statistic: its expectation after shuffling each document's tokens. */
  readonly marginal: Readonly<Record<MarginalStatistic, number>>;
  /** [M] per pair statistic: value − marginal, the locality the shuffle removes. */
  readonly excess: Readonly<Record<MarginalStatistic, number>>;
  /** One slot per pair statistic: the mean of `marginal` over layers. */
  readonly marginalMean: Readonly<Record<MarginalStatistic, number>>;
  /** [M, k+1] the overlap proportions' expectation after shuffling each document's tokens. */
  readonly overlapMarginal: number;
  /** Length of the statistics vector. */
  readonly size: number;

  constructor(layout: DocLayout) {
    this.layout = layout;
    this.dims = layout.dims;
    const { layers: M, experts: E, topK: k } = layout.dims;
    let o = 0;
    const take = (n: number) => {
      const at = o;
      o += n;
      return at;
    };
    this.choices = CHOICES.filter((c) => c !== "second" || k > 1);
    this.shares = {
      first: take(M * E),
      second: take(k > 1 ? M * E : 0),
      top_k: take(M * E),
      token_fraction: take(M * E),
    };
    this.overlap = take(M * (k + 1));
    const perLayer = {} as Record<LayerStatistic, number>;
    for (const name of SUMMARY_STATISTICS) perLayer[name] = take(M);
    this.perLayer = perLayer;
    const layerMean = {} as Record<LayerStatistic, number>;
    for (const name of SUMMARY_STATISTICS) layerMean[name] = take(1);
    this.layerMean = layerMean;
    const marginal = {} as Record<MarginalStatistic, number>;
    const excess = {} as Record<MarginalStatistic, number>;
    const marginalMean = {} as Record<MarginalStatistic, number>;
    for (const name of MARGINAL_STATISTICS) {
      marginal[name] = take(M);
      excess[name] = take(M);
      marginalMean[name] = take(1);
    }
    this.marginal = marginal;
    this.excess = excess;
    this.marginalMean = marginalMean;
    this.overlapMarginal = take(M * (k + 1));
    this.size = o;
  }

  /** Writes every statistic of the summed document vector `v` into `out` (length `size`). */
  evaluate(v: ArrayLike<number>, out: Float64Array): void {
    const { layers: M, experts: E, topK: k, probs } = this.dims;
    const L = this.layout;
    const share = this.shares;
    const at = this.perLayer;
    const T = v[L.tokens]!;
    const P = v[L.pairs]!;
    const kk = k + 1;
    const marginal = this.marginal;
    const excess = this.excess;
    for (let l = 0; l < M; l++) {
      const le = l * E;
      for (let e = 0; e < E; e++) out[share.first + le + e] = v[L.first + le + e]! / T;
      if (k > 1) {
        for (let e = 0; e < E; e++) out[share.second + le + e] = v[L.second + le + e]! / T;
      }
      for (let e = 0; e < E; e++) out[share.top_k + le + e] = v[L.any + le + e]! / (k * T);
      for (let e = 0; e < E; e++) out[share.token_fraction + le + e] = v[L.any + le + e]! / T;

      out[at.first_choice_repeat + l] = v[L.sameFirst + l]! / P;
      out[at.set_overlap + l] = 1 - v[L.overlap + l * kk]! / P;
      out[marginal.first_choice_repeat + l] = v[L.shuffleSameFirst + l]! / P;
      out[marginal.set_overlap + l] = 1 - v[L.shuffleOverlap + l * kk]! / P;
      // Experts replaced between consecutive tokens: k − |S_t ∩ S_t−1| per pair, i.e.
      // ½ Σ_e |[e ∈ S_t] − [e ∈ S_t−1]| (CoSMoEs Eq. 4), and the same after a shuffle.
      let replaced = 0;
      let shuffledReplaced = 0;
      for (let j = 0; j <= k; j++) {
        const pairsWith = v[L.overlap + l * kk + j]!;
        const shuffledWith = v[L.shuffleOverlap + l * kk + j]!;
        out[this.overlap + l * kk + j] = pairsWith / P;
        out[this.overlapMarginal + l * kk + j] = shuffledWith / P;
        replaced += pairsWith * (k - j);
        shuffledReplaced += shuffledWith * (k - j);
      }
      // Eq. 5: H_norm = H / (B·K·(T − 1)), the pairs of all sequences times k.
      const hNorm = replaced / (P * k);
      out[at.h_norm + l] = hNorm;
      out[at.ex_rep + l] = hNorm;
      out[marginal.h_norm + l] = shuffledReplaced / (P * k);
      out[marginal.ex_rep + l] = shuffledReplaced / (P * k);
      for (const name of MARGINAL_STATISTICS) {
        out[excess[name] + l] = out[at[name] + l]! - out[marginal[name] + l]!;
      }
      let deviation = 0;
      let entropy = 0;
      let max = 0;
      for (let e = 0; e < E; e++) {
        const count = v[L.any + le + e]!;
        const q = count / (k * T);
        deviation += Math.abs(q - 1 / E);
        if (q > 0) entropy -= q * Math.log2(q);
        if (count > max) max = count;
      }
      // ΔUniform read as the mean relative deviation (1/E)·Σ_e |q_e − 1/E| / (1/E).
      out[at.delta_uniform + l] = deviation;
      // Eq. 6: L_norm = L / (B·T), all tokens of all sequences.
      const lNorm = probs ? v[L.change + l]! / T : NaN;
      out[at.l_norm + l] = lNorm;
      out[at.bies + l] = hNorm * lNorm;
      out[at.share_entropy + l] = entropy;
      const mean = (k * T) / E;
      out[at.max_vio + l] = (max - mean) / mean;
      out[at.router_entropy + l] = probs ? v[L.entropy + l]! / T / Math.LN2 : NaN;
      out[at.topk_mass + l] = probs ? v[L.topMass + l]! / T : NaN;
      out[at.topk_margin + l] = probs ? v[L.margin + l]! / T : NaN;
    }
    for (const name of SUMMARY_STATISTICS) {
      let sum = 0;
      for (let l = 0; l < M; l++) sum += out[at[name] + l]!;
      out[this.layerMean[name]] = sum / M;
    }
    for (const name of MARGINAL_STATISTICS) {
      let sum = 0;
      for (let l = 0; l < M; l++) sum += out[marginal[name] + l]!;
      out[this.marginalMean[name]] = sum / M;
    }
  }
}

/** Whether per-domain co-activation and flow rows are written (E ≤ 16); `all` always is. */
export function coactivationPerDomain(dims: Dims): boolean {
  return dims.experts <= 16;
}

/** The statistics of a bucket-layout vector and their slots. */
export class BucketStatistics implements Statistics {
  readonly layout: BucketLayout;
  readonly dims: Dims;
  /**
   * [M, E, E−1] co-activation N(i,j)/N(i) of each ordered pair i ≠ j, in
   * (layer, i, j) order; `coactivationAt` finds a pair's slot.
   */
  readonly coactivation: number;
  /** [M−1] mutual information (bits) between a token's first choices at layers l and l+1. */
  readonly flowInformation: number;
  /** Length of the statistics vector. */
  readonly size: number;

  constructor(layout: BucketLayout) {
    this.layout = layout;
    this.dims = layout.dims;
    const { layers: M, experts: E } = layout.dims;
    this.coactivation = 0;
    this.flowInformation = M * E * (E - 1);
    this.size = this.flowInformation + Math.max(0, M - 1);
  }

  /** The slot of the co-activation of j given i (i ≠ j) at layer l. */
  coactivationAt(l: number, i: number, j: number): number {
    const E = this.dims.experts;
    return this.coactivation + (l * E + i) * (E - 1) + (j < i ? j : j - 1);
  }

  /** Writes every statistic of the summed bucket vector `v` into `out` (length `size`). */
  evaluate(v: ArrayLike<number>, out: Float64Array): void {
    const { layers: M, experts: E } = this.dims;
    const B = this.layout;
    // The slots of (l, i, j ≠ i) in order, counted rather than computed in this loop,
    // which runs for every bootstrap resample.
    let pair = this.coactivation;
    for (let l = 0; l < M; l++) {
      for (let i = 0; i < E; i++) {
        const ni = v[B.any + l * E + i]!;
        for (let j = 0; j < E; j++) {
          if (i === j) continue;
          const nij = v[B.coact + l * B.pairCount + B.pairIndex[i * E + j]!]!;
          out[pair++] = nij / ni;
        }
      }
    }
    for (let l = 0; l + 1 < M; l++) {
      out[this.flowInformation + l] = mutualInformation(v, B.flow + l * E * E, E);
    }
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
