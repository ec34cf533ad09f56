import { deepStrictEqual as assertEquals, ok } from "node:assert";
import { Rng } from "./random.ts";

Deno.test("Rng draws the xoshiro128** sequence of its SplitMix32-seeded state", () => {
  // Computed with an independent Python implementation of SplitMix32 and
  // xoshiro128** (Blackman & Vigna) on unbounded integers masked to 32 bits.
  const expected: Record<number, number[]> = {
    0: [3809008728, 1133695204, 53579671, 2891528803, 139681546, 2203266335],
    42: [2837322924, 544945897, 479756282, 3500138142, 339756180, 113173290],
    0xffffffff: [835879718, 1921286648, 2356205009],
  };
  for (const [seed, values] of Object.entries(expected)) {
    const rng = new Rng(Number(seed));
    assertEquals(values.map(() => rng.nextU32()), values, `seed ${seed}`);
  }
});

Deno.test("Rng.int stays in range and covers it", () => {
  const rng = new Rng(3);
  const seen = new Array(7).fill(0);
  for (let i = 0; i < 7000; i++) seen[rng.int(7)]++;
  // Each of 7 values about 1000 times: 5 standard deviations is ±140.
  for (const n of seen) ok(Math.abs(n - 1000) < 140, `counts ${seen}`);
});
