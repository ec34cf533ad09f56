/**
 * ΔUniform and MaxVio, the two statistics of how far the expert shares are
 * from 1/E: value, interval and a uniformity test from simultaneous
 * intervals of the shares.
 *
 * Under uniform routing both are 0, the edge of their range, where a
 * resampling interval of the plug-in is not consistent (the plug-in is biased
 * upwards by about √(2/π)·se per expert, and the bias does not shrink when
 * layers are averaged). Both are functions of the deviations d_e = q_e − 1/E
 * of the top-k assignment shares q_e, so:
 *
 * - Interval: each q_e gets a jackknife t interval with the Bonferroni level
 *   0.05/m (m = E for one layer, M·E for a mean over layers); a share seen 0
 *   times gets [0, ln(m/0.05)/n], the rule of three at that level. Together
 *   they hold every d_e with probability ≥ 95%, and the statistic's interval
 *   is its smallest and largest value over that box, so it covers the true
 *   value with at least that probability, under uniform routing or not.
 * - Value: the statistic of the deviations shrunk by their own sampling
 *   variance, sign(d̂)·√max(0, d̂² − se²) (d̂² − se² is unbiased for d²); it
 *   always lies inside the interval.
 * - Test: p = min(1, m · min_e p_e) with p_e the two-sided t test of d_e = 0
 *   (Bonferroni), so the interval excludes 0 exactly when p < 0.05.
 */
import type { Jackknife } from "./jackknife.ts";
import type { DocStatistics } from "./statistics.ts";
import { tQuantile, tTwoSided } from "./student_t.ts";

export interface ShareDeviation {
  /** Shrunk-deviation estimate. */
  value: number;
  /** The statistic of the plug-in shares (what the papers report). */
  plugIn: number;
  low: number;
  high: number;
  /** Bonferroni uniformity test. */
  pValue: number;
}

/**
 * ΔUniform (Σ_e |q_e − 1/E|, the mean relative deviation) and MaxVio
 * (E · max_e (q_e − 1/E)) of one row, at the layer indices `layers` (one, or
 * all of them for the summary's mean over layers).
 */
export function shareDeviations(
  S: DocStatistics,
  values: Float64Array,
  jack: Jackknife | null,
  tokens: number,
  layers: readonly number[],
): { delta_uniform: ShareDeviation; max_vio: ShareDeviation } {
  const { experts: E, topK: k } = S.dims;
  const m = layers.length * E;
  const n = k * tokens;
  const sums = {
    delta_uniform: { value: 0, plugIn: 0, low: 0, high: 0 },
    max_vio: { value: 0, plugIn: 0, low: 0, high: 0 },
  };
  let minP = 1;
  for (const l of layers) {
    let deltaValue = 0;
    let deltaPlug = 0;
    let deltaLow = 0;
    let deltaHigh = 0;
    let maxShrunk = 0;
    let maxPlug = -Infinity;
    let maxLow = -Infinity;
    let maxHigh = -Infinity;
    for (let e = 0; e < E; e++) {
      const slot = S.shares.top_k + l * E + e;
      const q = values[slot]!;
      const d = q - 1 / E;
      const se = jack ? jack.se[slot]! : NaN;
      const df = jack ? jack.df[slot]! : NaN;
      let lo: number;
      let hi: number;
      let p: number;
      if (q === 0 && se === 0) {
        // Never chosen: the rule of three at level 0.05/m, and P(no token picks e).
        lo = 0;
        hi = Math.min(1, Math.log(m / 0.05) / n);
        p = Math.pow(1 - k / E, tokens);
      } else if (se === 0) {
        lo = q;
        hi = q;
        p = d === 0 ? 1 : 0;
      } else {
        const c = tQuantile(1 - 0.025 / m, Math.max(1, Math.floor(df)));
        lo = Math.max(0, q - c * se);
        hi = Math.min(1, q + c * se);
        p = tTwoSided(d / se, df);
      }
      minP = Math.min(minP, p);
      const shrunk = Math.sign(d) * Math.sqrt(Math.max(0, d * d - (se === se ? se * se : 0)));
      deltaValue += Math.abs(shrunk);
      deltaPlug += Math.abs(d);
      deltaLow += Math.max(0, lo - 1 / E, 1 / E - hi);
      deltaHigh += Math.max(Math.abs(lo - 1 / E), Math.abs(hi - 1 / E));
      maxShrunk = Math.max(maxShrunk, shrunk);
      maxPlug = Math.max(maxPlug, d);
      maxLow = Math.max(maxLow, lo - 1 / E);
      maxHigh = Math.max(maxHigh, hi - 1 / E);
    }
    sums.delta_uniform.value += deltaValue;
    sums.delta_uniform.plugIn += deltaPlug;
    sums.delta_uniform.low += deltaLow;
    sums.delta_uniform.high += deltaHigh;
    sums.max_vio.value += E * maxShrunk;
    sums.max_vio.plugIn += E * maxPlug;
    sums.max_vio.low += E * Math.max(0, maxLow);
    sums.max_vio.high += E * Math.max(0, maxHigh);
  }
  const L = layers.length;
  const pValue = jack ? Math.min(1, m * minP) : NaN;
  const finish = (x: { value: number; plugIn: number; low: number; high: number }) => ({
    value: jack ? x.value / L : x.plugIn / L,
    plugIn: x.plugIn / L,
    low: jack ? x.low / L : NaN,
    high: jack ? x.high / L : NaN,
    pValue,
  });
  return { delta_uniform: finish(sums.delta_uniform), max_vio: finish(sums.max_vio) };
}
