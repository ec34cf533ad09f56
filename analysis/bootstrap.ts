/**
 * Resampling: the cluster bootstrap over documents (or buckets of documents),
 * the permutation test over document labels, and Benjamini–Hochberg q-values.
 *
 * The bootstrap never touches tokens: a resample of a domain draws its n
 * clusters n times with replacement (multinomial multiplicities) and sums
 * their sufficient-statistic vectors with those multiplicities. Per-domain
 * rows resample within the domain; the `all` row is the sum of the domains'
 * resamples (a bootstrap stratified by domain, which keeps the corpus mix fixed).
 */
import { Rng } from "../common/random.ts";

/** Clusters of one domain: `count` vectors of a common length, row after row in `data`. */
export interface ClusterSet {
  count: number;
  data: Float32Array | Float64Array;
}

/** Percentile interval bounds per statistic; NaN where undefined. */
export interface Intervals {
  low: Float64Array;
  high: Float64Array;
}

export interface BootstrapOptions {
  /** Resamples (N). */
  resamples: number;
  seed: number;
  /** Confidence level (default 0.95). */
  level?: number;
  /** Evaluate per-domain statistics (default true); the `all` row always is. */
  perDomain?: boolean;
  /** Called with each domain's resampled vector (b = resample index). */
  onResample?: ((domain: number, b: number, vector: Float64Array) => void) | undefined;
}

export interface BootstrapResult {
  /** Per domain (null where not evaluated or the domain has no clusters). */
  domains: (Intervals | null)[];
  all: Intervals;
  resamples: number;
}

/**
 * Cluster bootstrap. `evaluate(vector, out)` writes the `statCount`
 * statistics of a summed vector of length `size` into `out`.
 */
export function clusterBootstrap(
  sets: readonly ClusterSet[],
  size: number,
  statCount: number,
  evaluate: (vector: Float64Array, out: Float64Array) => void,
  options: BootstrapOptions,
): BootstrapResult {
  const B = options.resamples;
  const level = options.level ?? 0.95;
  const perDomain = options.perDomain ?? true;
  const rng = new Rng(options.seed);
  const evaluated = sets.map((s) => perDomain && s.count > 0);
  const matrices = sets.map((_, d) => evaluated[d] ? new Float64Array(statCount * B) : null);
  const allMatrix = new Float64Array(statCount * B);
  const vector = new Float64Array(size);
  const all = new Float64Array(size);
  const out = new Float64Array(statCount);
  const maxCount = Math.max(1, ...sets.map((s) => s.count));
  const weights = new Int32Array(maxCount);
  for (let b = 0; b < B; b++) {
    all.fill(0);
    for (let d = 0; d < sets.length; d++) {
      const set = sets[d]!;
      const n = set.count;
      if (n === 0) continue;
      weights.fill(0, 0, n);
      for (let i = 0; i < n; i++) weights[rng.int(n)]!++;
      vector.fill(0);
      if (set.data instanceof Float32Array) addRowsF32(vector, set.data, weights, n);
      else addRowsF64(vector, set.data, weights, n);
      for (let i = 0; i < size; i++) all[i]! += vector[i]!;
      options.onResample?.(d, b, vector);
      const matrix = matrices[d];
      if (matrix) {
        evaluate(vector, out);
        for (let s = 0; s < statCount; s++) matrix[s * B + b] = out[s]!;
      }
    }
    evaluate(all, out);
    for (let s = 0; s < statCount; s++) allMatrix[s * B + b] = out[s]!;
  }
  return {
    domains: matrices.map((m) => m ? percentiles(m, statCount, B, level) : null),
    all: percentiles(allMatrix, statCount, B, level),
    resamples: B,
  };
}

// Two copies of one loop, so that each sees a single array type and stays fast.

/** vector += Σ_c weights[c] · row c of data (rows of vector.length). */
function addRowsF32(
  vector: Float64Array,
  data: Float32Array,
  weights: Int32Array,
  n: number,
): void {
  const size = vector.length;
  for (let c = 0; c < n; c++) {
    const w = weights[c]!;
    if (w === 0) continue;
    const at = c * size;
    for (let i = 0; i < size; i++) vector[i]! += w * data[at + i]!;
  }
}

/** vector += Σ_c weights[c] · row c of data (rows of vector.length). */
function addRowsF64(
  vector: Float64Array,
  data: Float64Array,
  weights: Int32Array,
  n: number,
): void {
  const size = vector.length;
  for (let c = 0; c < n; c++) {
    const w = weights[c]!;
    if (w === 0) continue;
    const at = c * size;
    for (let i = 0; i < size; i++) vector[i]! += w * data[at + i]!;
  }
}

/** Percentile intervals of each row of a [stats, B] matrix (NaN values dropped). */
export function percentiles(
  matrix: Float64Array,
  stats: number,
  B: number,
  level: number,
): Intervals {
  const low = new Float64Array(stats).fill(NaN);
  const high = new Float64Array(stats).fill(NaN);
  const row = new Float64Array(B);
  for (let s = 0; s < stats; s++) {
    let n = 0;
    for (let b = 0; b < B; b++) {
      const x = matrix[s * B + b]!;
      if (!Number.isNaN(x)) row[n++] = x;
    }
    if (n === 0) continue;
    const sorted = row.subarray(0, n).sort();
    low[s] = quantile(sorted, (1 - level) / 2);
    high[s] = quantile(sorted, 1 - (1 - level) / 2);
  }
  return { low, high };
}

/** Quantile of sorted values with linear interpolation (Hyndman–Fan type 7). */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  const h = (n - 1) * q;
  const lo = Math.floor(h);
  const hi = Math.min(n - 1, lo + 1);
  return sorted[lo]! + (h - lo) * (sorted[hi]! - sorted[lo]!);
}

/** Benjamini–Hochberg q-values (step-up adjusted p-values), in the input order. */
export function benjaminiHochberg(pValues: readonly number[]): number[] {
  const m = pValues.length;
  const order = pValues.map((p, i) => [p, i] as const).sort((a, b) => a[0] - b[0]);
  const q = new Array<number>(m);
  let running = 1;
  for (let r = m - 1; r >= 0; r--) {
    const [p, i] = order[r]!;
    running = Math.min(running, (p * m) / (r + 1));
    q[i] = running;
  }
  return q;
}

/** Jensen–Shannon divergence in bits between two count (or share) vectors, each normalised. */
export function jensenShannon(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  from: number,
  n: number,
): number {
  let sa = 0;
  let sb = 0;
  for (let i = 0; i < n; i++) {
    sa += a[from + i]!;
    sb += b[from + i]!;
  }
  if (sa <= 0 || sb <= 0) return NaN;
  let js = 0;
  for (let i = 0; i < n; i++) {
    const p = a[from + i]! / sa;
    const q = b[from + i]! / sb;
    const m = (p + q) / 2;
    if (p > 0) js += 0.5 * p * Math.log2(p / m);
    if (q > 0) js += 0.5 * q * Math.log2(q / m);
  }
  return Math.max(0, js);
}

export interface PermutationResult {
  /** [layers] observed JSD in bits. */
  observed: Float64Array;
  /** [layers] mean JSD over permutations: the divergence expected with no domain effect. */
  nullMean: Float64Array;
  /** [layers] (1 + #{perm ≥ observed}) / (1 + permutations). */
  pValue: Float64Array;
  permutations: number;
}

/**
 * Permutation test for a difference between two domains' expert
 * distributions, per layer: the documents of both are pooled and split at
 * random into groups of the original sizes. `pooled` holds one row of
 * [layers, experts] counts per document, group A's documents first.
 */
export function permutationTest(
  countA: number,
  countB: number,
  pooled: Float32Array,
  layers: number,
  experts: number,
  options: { permutations: number; seed: number },
): PermutationResult {
  const n = countA + countB;
  const width = layers * experts;
  const total = new Float64Array(width);
  const groupA = new Float64Array(width);
  const groupB = new Float64Array(width);
  for (let d = 0; d < n; d++) {
    for (let i = 0; i < width; i++) {
      const x = pooled[d * width + i]!;
      total[i]! += x;
      if (d < countA) groupA[i]! += x;
    }
  }
  const divergences = (out: Float64Array) => {
    for (let i = 0; i < width; i++) groupB[i] = total[i]! - groupA[i]!;
    for (let l = 0; l < layers; l++) {
      out[l] = jensenShannon(groupA, groupB, l * experts, experts);
    }
  };
  const observed = new Float64Array(layers);
  divergences(observed);
  const exceed = new Float64Array(layers);
  const nullMean = new Float64Array(layers);
  const current = new Float64Array(layers);
  const order = Int32Array.from({ length: n }, (_, i) => i);
  const rng = new Rng(options.seed);
  const P = options.permutations;
  // Sum the smaller group: fewer documents to add per permutation.
  const small = Math.min(countA, countB);
  for (let p = 0; p < P; p++) {
    for (let i = 0; i < small; i++) {
      const j = i + rng.int(n - i);
      const t = order[i]!;
      order[i] = order[j]!;
      order[j] = t;
    }
    groupA.fill(0);
    for (let i = 0; i < small; i++) {
      const at = order[i]! * width;
      for (let c = 0; c < width; c++) groupA[c]! += pooled[at + c]!;
    }
    if (small !== countA) {
      // groupA holds countB documents: swap roles (JSD is symmetric).
      for (let c = 0; c < width; c++) groupA[c] = total[c]! - groupA[c]!;
    }
    divergences(current);
    for (let l = 0; l < layers; l++) {
      nullMean[l]! += current[l]! / P;
      if (current[l]! >= observed[l]! - 1e-12) exceed[l]!++;
    }
  }
  const pValue = exceed.map((e) => (1 + e) / (1 + P));
  return { observed, nullMean, pValue, permutations: P };
}
