import { deepStrictEqual as assertEquals } from "node:assert";
import { type Budget, policyOptions } from "./expert_cache.ts";
import { createPolicy } from "./policies/mod.ts";
import { replay } from "./replay.ts";
import { lruHits, lruStackDistances } from "./stack_distance.ts";
import { syntheticAccessTrace } from "./synthetic.ts";

function separateRuns(budget: Budget, capacities: number[]) {
  // Sticky with memory, so hits happen at every distance; long enough for compactions.
  const trace = syntheticAccessTrace({
    tokens: 3000,
    layers: 3,
    experts: 6,
    topK: 2,
    stickiness: 0.5,
    memory: "geometric",
    tokensPerDoc: 500,
    seed: 7,
  });
  const sd = lruStackDistances(trace, budget);
  // The scan (small partitions) and the Fenwick tree give the same distances.
  const tree = lruStackDistances(trace, budget, undefined, { tree: true });
  assertEquals([...tree.histogram], [...sd.histogram]);
  assertEquals([...tree.cold], [...sd.cold]);
  for (const capacity of capacities) {
    const policy = createPolicy(
      "lru",
      policyOptions({ layers: 3, experts: 6, topK: 2, capacity, budget }),
    );
    const { stats } = replay(trace, { policy, budget, prefetcher: null, costs: [] });
    for (let l = 0; l < 3; l++) {
      assertEquals(lruHits(sd, l, capacity), stats.hits[l], `capacity ${capacity} layer ${l}`);
    }
  }
  for (let l = 0; l < 3; l++) {
    // Every access is cold or at a finite distance.
    const width = sd.maxDistance + 1;
    let total = sd.cold[l]!;
    for (let d = 1; d <= sd.maxDistance; d++) total += sd.histogram[l * width + d]!;
    assertEquals(total, sd.accesses[l]);
  }
}

Deno.test("stack distances equal separate LRU runs at every per-layer capacity", () => {
  separateRuns("per-layer", [2, 3, 4, 5, 6]);
});

Deno.test("stack distances equal separate LRU runs at every global capacity", () => {
  separateRuns("global", Array.from({ length: 17 }, (_, i) => i + 2));
});

Deno.test("stack distances of a hand-made trace", () => {
  // One layer, top-2: [0,1] [2,3] [0,1]. Before t2 the stack is 3 2 1 0:
  // expert 0 at distance 4, expert 1 at 3 (both from the stack before the step).
  const trace = syntheticAccessTrace({ tokens: 1, layers: 1, experts: 4, topK: 2 });
  trace.tokens = 3;
  trace.chosen = new Uint16Array([0, 1, 2, 3, 0, 1]);
  const sd = lruStackDistances(trace, "per-layer");
  assertEquals([...sd.histogram], [0, 0, 0, 1, 1]);
  assertEquals([...sd.cold], [4]);
});
