/**
 * The jackknife on cluster sets worked out on paper: a mean gives the
 * textbook s²/G, the squared mean is corrected to the unbiased x̄² − s²/G,
 * two strata add their variances with Satterthwaite's degrees of freedom,
 * and the delete-a-group jackknife equals the delete-one jackknife of the
 * groups' sums.
 */
import assert from "node:assert/strict";
import { type ClusterSet, jackknife, tInterval } from "./jackknife.ts";
import type { Statistics } from "./statistics.ts";

function near(actual: number, expected: number, what: string): void {
  assert.ok(Math.abs(actual - expected) < 1e-12, `${what}: got ${actual}, expected ${expected}`);
}

/** Vectors [x, 1]: slot 0 the mean Σx/Σ1, slot 1 its square. */
const MEAN: Statistics = {
  size: 2,
  evaluate(v, out) {
    out[0] = v[0]! / v[1]!;
    out[1] = out[0]! * out[0]!;
  },
};

function clusters(xs: number[]): ClusterSet {
  return { count: xs.length, data: Float64Array.from(xs.flatMap((x) => [x, 1])) };
}

function total(sets: ClusterSet[]): Float64Array {
  const out = new Float64Array(2);
  for (const s of sets) for (let i = 0; i < s.data.length; i++) out[i % 2]! += s.data[i]!;
  return out;
}

Deno.test("jackknife of a mean: s²/G with G − 1 degrees of freedom; a squared mean made unbiased", () => {
  // x = 1, 2, 4, 7: mean 3.5, s² = (6.25 + 2.25 + 0.25 + 12.25)/3 = 7, s²/G = 1.75.
  const set = clusters([1, 2, 4, 7]);
  const j = jackknife([set], total([set]), MEAN);
  near(j.value[0]!, 3.5, "mean");
  near(j.corrected[0]!, 3.5, "a mean has no bias");
  near(j.se[0]! ** 2, 1.75, "variance");
  near(j.df[0]!, 3, "df");
  // x̄² = 12.25 is biased by s²/G: the jackknife gives 12.25 − 1.75 = 10.5.
  near(j.corrected[1]!, 10.5, "x̄² − s²/G");
  assert.equal(j.groups, 4);
  const ci = tInterval(3.5, Math.sqrt(1.75), 3);
  // qt(0.975, 3) = 3.182446305.
  assert.ok(Math.abs(ci.high - (3.5 + 3.182446305 * Math.sqrt(1.75))) < 1e-8, "t interval");
});

Deno.test("stratified jackknife: variances add, Satterthwaite df, one-cluster strata held fixed", () => {
  const a = clusters([1, 2, 4, 7]);
  const b = clusters([10, 10, 13]);
  const single = clusters([100]);
  const j = jackknife([a, b, single], total([a, b, single]), MEAN);
  // The statistic is the pooled mean of 8 values. Deleting x from stratum h and weighting
  // the rest of h by G_h/(G_h − 1) keeps 8 values' weight and moves the sum by
  // −G_h(x − x̄_h)/(G_h − 1), so v_h = G_h/(G_h − 1) · Σ (x − x̄_h)²/64: the textbook
  // variance of a stratified mean, G_h·s_h²/N².
  const va = (4 / 3) * 21 / 64; // Σ (x − 3.5)² = 21
  const vb = (3 / 2) * 6 / 64; // x̄ = 11, Σ = 1 + 1 + 4 = 6
  near(j.se[0]! ** 2, va + vb, "variance");
  near(j.df[0]!, (va + vb) ** 2 / (va * va / 3 + vb * vb / 2), "Satterthwaite df");
  assert.equal(j.groups, 7);
});

Deno.test("delete-a-group jackknife equals the delete-one jackknife of the groups' sums", () => {
  const xs = [3, 1, 4, 1, 5, 9, 2, 6];
  const grouped = jackknife([clusters(xs)], total([clusters(xs)]), MEAN, { maxGroups: 3 });
  // Round-robin groups {0,3,6}, {1,4,7}, {2,5}: sums and sizes.
  const sums: ClusterSet = {
    count: 3,
    data: Float64Array.from([3 + 1 + 2, 3, 1 + 5 + 6, 3, 4 + 9, 2]),
  };
  const direct = jackknife([sums], total([sums]), MEAN);
  assert.equal(grouped.groups, 3);
  near(grouped.se[0]!, direct.se[0]!, "se");
  near(grouped.corrected[1]!, direct.corrected[1]!, "bias-corrected");
  const none = jackknife([clusters([5])], total([clusters([5])]), MEAN);
  assert.ok(Number.isNaN(none.se[0]!) && Number.isNaN(none.df[0]!), "one cluster: no error");
});
