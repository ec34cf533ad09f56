/**
 * The largest share under uniform random routing: E[max_e N_e]/n for
 * N ~ Multinomial(n, 1/E), the vocabulary-specialisation baseline of a token
 * id seen n times.
 *
 * Exact for n ≤ `exactLimit` (default 1000), by
 *
 *   E[max] = Σ_{m=0}^{n−1} (1 − P(max ≤ m)),
 *
 * where P(max ≤ m | s tokens) comes from a recursion over experts: the first
 * of j experts gets i ~ Binomial(s, 1/j) of the s tokens and the other j − 1
 * share the rest uniformly, so
 *
 *   a_j(s) = Σ_{i ≤ min(m, s)} Binomial(i; s, 1/j) · a_{j−1}(s − i),  a_1(s) = [s ≤ m].
 *
 * One pass over m gives every n ≤ exactLimit at once; m stops where
 * 1 − P(max ≤ m) < 1e-12 at the largest n (P(max ≤ m | n) falls with n;
 * rounding keeps the complement from getting much smaller).
 * Beyond the limit, the normal approximation n/E + √(n/E)·μ_E (μ_E the
 * expected maximum of E independent standard normals, by quadrature; the
 * multinomial's covariance (n/E)(I − 11ᵀ/E) is that of E independent normals
 * less their mean, which does not move the maximum's offset) plus the
 * difference between exact and approximate at the limit, a constant number of
 * tokens, so the share's error shrinks as 1/n (measured in the test).
 */

export class MaxShareBaseline {
  readonly experts: number;
  readonly exactLimit: number;
  /** [n] E[max_e N_e] for n = 0..computed (exact). */
  #expected: Float64Array = new Float64Array(1);
  #normalMax: number;

  constructor(experts: number, options: { exactLimit?: number } = {}) {
    this.experts = experts;
    // At most 1000: past it (1 − 1/j)^s underflows for j = 2 in the recursion.
    this.exactLimit = Math.min(1000, options.exactLimit ?? 1000);
    this.#normalMax = expectedNormalMax(experts);
  }

  /** Makes E[max] exact for every n ≤ min(n, exactLimit) (a no-op when already done). */
  prepare(n: number): void {
    if (n < this.#expected.length) return;
    // Grown at least twofold, so that rising requests recompute O(log n) times.
    const N = Math.min(Math.max(n, 2 * (this.#expected.length - 1)), this.exactLimit);
    if (N < this.#expected.length) return;
    this.#expected = expectedMaxCounts(this.experts, N);
  }

  /** E[max_e N_e]/n: exact up to the limit, the matched normal approximation beyond. */
  expectedMaxShare(n: number): number {
    if (n <= 0) return NaN;
    const E = this.experts;
    if (E === 1) return 1;
    if (n <= this.exactLimit) {
      this.prepare(n);
      return this.#expected[n]! / n;
    }
    this.prepare(this.exactLimit);
    const N = this.exactLimit;
    const approx = (x: number) => x / E + Math.sqrt(x / E) * this.#normalMax;
    const offset = this.#expected[N]! - approx(N);
    return Math.min(1, (approx(n) + offset) / n);
  }
}

/** [n] E[max_e N_e] for N ~ Multinomial(n, 1/E), n = 0..N, exactly (see the file comment). */
export function expectedMaxCounts(E: number, N: number): Float64Array {
  const expected = new Float64Array(N + 1);
  if (E === 1) {
    for (let n = 0; n <= N; n++) expected[n] = n;
    return expected;
  }
  let previous = new Float64Array(N + 1);
  let current = new Float64Array(N + 1);
  for (let m = 0; m < N; m++) {
    // a_1(s) = [s ≤ m], then the recursion over experts.
    for (let s = 0; s <= N; s++) previous[s] = s <= m ? 1 : 0;
    for (let j = 2; j <= E; j++) {
      const p = 1 / j;
      const ratio = p / (1 - p);
      const logQ = Math.log(1 - p);
      const logRatio = Math.log(ratio);
      // No more than j·m tokens fit under the cap.
      const top = Math.min(N, j * m);
      for (let s = 0; s <= N; s++) {
        if (s > top) {
          current[s] = 0;
          continue;
        }
        // Binomial(i; s, p) from i = 0, in logs while it is too small to matter (which
        // also keeps denormal numbers, slow on every CPU, out of the loop).
        let logB = s * logQ;
        let b = 0;
        let sum = 0;
        const last = Math.min(m, s);
        for (let i = 0; i <= last; i++) {
          if (b === 0) {
            if (logB > -600) b = Math.exp(logB);
            else {
              logB += Math.log((s - i) / (i + 1)) + logRatio;
              continue;
            }
          }
          sum += b * previous[s - i]!;
          b *= ((s - i) / (i + 1)) * ratio;
          // Past the mode the terms only shrink.
          if (b < 1e-280 && i > s * p) break;
        }
        current[s] = sum < 1e-280 ? 0 : sum;
      }
      [previous, current] = [current, previous];
    }
    // previous[n] = P(max ≤ m | n); its complement adds to E[max | n] for every n > m.
    for (let n = m + 1; n <= N; n++) expected[n]! += 1 - previous[n]!;
    if (1 - previous[N]! < 1e-12) break;
  }
  return expected;
}

/**
 * E[max of E independent standard normals] = ∫ x · d(Φ(x)^E), by the
 * trapezoid rule on [−12, 12] with Φ integrated along the same grid
 * (Simpson steps from 0).
 */
export function expectedNormalMax(E: number): number {
  const h = 1e-3;
  const n = 12000;
  const phi = (x: number) => Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);
  // Φ at x = i·h for i = 0..n by composite Simpson on each step (midpoint rule inside).
  const cdf = new Float64Array(n + 1);
  cdf[0] = 0.5;
  for (let i = 1; i <= n; i++) {
    const a = (i - 1) * h;
    cdf[i] = cdf[i - 1]! + (h / 6) * (phi(a) + 4 * phi(a + h / 2) + phi(a + h));
  }
  const Phi = (i: number) => (i >= 0 ? cdf[i]! : 1 - cdf[-i]!);
  // E[max] = ∫_0^∞ (1 − Φ^E) dx − ∫_−∞^0 Φ^E dx.
  let upper = 0;
  let lower = 0;
  for (let i = 0; i < n; i++) {
    upper += (h / 2) * ((1 - Phi(i) ** E) + (1 - Phi(i + 1) ** E));
    lower += (h / 2) * (Phi(-i) ** E + Phi(-i - 1) ** E);
  }
  return upper - lower;
}
