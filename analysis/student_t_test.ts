/**
 * Student's t against closed forms (df = 1 is the Cauchy distribution, df = 2
 * has F(t) = 1/2 + t/(2√(2 + t²))), against a Simpson integration of the
 * density written here, and against quantiles printed by R's qt().
 */
import assert from "node:assert/strict";
import { lnGamma, tCdf, tQuantile, tTwoSided } from "./student_t.ts";

function near(actual: number, expected: number, tolerance: number, what: string): void {
  assert.ok(
    Math.abs(actual - expected) <= tolerance,
    `${what}: got ${actual}, expected ${expected}`,
  );
}

Deno.test("lnGamma: Γ(n) = (n − 1)! and Γ(1/2) = √π", () => {
  near(lnGamma(1), 0, 1e-13, "Γ(1)");
  near(lnGamma(5), Math.log(24), 1e-13, "Γ(5)");
  near(lnGamma(0.5), 0.5 * Math.log(Math.PI), 1e-13, "Γ(1/2)");
  near(lnGamma(20.5), Math.log(Math.sqrt(Math.PI)) + sumLog(20), 1e-10, "Γ(20.5)");
});

/** ln Γ(n + 1/2) − ln Γ(1/2) = Σ_{i=0}^{n−1} ln(i + 1/2). */
function sumLog(n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += Math.log(i + 0.5);
  return s;
}

Deno.test("t CDF and quantile: closed forms at df = 1 and df = 2", () => {
  for (const t of [-30, -3, -1, -0.2, 0, 0.7, 2, 12.7]) {
    near(tCdf(t, 1), 0.5 + Math.atan(t) / Math.PI, 1e-13, `Cauchy F(${t})`);
    near(tCdf(t, 2), 0.5 + t / (2 * Math.sqrt(2 + t * t)), 1e-13, `df 2 F(${t})`);
  }
  for (const q of [0.6, 0.9, 0.975, 0.999, 1 - 1e-6]) {
    near(tQuantile(q, 1), Math.tan(Math.PI * (q - 0.5)), 1e-9 * tQuantile(q, 1), `Cauchy q ${q}`);
    const a = 2 * q - 1;
    near(tQuantile(q, 2), a * Math.sqrt(2 / (1 - a * a)), 1e-9 * tQuantile(q, 2), `df 2 q ${q}`);
  }
  near(tQuantile(0.025, 1), -Math.tan(Math.PI * 0.475), 1e-9, "lower tail");
});

/** P(T ≤ t) by Simpson's rule on the density from 0 to t (F(0) = 1/2). */
function simpsonCdf(t: number, df: number): number {
  const c = Math.exp(lnGamma((df + 1) / 2) - lnGamma(df / 2)) / Math.sqrt(df * Math.PI);
  const f = (x: number) => c * Math.pow(1 + (x * x) / df, -(df + 1) / 2);
  const n = 20000;
  const h = t / n;
  let s = f(0) + f(t);
  for (let i = 1; i < n; i++) s += (i % 2 === 1 ? 4 : 2) * f(i * h);
  return 0.5 + (s * h) / 3;
}

Deno.test("t CDF agrees with a numerical integration of the density, fractional df included", () => {
  for (const df of [3, 9, 9.5, 36, 200]) {
    for (const t of [0.3, 1.5, 2.262, 4]) {
      near(tCdf(t, df), simpsonCdf(t, df), 1e-10, `F(${t}; ${df})`);
    }
  }
  near(tTwoSided(2, 9), 2 * (1 - tCdf(2, 9)), 1e-14, "two-sided p");
});

Deno.test("t quantiles match R's qt()", () => {
  // R 4.3: qt(0.975, c(9, 36, 1)), qt(0.995, 9).
  near(tQuantile(0.975, 9), 2.262157163, 1e-8, "qt(.975, 9)");
  near(tQuantile(0.975, 36), 2.028094001, 1e-8, "qt(.975, 36)");
  near(tQuantile(0.975, 1), 12.70620474, 1e-7, "qt(.975, 1)");
  near(tQuantile(0.995, 9), 3.249835542, 1e-8, "qt(.995, 9)");
  // The normal limit: qnorm(0.975) = 1.959963985.
  near(tQuantile(0.975, 1e7), 1.959963985, 1e-6, "df → ∞");
});
