import { deepStrictEqual as assertEquals } from "node:assert";
import { Rng } from "../common/random.ts";
import { accessCounts, type AccessTrace, accessTraceOf } from "./access_trace.ts";
import type { StepCosts } from "./costs.ts";
import { type Budget, ExpertCache, policyOptions } from "./expert_cache.ts";
import { createPolicy, POLICY_NAMES, traceFutureUses } from "./policies/mod.ts";
import type { CachePolicy } from "./policy.ts";
import {
  createPrefetcher,
  parsePrefetch,
  type Prefetcher,
  SpeculativePrefetcher,
} from "./prefetch/mod.ts";
import { replay } from "./replay.ts";
import { syntheticAccessTrace } from "./synthetic.ts";
import { NO_EXPERT } from "../trace/mod.ts";

/**
 * Top-1, 4 experts, LRU with 1 slot per layer. Token 0 picks 0 then 1, token
 * 1 picks 0 then 1 again. At layer 0 the speculative pick for layer 1 is 1.
 * Attention 1 ms, expert 2 ms, upload 5 ms, other 0.5 ms per token.
 */
function handExample(serialUploads: boolean) {
  const trace = accessTraceOf([[[0], [1]], [[0], [1]]], {
    experts: 4,
    spec: [[[[1]], [[NO_EXPERT]]], [[[1]], [[NO_EXPERT]]]],
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

/**
 * The timing a replay must equal, computed the plain way, independently of
 * TimingModel: the cache is stepped one router decision at a time as the
 * engine does, its uploads are read from its key lists (`missKeys`,
 * `issuedKeys`, `usedKeys`) rather than heard as events, uploads queue in
 * order and every chosen expert is waited for (TimingModel waits only for a
 * step's demand loads and first uses).
 */
function referenceReplay(
  trace: AccessTrace,
  policy: CachePolicy,
  budget: Budget,
  prefetcher: Prefetcher | null,
  costs: StepCosts,
) {
  const { layers: M, experts: E, topK: k, chosen, tokens: T } = trace;
  const cache = new ExpertCache(policy, { layers: M, experts: E, budget });
  const readyAt = new Float64Array(M * E);
  const timing = { now: 0, stallMs: new Float64Array(M), late: new Float64Array(M) };
  let queueFree = 0;
  const out = new Uint16Array(k);
  for (let t = 0; t < T; t++) {
    for (let l = 0; l < M; l++) {
      const offset = (t * M + l) * k;
      cache.access(l, chosen, offset, k);
      if (prefetcher) {
        prefetcher.observe(t, l);
        for (let d = 1; d <= prefetcher.depth; d++) {
          const target = t * M + l + d;
          if (target >= T * M || (l + d >= M && !prefetcher.crossesTokens)) break;
          const n = prefetcher.predict(t, l, d, out);
          if (n > 0) cache.prefetch(target % M, out, 0, n);
        }
      }
      const decision = timing.now + costs.attentionMs;
      const upload = (key: number) => {
        queueFree = Math.max(queueFree, decision) + costs.transferMs;
        readyAt[key] = queueFree;
      };
      for (let i = 0; i < cache.missCount; i++) upload(cache.missKeys[i]!);
      for (let i = 0; i < cache.issuedCount; i++) upload(cache.issuedKeys[i]!);
      for (let i = 0; i < cache.usedCount; i++) {
        if (readyAt[cache.usedKeys[i]!]! > decision) timing.late[l]!++;
      }
      let ready = decision;
      for (let j = 0; j < k; j++) ready = Math.max(ready, readyAt[l * E + chosen[offset + j]!]!);
      if (costs.serialUploads) ready = Math.max(ready, queueFree);
      timing.stallMs[l]! += ready - decision;
      timing.now = ready + k * costs.expertMs;
    }
    timing.now += costs.otherMs;
  }
  return timing;
}

for (const topK of [2, 3]) {
  Deno.test(`timing: the replay's timing model equals waiting for every expert: every policy, prefetcher and budget (top-${topK})`, () => {
    const trace = syntheticAccessTrace({
      tokens: 600,
      layers: 4,
      experts: 8,
      topK,
      stickiness: 0.6,
      memory: "geometric",
      lookahead: 2,
      specAccuracy: 0.6,
      seed: 9,
    });
    // Some speculative picks missing, as in captured traces.
    const rng = new Rng(4);
    for (let i = 0; i < trace.spec!.length; i++) if (rng.next() < 0.1) trace.spec![i] = NO_EXPERT;
    const overlapped = {
      expertBytes: 1,
      transferMs: 0.7,
      expertMs: 0.3,
      attentionMs: 0.5,
      otherMs: 0.2,
    };
    const prefetchers = ["none", "speculative", "speculative:2", "markov", "oracle"];
    let compared = 0;
    for (const budget of ["per-layer", "global"] as const) {
      for (const name of POLICY_NAMES) {
        for (const capacity of budget === "per-layer" ? [topK, topK + 1, 5] : [topK + 1, 8, 20]) {
          for (const prefetch of prefetchers) {
            // Serial uploads on alternate combinations: both modes are covered.
            const costs = compared % 2 === 0 ? overlapped : { ...overlapped, serialUploads: true };
            const make = () =>
              createPolicy(name, {
                ...policyOptions({ layers: 4, experts: 8, topK, capacity, budget, seed: 7 }),
                future: traceFutureUses(trace),
                counts: accessCounts(trace),
              });
            const spec = parsePrefetch(prefetch)!;
            const replayed = replay(trace, {
              policy: make(),
              budget,
              prefetcher: createPrefetcher(spec, trace),
              costs: [costs],
            });
            const reference = referenceReplay(
              trace,
              make(),
              budget,
              createPrefetcher(spec, trace),
              costs,
            );
            const what = `${name}:${capacity} ${budget} ${prefetch}`;
            const [a, b] = [replayed.timings[0]!, reference];
            assertEquals(
              [a.now, [...a.stallMs], [...a.late]],
              [b.now, [...b.stallMs], [...b.late]],
              what,
            );
            compared++;
          }
        }
      }
    }
    assertEquals(compared, 2 * 8 * 3 * 5);
  });
}
