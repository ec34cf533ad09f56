import { deepStrictEqual as assertEquals, ok } from "node:assert";
import { policyOptions } from "./expert_cache.ts";
import { oracleShadowStats } from "./oracle_shadow.ts";
import { createPolicy } from "./policies/mod.ts";
import { OraclePrefetcher } from "./prefetch/mod.ts";
import { replay } from "./replay.ts";
import { syntheticAccessTrace } from "./synthetic.ts";

Deno.test("oracle counters and timing from miss counts equal replaying the oracle prefetcher, late uploads included", () => {
  const trace = syntheticAccessTrace({
    tokens: 3000,
    layers: 3,
    experts: 8,
    topK: 2,
    stickiness: 0.3,
    seed: 8,
  });
  // A slow link (4 ms per upload against 1.5 ms of compute per layer) so that
  // prefetches are often still in flight: late uploads and stalls both occur.
  const slow = { expertBytes: 1, transferMs: 4, expertMs: 0.5, attentionMs: 0.5, otherMs: 0.25 };
  const fast = { expertBytes: 1, transferMs: 0.2, expertMs: 0.5, attentionMs: 0.5, otherMs: 0.25 };
  const serial = { ...slow, serialUploads: true };
  for (const name of ["lru", "fifo", "lfu", "random"] as const) {
    for (const capacity of [2, 3, 5]) {
      const options = policyOptions({ layers: 3, experts: 8, topK: 2, capacity, seed: 2 });
      const shadowed = replay(trace, {
        policy: createPolicy(name, options),
        budget: "per-layer",
        prefetcher: null,
        costs: [],
        oracleCosts: [slow, fast, serial],
      });
      const direct = replay(trace, {
        policy: createPolicy(name, options),
        budget: "per-layer",
        prefetcher: new OraclePrefetcher(trace),
        costs: [slow, fast, serial],
      });
      assertEquals(oracleShadowStats(shadowed.stats, 2), direct.stats, `${name}:${capacity}`);
      direct.timings.forEach((timing, i) => {
        const shadow = shadowed.oracleTimings[i]!;
        const what = `${name}:${capacity} costs ${i}`;
        assertEquals(
          [shadow.now, [...shadow.stallMs], [...shadow.layerMs], [...shadow.late]],
          [timing.now, [...timing.stallMs], [...timing.layerMs], [...timing.late]],
          what,
        );
      });
      const lateTotal = direct.timings[0]!.late.reduce((a, b) => a + b, 0);
      if (capacity === 2 && name === "lru") {
        ok(lateTotal > 0, "the slow link makes prefetches late");
      }
    }
  }
});
