/**
 * Baselines, named after their statistics (statistics.ts).
 *
 * - Uniform: what uniform random, independent routing gives (each token's
 *   top-k an independent uniformly random k-subset), the population value, as
 *   the papers use it (1/E shares, Mixtral's 46.4% overlap for top-2 of 8);
 *   for router-distribution statistics, the uniform router's value (W_t = 1/E
 *   for every token). The values compared with them are unbiased or
 *   bias-corrected, so no finite-sample version is needed.
 * - Marginal-preserving: what the same trace gives once the link between a
 *   token and its neighbours (or its own other experts) is broken but each
 *   document keeps its expert counts. The within-document shuffle
 *   expectations of the pair statistics come from the pass (shuffle.ts);
 *   co-activation, which a token shuffle leaves unchanged, gets the
 *   popularity-adjusted value here.
 */
import type { Dims, DocLayout } from "./layout.ts";
import type { Choice, LayerStatistic } from "./statistics.ts";

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

/** The uniform baseline of every per-layer statistic (and of its layer mean). */
export function layerBaselines(dims: Dims): Record<LayerStatistic, number> {
  const { experts: E, topK: k } = dims;
  return {
    first_choice_repeat: 1 / E,
    set_overlap: 1 - overlapProbability(E, k, 0),
    // E|S_t \ S_t−1| = k − k²/E (the overlap's hypergeometric mean), over k.
    h_norm: 1 - k / E,
    ex_rep: 1 - k / E,
    delta_uniform: 0,
    // A uniform router's W_t is the same for every token.
    l_norm: 0,
    bies: 0,
    share_entropy: Math.log2(E),
    max_vio: 0,
    router_entropy: Math.log2(E),
    topk_mass: k / E,
    topk_margin: 0,
  };
}

/** An expert's share: 1/E of tokens or assignments; k/E of tokens have it in their top-k. */
export function shareBaseline(dims: Dims, choice: Choice): number {
  const { experts: E, topK: k } = dims;
  return choice === "token_fraction" ? k / E : 1 / E;
}

/** Co-activation N(i,j)/N(i): the other k − 1 experts are any of the E − 1 others. */
export function coactivationBaseline(dims: Dims): number {
  const { experts: E, topK: k } = dims;
  return (k - 1) / (E - 1);
}

/** Document-layer-expert-pair products the popularity-adjusted co-activation may take per document. */
const COACTIVATION_BUDGET = 2e8;

/**
 * The popularity-adjusted co-activation of every ordered pair, [M, E, E]
 * (diagonal NaN): each document's tokens fill the k − 1 places beside expert
 * i in proportion to the document's other experts' assignment counts,
 *
 *   E[N(i,j)] = Σ_d c_d(i) · (k − 1) · c_d(j) / (k·T_d − c_d(i)),
 *
 * over N(i) = Σ_d c_d(i). Uniform routing gives (k − 1)/(E − 1); a popular j
 * raises it, so coactivation above it is pairing beyond popularity. Past a
 * cost budget (documents × M × E² > 2·10^8) the documents of the row are
 * pooled into one (`perDocument` false).
 */
export function coactivationMarginal(
  layout: DocLayout,
  docs: readonly { count: number; data: Float32Array }[],
): { values: Float64Array; perDocument: boolean } {
  const { layers: M, experts: E, topK: k } = layout.dims;
  const values = new Float64Array(M * E * E);
  const n = docs.reduce((s, d) => s + d.count, 0);
  const perDocument = n * M * E * E <= COACTIVATION_BUDGET;
  const expected = new Float64Array(M * E * E);
  const ni = new Float64Array(M * E);
  const pooled = new Float64Array(M * E + 1);
  const add = (counts: ArrayLike<number>, from: number, tokens: number) => {
    for (let l = 0; l < M; l++) {
      for (let i = 0; i < E; i++) {
        const ci = counts[from + l * E + i]!;
        if (ci === 0) continue;
        ni[l * E + i]! += ci;
        const factor = (ci * (k - 1)) / (k * tokens - ci);
        for (let j = 0; j < E; j++) {
          if (j !== i) expected[(l * E + i) * E + j]! += factor * counts[from + l * E + j]!;
        }
      }
    }
  };
  for (const set of docs) {
    for (let d = 0; d < set.count; d++) {
      const at = d * layout.size;
      if (perDocument) add(set.data, at + layout.any, set.data[at + layout.tokens]!);
      else {
        for (let i = 0; i < M * E; i++) pooled[i]! += set.data[at + layout.any + i]!;
        pooled[M * E]! += set.data[at + layout.tokens]!;
      }
    }
  }
  if (!perDocument) add(pooled, 0, pooled[M * E]!);
  for (let l = 0; l < M; l++) {
    for (let i = 0; i < E; i++) {
      for (let j = 0; j < E; j++) {
        const at = (l * E + i) * E + j;
        values[at] = i === j ? NaN : expected[at]! / ni[l * E + i]!;
      }
    }
  }
  return { values, perDocument };
}
