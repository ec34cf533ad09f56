/**
 * Markov prefetch on a trace where layer l's experts determine layer l + 1's
 * exactly: once it has seen each transition, it must predict every step.
 */
import { deepStrictEqual as assertEquals } from "node:assert";
import { accessTraceOf } from "../access_trace.ts";
import { policyOptions } from "../expert_cache.ts";
import { createPolicy } from "../policies/mod.ts";
import { replay } from "../replay.ts";
import { MarkovPrefetcher } from "./markov.ts";

// Three layers of E = 6 experts, top-2. Every layer picks one of three
// disjoint pairs; which one is a fixed function of the pair the layer before
// picked (a different bijection per layer, and first choices not always the
// lower expert). Token t's layer 0 picks PAIRS[0][t mod 3].
const PAIRS = [
  [[0, 1], [2, 3], [4, 5]],
  [[5, 4], [1, 0], [3, 2]], // layer 0's pair i → layer 1's PAIRS[1][i]
  [[2, 3], [5, 4], [0, 1]], // layer 1's pair i → layer 2's PAIRS[2][i]
];
const T = 300;
const trace = accessTraceOf(
  Array.from({ length: T }, (_, t) => PAIRS.map((layer) => layer[t % 3]!)),
  { experts: 6 },
);

Deno.test("markov predicts every transition it has seen: a deterministic trace, 100% after warm-up", () => {
  const result = replay(trace, {
    policy: createPolicy("lru", policyOptions({ layers: 3, experts: 6, topK: 2, capacity: 2 })),
    budget: "per-layer",
    prefetcher: new MarkovPrefetcher(trace),
    costs: [],
  });
  // Counts are learned from the past only: token t's prediction for layer
  // l + 1 uses the transitions of tokens before t. Tokens 0, 1 and 2 show
  // each of the three transitions for the first time: no prediction. From
  // token 3 on, the pair of layer l + 1 is predicted exactly (its two experts
  // score 2 × the times seen, every other expert 0).
  // Accuracy is counted per target layer: nothing predicts layer 0.
  const accuracy = result.accuracy!;
  assertEquals([...accuracy.opportunities], [0, T, T]);
  assertEquals([...accuracy.predicted], [0, 2 * (T - 3), 2 * (T - 3)]);
  assertEquals([...accuracy.correct], [0, 2 * (T - 3), 2 * (T - 3)]);
  // A capacity of 2 per layer holds one pair, and consecutive tokens pick
  // different pairs. Layer 0 (never prefetched): 2 misses every token.
  // Layers 1 and 2: 2 cold misses at each of tokens 0-2; from token 3 on the
  // prefetch replaces the previous token's pair with the right one, whose
  // two experts then hit on their first use.
  const s = result.stats;
  assertEquals([...s.misses], [2 * T, 6, 6]);
  assertEquals([...s.hits], [0, 2 * (T - 3), 2 * (T - 3)]);
  assertEquals([...s.prefetchIssued], [0, 2 * (T - 3), 2 * (T - 3)]);
  assertEquals([...s.prefetchUsed], [0, 2 * (T - 3), 2 * (T - 3)]);
  assertEquals([...s.prefetchWasted], [0, 0, 0]);
});
