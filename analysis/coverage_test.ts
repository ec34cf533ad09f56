/**
 * A small run of the coverage study (`deno task bench coverage` runs the full
 * one): null traces of both shapes, every interval checked against the value
 * uniform routing gives on paper (coverage.ts). Every point estimate lies
 * inside its own interval, every statistic has intervals, the pooled
 * coverage is near 95%, and the statistics the percentile bootstrap failed
 * on (mutual information 8–20%, summary ΔUniform 30–43%) now hold.
 */
import assert from "node:assert/strict";
import { overlapProbability } from "./baselines.ts";
import { emptyTallies, nullLayerValue, nullRouterVectors } from "./coverage.ts";
import { COVERAGE_SHAPES, runCoverage } from "./coverage_bench.ts";

Deno.test("coverage study, small: intervals hold their null values, points sit inside them", async () => {
  const tallies = emptyTallies();
  for (const shape of COVERAGE_SHAPES) {
    await runCoverage(shape, 8, { bootstrap: 99, firstSeed: 9001 }, tallies);
  }
  let cells = 0;
  let covered = 0;
  for (const [family, t] of tallies.intervals) {
    assert.equal(t.outside, 0, `${family}: ${t.outside} points outside their own interval`);
    assert.equal(t.missing, 0, `${family}: ${t.missing} cells without an interval`);
    assert.ok(t.covered / t.cells >= 0.8, `${family}: ${t.covered} of ${t.cells} cover`);
    cells += t.cells;
    covered += t.covered;
  }
  // Hundreds of thousands of cells, most of them co-activations: close to 95%.
  assert.ok(covered / cells > 0.93 && covered / cells < 0.97, `pooled coverage ${covered / cells}`);
  for (const family of ["mutual_information", "summary delta_uniform", "summary share_entropy"]) {
    const t = tallies.intervals.get(family)!;
    assert.ok(t.covered / t.cells >= 0.9, `${family}: ${t.covered} of ${t.cells}`);
  }
  // Every statistic of both shapes was checked, the router ones included.
  for (const family of ["l_norm", "bies", "router_entropy", "jsd one_vs_rest", "coactivation"]) {
    assert.ok(tallies.intervals.has(family), `${family} checked`);
  }
  // Tests at the null reject about 5% (or less: the MI test is conservative).
  for (const [family, t] of tallies.tests) {
    assert.ok(t.rejected / t.tests < 0.12, `${family}: ${t.rejected} of ${t.tests} below 0.05`);
  }
});

Deno.test("null values worked out on paper", () => {
  const A = COVERAGE_SHAPES[0]!;
  // E = 8, k = 2: repeat 1/8, overlap 1 − C(6,2)/C(8,2) = 13/28, replacements 1 − 2/8.
  assert.equal(nullLayerValue("first_choice_repeat", A, 1, 1), 1 / 8);
  assert.ok(Math.abs(nullLayerValue("set_overlap", A, 1, 1) - 13 / 28) < 1e-15);
  assert.equal(nullLayerValue("ex_rep", A, 1, 1), 0.75);
  assert.equal(nullLayerValue("share_entropy", A, 1, 1), 3);
  assert.ok(Math.abs(overlapProbability(8, 2, 2) - 1 / 28) < 1e-15);
  // l_norm by brute force over every pair of permutations of two 3-vectors (E = 3).
  const shape = { ...A, experts: 3, topK: 1 };
  const [a, b] = nullRouterVectors(3);
  const norm = (v: Float32Array) => Array.from(v, (x) => x / v.reduce((s, y) => s + y, 0));
  const perms = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
  let sum = 0;
  let n = 0;
  for (const x of [norm(a!), norm(b!)]) {
    for (const y of [norm(a!), norm(b!)]) {
      for (const p of perms) {
        for (const q of perms) {
          for (let e = 0; e < 3; e++) sum += Math.abs(x[p[e]!]! - y[q[e]!]!);
          n++;
        }
      }
    }
  }
  // Pairs over tokens 9/10: l_norm = E|W_t − W_t−1|₁ · P/T.
  assert.ok(Math.abs(nullLayerValue("l_norm", shape, 9, 10) - (sum / n) * 0.9) < 1e-12);
});
