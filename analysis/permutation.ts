/**
 * The permutation test over document labels (domain divergence), the
 * Jensen–Shannon divergence it uses, Benjamini–Hochberg q-values and
 * quantiles. Intervals come from the jackknife (jackknife.ts).
 */
import { Rng } from "../common/random.ts";

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
