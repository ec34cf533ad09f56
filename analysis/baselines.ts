/**
 * Random baselines: what uniform, independent routing gives for each
 * statistic (analytic where a formula exists, simulated for the plug-in
 * statistics that are biased at finite T), or for router statistics the
 * uniform router's value. Every baseline is named after its statistic
 * (statistics.ts).
 */
import { Rng } from "../common/random.ts";
import type { Dims } from "./layout.ts";
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

/** The baseline of every per-layer statistic (and of its layer mean) for a group of `tokens` tokens. */
export function layerBaselines(dims: Dims, tokens: number): Record<LayerStatistic, number> {
  const { experts: E, topK: k } = dims;
  const sim = randomShareBaselines(E, k, tokens);
  const hNorm = (k * (1 - k / E)) / Math.min(k, E - k);
  return {
    first_choice_repeat: 1 / E,
    set_overlap: 1 - overlapProbability(E, k, 0),
    h_norm: hNorm,
    ex_rep: 1 - k / E,
    delta_uniform: sim.deltaUniform,
    l_norm: 1 - k / E,
    bies: hNorm * (1 - k / E),
    share_entropy: sim.entropy,
    max_vio: sim.maxVio,
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

/** Mutual information of independent layers: the plug-in bias (E−1)²/(2N ln 2) bits (Miller–Madow). */
export function flowInformationBaseline(dims: Dims, tokens: number): number {
  const E = dims.experts;
  return ((E - 1) ** 2) / (2 * tokens * Math.LN2);
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
