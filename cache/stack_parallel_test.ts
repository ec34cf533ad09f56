import { deepStrictEqual as assertEquals } from "node:assert";
import { lruStackDistances } from "./stack_distance.ts";
import { mergeStackChunks, parallelStackDistances } from "./stack_parallel.ts";
import { syntheticAccessTrace } from "./synthetic.ts";

// Sticky routing over short documents: keys come back after short and long gaps.
const trace = syntheticAccessTrace({
  tokens: 3000,
  layers: 4,
  experts: 16,
  topK: 3,
  stickiness: 0.6,
  memory: "geometric",
  tokensPerDoc: 100,
  seed: 4,
});

for (const budget of ["per-layer", "global"] as const) {
  for (const tree of [false, true]) {
    Deno.test(`chunked stack distances merge to the single pass (${budget}, ${tree ? "tree" : "scan"})`, () => {
      const whole = lruStackDistances(trace, budget, undefined, { tree });
      for (const cuts of [[0, 1500, 3000], [0, 1, 7, 999, 2000, 2999, 3000]]) {
        const chunks = cuts.slice(1).map((to, i) => {
          const r = lruStackDistances(trace, budget, undefined, {
            tree,
            from: cuts[i]!,
            to,
            firsts: true,
          });
          return { ...r, chunk: r.chunk! };
        });
        const merged = mergeStackChunks(chunks, {
          layers: trace.layers,
          experts: trace.experts,
          budget,
        });
        assertEquals(merged.histogram, whole.histogram, `cuts ${cuts}`);
        assertEquals(merged.cold, whole.cold);
        assertEquals(merged.accesses, whole.accesses);
      }
    });
  }
}

Deno.test("the stack-distance pass in two workers equals the single pass", async () => {
  for (const budget of ["per-layer", "global"] as const) {
    const whole = lruStackDistances(trace, budget);
    const parallel = await parallelStackDistances(trace, budget, 2);
    assertEquals(parallel.histogram, whole.histogram);
    assertEquals(parallel.cold, whole.cold);
  }
});
