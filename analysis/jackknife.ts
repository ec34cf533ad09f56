/**
 * The delete-one-cluster jackknife, stratified by domain: the intervals and
 * tests of every statistic that has clusters (documents, or buckets of whole
 * documents).
 *
 * A statistic θ is a function of summed sufficient-statistic vectors
 * (statistics.ts). For a stratum h with G_h clusters summing to X_h, θ_(h,j)
 * is θ of the total with cluster j of h taken out and the rest of h weighted
 * by G_h/(G_h − 1), so that the stratum keeps its weight (the survey
 * statistician's JKn; without the reweighting a domain's deletions move a
 * pooled statistic too little and the variance of `all` comes out about
 * ((G − 1)/G)² too small). Every statistic here is a ratio, unchanged when
 * all counts are scaled, so with one stratum this is plain deletion. With
 * θ̄_h the mean of the θ_(h,j),
 *
 *   variance  v = Σ_h (G_h − 1)/G_h · Σ_j (θ_(h,j) − θ̄_h)²
 *   bias      b = Σ_h (G_h − 1) · (θ̄_h − θ)
 *   degrees of freedom (Satterthwaite) ν = v² / Σ_h (v_h² / (G_h − 1))
 *
 * One stratum (a domain's rows) gives ν = G − 1. The (G − 1)/G factor is what
 * a percentile bootstrap of G clusters leaves out, and the t quantiles with ν
 * degrees of freedom are what it replaces with normal tails; for a ratio of
 * sums with equal clusters this is the textbook t interval of the mean. The
 * bias estimate removes the 1/n bias of smooth plug-in statistics (entropy,
 * mutual information, Jensen–Shannon divergence) exactly when it is of the
 * form a/n, which is what those statistics have.
 *
 * When a stratum has more clusters than `maxGroups`, its clusters are dealt
 * round-robin in trace order into `maxGroups` groups and whole groups are
 * deleted (the delete-a-group jackknife), which bounds the cost.
 */
import type { Statistics } from "./statistics.ts";
import { tQuantile } from "./student_t.ts";

/** Clusters of one stratum: `count` vectors of a common length, row after row in `data`. */
export interface ClusterSet {
  count: number;
  data: Float32Array | Float64Array;
}

/** Per statistic slot: the plug-in value, the bias-corrected value, the standard error and its degrees of freedom. */
export interface Jackknife {
  /** θ of the whole sample. */
  value: Float64Array;
  /** θ − b: the jackknife bias-corrected estimate. */
  corrected: Float64Array;
  /** √v; NaN where a stratum has fewer than two clusters or a deleted sample is undefined. */
  se: Float64Array;
  /** Satterthwaite degrees of freedom ν. */
  df: Float64Array;
  /** Groups deleted, over all strata. */
  groups: number;
}

export interface JackknifeOptions {
  /** Groups per stratum at most (default 1000). */
  maxGroups?: number;
}

/**
 * Jackknife of `statistics` over the clusters of `strata`, whose sum is
 * `total` (the sample of the row). A stratum of one cluster shows no
 * sampling variation and is held fixed; with no stratum of two or more
 * clusters, errors and degrees of freedom are NaN.
 */
export function jackknife(
  strata: readonly ClusterSet[],
  total: Float64Array,
  statistics: Statistics,
  options: JackknifeOptions = {},
): Jackknife {
  const size = total.length;
  const S = statistics.size;
  const maxGroups = options.maxGroups ?? 1000;
  const value = new Float64Array(S);
  statistics.evaluate(total, value);
  const bias = new Float64Array(S);
  const variance = new Float64Array(S);
  const dfDenominator = new Float64Array(S);
  const sum = new Float64Array(S);
  const squares = new Float64Array(S);
  const deleted = new Float64Array(size);
  const stratumSum = new Float64Array(size);
  const out = new Float64Array(S);
  let groups = 0;
  let varied = 0;
  for (const stratum of strata) {
    const G = Math.min(stratum.count, maxGroups);
    // A stratum of one cluster shows no sampling variation: it is held fixed.
    if (G < 2) continue;
    groups += G;
    varied++;
    sum.fill(0);
    squares.fill(0);
    stratumSum.fill(0);
    for (let c = 0; c < stratum.count; c++) {
      const at = c * size;
      for (let i = 0; i < size; i++) stratumSum[i]! += stratum.data[at + i]!;
    }
    const weight = G / (G - 1);
    for (let g = 0; g < G; g++) {
      // total − X_h + G/(G − 1)·(X_h − group g): built as X_h − group, then reweighted.
      deleted.set(stratumSum);
      for (let c = g; c < stratum.count; c += G) {
        const at = c * size;
        for (let i = 0; i < size; i++) deleted[i]! -= stratum.data[at + i]!;
      }
      for (let i = 0; i < size; i++) {
        deleted[i] = total[i]! - stratumSum[i]! + weight * deleted[i]!;
      }
      statistics.evaluate(deleted, out);
      for (let s = 0; s < S; s++) {
        // Centred on θ, which keeps the sum of squares free of cancellation.
        const x = out[s]! - value[s]!;
        sum[s]! += x;
        squares[s]! += x * x;
      }
    }
    for (let s = 0; s < S; s++) {
      const mean = sum[s]! / G;
      const vh = ((G - 1) / G) * Math.max(0, squares[s]! - G * mean * mean);
      bias[s]! += (G - 1) * mean;
      variance[s]! += vh;
      dfDenominator[s]! += (vh * vh) / (G - 1);
    }
  }
  const corrected = new Float64Array(S);
  const se = new Float64Array(S);
  const df = new Float64Array(S);
  for (let s = 0; s < S; s++) {
    const ok = groups > 0;
    corrected[s] = value[s]! - bias[s]!;
    se[s] = ok ? Math.sqrt(variance[s]!) : NaN;
    // With no variance at all (every deletion gives θ), ν is the groups' count less strata.
    df[s] = !ok
      ? NaN
      : dfDenominator[s]! > 0
      ? (variance[s]! * variance[s]!) / dfDenominator[s]!
      : Math.max(1, groups - varied);
  }
  return { value, corrected, se, df, groups };
}

/**
 * The two-sided t interval centre ± t_{ν, 1−α/2} · se, with ν rounded down to
 * an integer (a little wider, and it lets the quantiles be cached).
 */
export function tInterval(
  centre: number,
  se: number,
  df: number,
  level = 0.95,
): { low: number; high: number } {
  if (!Number.isFinite(se) || !(df > 0)) return { low: NaN, high: NaN };
  const t = tQuantile(1 - (1 - level) / 2, Math.max(1, Math.floor(df)));
  return { low: centre - t * se, high: centre + t * se };
}
