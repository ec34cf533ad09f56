/**
 * The exact largest-share baseline against brute force (every sequence of
 * choices enumerated for small n), and the normal approximation beyond the
 * exact range against the exact values it extends.
 */
import assert from "node:assert/strict";
import { expectedMaxCounts, expectedNormalMax, MaxShareBaseline } from "./max_share.ts";

/** E[max_e N_e] by enumerating all E^n equally likely sequences of choices. */
function bruteForce(E: number, n: number): number {
  const counts = new Array<number>(E).fill(0);
  let total = 0;
  const visit = (depth: number) => {
    if (depth === n) {
      total += Math.max(...counts);
      return;
    }
    for (let e = 0; e < E; e++) {
      counts[e]!++;
      visit(depth + 1);
      counts[e]!--;
    }
  };
  visit(0);
  return total / E ** n;
}

Deno.test("expected largest count matches enumeration of every sequence", () => {
  for (const [E, N] of [[2, 9], [3, 7], [8, 6], [5, 6]] as const) {
    const exact = expectedMaxCounts(E, N);
    for (let n = 1; n <= N; n++) {
      const brute = bruteForce(E, n);
      assert.ok(Math.abs(exact[n]! - brute) < 1e-12, `E ${E} n ${n}: ${exact[n]} vs ${brute}`);
    }
  }
  // By hand: E = 2, n = 2: max is 2 with probability 1/2, else 1 → 1.5.
  assert.ok(Math.abs(expectedMaxCounts(2, 2)[2]! - 1.5) < 1e-15);
});

Deno.test("expected maximum of normals: 1/√π for two, 1.0294 for four, 1.4236 for eight", () => {
  // E[max(Z1, Z2)] = 1/√π; tabulated: 1.029375 (4), 1.423600 (8).
  assert.ok(Math.abs(expectedNormalMax(2) - 1 / Math.sqrt(Math.PI)) < 1e-9);
  assert.ok(Math.abs(expectedNormalMax(4) - 1.029375) < 1e-6);
  assert.ok(Math.abs(expectedNormalMax(8) - 1.4236) < 1e-4);
});

Deno.test("past the exact range the matched normal approximation stays within 1e-4 of exact", () => {
  for (const E of [8, 64]) {
    const exact = expectedMaxCounts(E, 1000);
    // Approximate from a limit of 400 and compare with the exact values up to 1000.
    const baseline = new MaxShareBaseline(E, { exactLimit: 400 });
    for (const n of [401, 600, 1000]) {
      const share = baseline.expectedMaxShare(n);
      assert.ok(
        Math.abs(share - exact[n]! / n) < 1e-4,
        `E ${E} n ${n}: ${share} vs ${exact[n]! / n}`,
      );
    }
    assert.ok(Math.abs(baseline.expectedMaxShare(300) - exact[300]! / 300) < 1e-12, "exact below");
  }
});
