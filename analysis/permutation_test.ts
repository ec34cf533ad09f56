import assert from "node:assert/strict";
import { Rng } from "../common/random.ts";
import { benjaminiHochberg, jensenShannon, permutationTest, quantile } from "./permutation.ts";

Deno.test("Benjamini–Hochberg q-values match R's p.adjust(method = 'BH')", () => {
  // Sorted p: 0.005, 0.01, 0.03, 0.04 → ·4/rank: 0.02, 0.02, 0.04, 0.04, then running minima
  // from the top; R: p.adjust(c(0.01, 0.04, 0.03, 0.005), "BH") = 0.02 0.04 0.04 0.02.
  const q = benjaminiHochberg([0.01, 0.04, 0.03, 0.005]);
  q.forEach((x, i) =>
    assert.ok(Math.abs(x - [0.02, 0.04, 0.04, 0.02][i]!) < 1e-12, `q[${i}] = ${x}`)
  );
  assert.deepEqual(benjaminiHochberg([1, 1]), [1, 1]);
});

Deno.test("quantile interpolates linearly (type 7)", () => {
  assert.equal(quantile([1, 2, 3, 4], 0.25), 1.75);
  assert.equal(quantile([1, 2, 3, 4], 0), 1);
  assert.equal(quantile([1, 2, 3, 4], 1), 4);
  assert.ok(Number.isNaN(quantile([], 0.5)));
});

Deno.test("Jensen–Shannon divergence: 0 for equal distributions, 1 bit for disjoint ones", () => {
  assert.equal(jensenShannon([1, 1], [2, 2], 0, 2), 0);
  assert.ok(Math.abs(jensenShannon([1, 0], [0, 5], 0, 2) - 1) < 1e-12);
});

function countsOf(rng: Rng, E: number, tokens: number, bias: number): Float64Array {
  const out = new Float64Array(E);
  for (let t = 0; t < tokens; t++) out[rng.next() < bias ? 0 : rng.int(E)]!++;
  return out;
}

function pool(docs: Float64Array[]): Float32Array {
  const out = new Float32Array(docs.length * docs[0]!.length);
  docs.forEach((d, i) => out.set(d, i * d.length));
  return out;
}

Deno.test("permutation test: p-values roughly uniform under the null, tiny for a real difference", () => {
  const rng = new Rng(42);
  const E = 4;
  const pValues: number[] = [];
  for (let rep = 0; rep < 200; rep++) {
    const docs = Array.from({ length: 16 }, () => countsOf(rng, E, 50, 0));
    const test = permutationTest(8, 8, pool(docs), 1, E, { permutations: 99, seed: rep });
    pValues.push(test.pValue[0]!);
  }
  const mean = pValues.reduce((s, p) => s + p, 0) / pValues.length;
  const small = pValues.filter((p) => p <= 0.05).length / pValues.length;
  assert.ok(mean > 0.4 && mean < 0.6, `mean null p-value ${mean}`);
  assert.ok(small < 0.1, `${small} of null p-values ≤ 0.05`);

  const docs = Array.from({ length: 16 }, (_, d) => countsOf(rng, E, 50, d < 8 ? 0 : 0.3));
  const test = permutationTest(8, 8, pool(docs), 1, E, { permutations: 199, seed: 1 });
  assert.equal(test.pValue[0], 1 / 200);
  assert.ok(test.observed[0]! > 5 * test.nullMean[0]!);
});
