import { deepStrictEqual as assertEquals } from "node:assert";
import { accessTraceOf } from "./access_trace.ts";
import { createPolicy } from "./policies/mod.ts";
import { policyOptions } from "./expert_cache.ts";
import { SpeculativePrefetcher } from "./prefetch/mod.ts";
import { replay } from "./replay.ts";
import { NO_EXPERT as NO } from "../trace/mod.ts";

/**
 * Top-1, 4 experts, LRU with 1 slot per layer. Token 0 picks 0 then 1, token
 * 1 picks 0 then 1 again. At layer 0 the speculative pick for layer 1 is 1.
 * Attention 1 ms, expert 2 ms, upload 5 ms, other 0.5 ms per token.
 */
function handExample(serialUploads: boolean) {
  const trace = accessTraceOf([[[0], [1]], [[0], [1]]], {
    experts: 4,
    spec: [[[[1]], [[NO]]], [[[1]], [[NO]]]],
  });
  const costs = {
    expertBytes: 1000,
    transferMs: 5,
    expertMs: 2,
    attentionMs: 1,
    otherMs: 0.5,
    serialUploads,
  };
  return replay(trace, {
    policy: createPolicy("lru", policyOptions({ layers: 2, experts: 4, topK: 1, capacity: 1 })),
    budget: "per-layer",
    prefetcher: new SpeculativePrefetcher(trace, 1),
    costs: [costs],
  });
}

Deno.test("timing: hand-computed example, two layers, two tokens, one miss, one late prefetch", () => {
  const result = handExample(false);
  // t0 L0: router at 1; miss on 0 uploads 1→6; prefetch of 1 queues behind it, 6→11;
  //        stall 5, compute 6→8.
  // t0 L1: router at 9; expert 1 in flight until 11: used late, stall 2; compute 11→13.
  //        other 13→13.5.
  // t1 L0: router at 14.5, hit (resident since 6), compute →16.5; prediction 1 already cached.
  // t1 L1: router at 17.5, hit, compute →19.5; other →20.
  const timing = result.timings[0]!;
  assertEquals(timing.now, 20);
  assertEquals([...timing.stallMs], [5, 2]);
  assertEquals([...timing.layerMs], [1 + 5 + 2 + 1 + 2, 1 + 2 + 2 + 1 + 2]);
  assertEquals([...timing.late], [0, 1]);
  assertEquals([...result.stats.misses], [1, 0]);
  assertEquals([...result.stats.hits], [1, 2]);
  assertEquals([...result.stats.prefetchIssued], [0, 1]);
  assertEquals([...result.stats.prefetchUsed], [0, 1]);
  assertEquals([...result.stats.prefetchWasted], [0, 0]);
});

Deno.test("timing: the same example when uploads share the compute queue (uploads_overlap_compute false)", () => {
  const result = handExample(true);
  // t0 L0: router at 1; miss on 0 uploads 1→6, prefetch of 1 6→11, and the
  //        layer waits for both: stall 10, compute 11→13.
  // t0 L1: router at 14; expert 1 resident since 11: in time, no stall; compute →16; other →16.5.
  // t1 L0: router at 17.5, hit, compute →19.5. t1 L1: router at 20.5, hit, →22.5; other →23.
  const timing = result.timings[0]!;
  assertEquals(timing.now, 23);
  assertEquals([...timing.stallMs], [10, 0]);
  assertEquals([...timing.layerMs], [1 + 10 + 2 + 1 + 2, 1 + 2 + 1 + 2]);
  assertEquals([...timing.late], [0, 0]);
});

Deno.test("timing: without prefetch the stall is misses × upload time", () => {
  const trace = accessTraceOf([[[0, 1]], [[1, 2]], [[3, 0]]], { experts: 4 });
  const costs = { expertBytes: 1, transferMs: 3, expertMs: 1, attentionMs: 0.5, otherMs: 0 };
  const result = replay(trace, {
    policy: createPolicy("lru", policyOptions({ layers: 1, experts: 4, topK: 2, capacity: 2 })),
    budget: "per-layer",
    prefetcher: null,
    costs: [costs],
  });
  // Misses: 2, 1, 2 → stall 15; time 3 × (0.5 + 2) + 15.
  assertEquals(result.timings[0]!.stallMs[0], 15);
  assertEquals(result.timings[0]!.now, 22.5);
});
