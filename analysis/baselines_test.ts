/** The random baselines that have closed forms, checked against known values. */
import assert from "node:assert/strict";
import { choose, overlapProbability } from "./baselines.ts";

function near(actual: number, expected: number, what: string): void {
  assert.ok(Math.abs(actual - expected) < 1e-6, `${what}: got ${actual}, expected ${expected}`);
}

Deno.test("baselines: overlap ≥ 1 is 46.4% for E = 8, k = 2; hypergeometric sums to 1", () => {
  near(1 - overlapProbability(8, 2, 0), 1 - 15 / 28, "1 − C(6,2)/C(8,2)");
  assert.equal((100 * (1 - choose(6, 2) / choose(8, 2))).toFixed(1), "46.4");
  let total = 0;
  for (let j = 0; j <= 8; j++) total += overlapProbability(64, 8, j);
  near(total, 1, "Σ_j P(overlap = j), E = 64, k = 8");
});
