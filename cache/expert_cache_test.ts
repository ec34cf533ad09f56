/**
 * The engine will upload experts into the slots ExpertCache hands out: every
 * cached expert must own one slot, no two share one, and slots stay below the
 * capacity, under every policy, with prefetches, for both budgets.
 */
import { deepStrictEqual as assertEquals, ok } from "node:assert";
import { accessCounts } from "./access_trace.ts";
import { type Budget, ExpertCache, policyOptions } from "./expert_cache.ts";
import { createPolicy, POLICY_NAMES, traceFutureUses } from "./policies/mod.ts";
import { syntheticAccessTrace } from "./synthetic.ts";

const M = 3, E = 6, k = 2;
const trace = syntheticAccessTrace({
  tokens: 400,
  layers: M,
  experts: E,
  topK: k,
  stickiness: 0.5,
  memory: "geometric",
  lookahead: 1,
  specAccuracy: 0.6,
  seed: 5,
});

for (const budget of ["per-layer", "global"] as Budget[]) {
  Deno.test(`slots are unique and within capacity for every policy (${budget})`, () => {
    for (const name of POLICY_NAMES) {
      for (const capacity of budget === "global" ? [2, 7, 12] : [2, 3, 5]) {
        const options = {
          ...policyOptions({ layers: M, experts: E, topK: k, capacity, budget, seed: 1 }),
          future: traceFutureUses(trace),
          counts: accessCounts(trace),
        };
        const cache = new ExpertCache(createPolicy(name, options), {
          layers: M,
          experts: E,
          budget,
        });
        // Swap keeps k per layer whatever the budget.
        const limit = name === "swap" ? (budget === "global" ? M * k : k) : capacity;
        let uploads = 0;
        for (let t = 0; t < trace.tokens; t++) {
          for (let l = 0; l < M; l++) {
            const offset = (t * M + l) * k;
            uploads += cache.access(l, trace.chosen, offset, k);
            if (l + 1 < M) {
              uploads += cache.prefetch(l + 1, trace.spec!, (t * M + l) * k, k);
            }
            const owners = new Map<string, number>();
            for (let key = 0; key < M * E; key++) {
              const slot = cache.slotOf[key]!;
              ok(
                (slot >= 0) === cache.policy.has(key),
                `${name} ${capacity}: key ${key} slot ${slot}`,
              );
              if (slot < 0) continue;
              const partition = budget === "global" ? 0 : Math.floor(key / E);
              const id = `${partition}:${slot}`;
              ok(
                !owners.has(id),
                `${name} ${capacity}: slot ${id} shared by ${owners.get(id)} and ${key}`,
              );
              owners.set(id, key);
              ok(slot < limit, `${name} ${capacity}: slot ${slot} ≥ ${limit}`);
            }
          }
        }
        // Uploads = demand misses + prefetches, as the counters say.
        const sum = (a: Float64Array) => a.reduce((x, y) => x + y, 0);
        assertEquals(uploads, sum(cache.stats.misses) + sum(cache.stats.prefetchIssued));
      }
    }
  });
}
