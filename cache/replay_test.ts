/**
 * Statistical acceptance checks on synthetic traces, with sampling-error bounds.
 *
 * On uniform independent routing the selection of each step is independent of
 * the cache, so every online policy holding c experts of a layer hits each
 * chosen expert with probability c/E. Hits per step are conditionally
 * hypergeometric given the past, so the hit rate over n steps has standard
 * deviation at most sqrt(p(1 − p)/n); we allow 4 of those plus the warm-up
 * (at most c cold misses per layer).
 */
import { deepStrictEqual as assertEquals, ok } from "node:assert";
import { accessCounts, type AccessTrace } from "./access_trace.ts";
import { policyOptions } from "./expert_cache.ts";
import { createPolicy, type PolicyName, traceFutureUses } from "./policies/mod.ts";
import { OraclePrefetcher } from "./prefetch/mod.ts";
import { replay } from "./replay.ts";
import { syntheticAccessTrace } from "./synthetic.ts";

function hitRate(trace: AccessTrace, name: PolicyName, capacity: number): number {
  const options = {
    ...policyOptions({ layers: trace.layers, experts: trace.experts, topK: trace.topK, capacity }),
    future: traceFutureUses(trace),
    counts: accessCounts(trace),
    seed: 5,
  };
  const { stats } = replay(trace, {
    policy: createPolicy(name, options),
    budget: "per-layer",
    prefetcher: null,
    costs: [],
  });
  return stats.hits.reduce((a, b) => a + b, 0) / trace.chosen.length;
}

const UNIFORM = syntheticAccessTrace({ tokens: 20000, layers: 2, experts: 8, topK: 2, seed: 11 });

Deno.test("uniform routing: every online policy hits c/E, Belady strictly more", () => {
  const steps = UNIFORM.tokens * UNIFORM.layers;
  for (const c of [2, 4, 6]) {
    const p = c / 8;
    const tolerance = 4 * Math.sqrt(p * (1 - p) / steps) +
      (c * UNIFORM.layers) / UNIFORM.chosen.length;
    for (const name of ["lru", "fifo", "lfu", "lrfu", "random", "pinned"] as const) {
      const rate = hitRate(UNIFORM, name, c);
      ok(Math.abs(rate - p) <= tolerance, `${name} c=${c}: ${rate} vs ${p} ± ${tolerance}`);
    }
    // Swap keeps k = 2 experts whatever the capacity.
    const swap = hitRate(UNIFORM, "swap", c);
    ok(Math.abs(swap - 2 / 8) <= tolerance, `swap: ${swap}`);
    const belady = hitRate(UNIFORM, "belady", c);
    if (c > 2) ok(belady > p + tolerance, `belady c=${c}: ${belady} not above ${p} + ${tolerance}`);
    else assertEquals(belady, hitRate(UNIFORM, "lru", c)); // at c = k no policy has a choice
  }
});

Deno.test("sticky routing: LRU beats FIFO and approaches Belady as stickiness grows", () => {
  let previousGap = Infinity;
  for (const stickiness of [0.2, 0.5, 0.8, 0.95]) {
    const trace = syntheticAccessTrace({
      tokens: 20000,
      layers: 2,
      experts: 8,
      topK: 2,
      stickiness,
      memory: "geometric",
      seed: 3,
    });
    const lru = hitRate(trace, "lru", 4);
    const fifo = hitRate(trace, "fifo", 4);
    const belady = hitRate(trace, "belady", 4);
    // σ of one hit rate ≤ sqrt(0.25 / 40000) = 0.0025; the gaps are several times that.
    ok(lru > fifo + 0.005, `stickiness ${stickiness}: lru ${lru} vs fifo ${fifo}`);
    const gap = belady - lru;
    ok(
      gap > 0 && gap < previousGap - 0.01,
      `stickiness ${stickiness}: gap ${gap} after ${previousGap}`,
    );
    previousGap = gap;
  }
  ok(previousGap < 0.06, `at stickiness 0.95 LRU is within ${previousGap} of Belady`);
});

Deno.test("oracle prefetch with enough capacity and bandwidth never stalls after the first step", () => {
  const trace = syntheticAccessTrace({ tokens: 2000, layers: 4, experts: 8, topK: 2, seed: 2 });
  // Two uploads (1 ms) finish before the next router decides (2 × 1 ms experts + 1 ms attention).
  const costs = { expertBytes: 1, transferMs: 0.5, expertMs: 1, attentionMs: 1, otherMs: 0.25 };
  for (const capacity of [2, 4, 8]) {
    const result = replay(trace, {
      policy: createPolicy("lru", policyOptions({ layers: 4, experts: 8, topK: 2, capacity })),
      budget: "per-layer",
      prefetcher: new OraclePrefetcher(trace),
      costs: [costs],
    });
    const timing = result.timings[0]!;
    // Only the very first layer of the first token waits: two cold uploads.
    assertEquals([...timing.stallMs], [1, 0, 0, 0]);
    assertEquals([...timing.late], [0, 0, 0, 0]);
    assertEquals([...result.stats.misses], [2, 0, 0, 0]);
    assertEquals(result.stats.prefetchWasted.reduce((a, b) => a + b), 0);
    const accuracy = result.accuracy!;
    assertEquals(
      accuracy.correct.reduce((a, b) => a + b),
      accuracy.predicted.reduce((a, b) => a + b),
    );
  }
});
