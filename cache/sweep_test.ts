/**
 * The sweep shares work (stack distances for LRU, one replay for policies that
 * provably coincide, the oracle derived from the replay without prefetch,
 * workers). Every shortcut must give what a plain replay of the combination
 * gives: this test replays every combination directly and compares.
 */
import { deepStrictEqual as assertEquals, ok } from "node:assert";
import { syntheticModel } from "../trace/synthetic.ts";
import { accessCounts } from "./access_trace.ts";
import { type Budget, policyOptions } from "./expert_cache.ts";
import { createPolicy, POLICY_NAMES, traceFutureUses } from "./policies/mod.ts";
import { createPrefetcher, parsePrefetch } from "./prefetch/mod.ts";
import { replay } from "./replay.ts";
import { runSweep } from "./sweep.ts";
import { syntheticAccessTrace } from "./synthetic.ts";
import { stepCosts } from "./costs.ts";
import { DTYPES } from "./dtypes.ts";
import type { Hardware } from "./hardware.ts";

const trace = syntheticAccessTrace({
  tokens: 300,
  layers: 3,
  experts: 6,
  topK: 2,
  stickiness: 0.6,
  memory: "geometric",
  tokensPerDoc: 100,
  lookahead: 2,
  seed: 9,
});
const model = { ...syntheticModel({ numLayers: 3, numExperts: 6, topK: 2 }), expert_params: 1e6 };
const machines: Hardware[] = [
  {
    name: "slow",
    bandwidth_gb_s: 1,
    latency_us: 100,
    expert_ms: 0.5,
    attention_ms_per_layer: 0.25,
  },
  {
    name: "fast",
    bandwidth_gb_s: 20,
    latency_us: 10,
    expert_ms: 0.5,
    attention_ms_per_layer: 0.25,
    other_ms_per_token: 1,
  },
];
const prefetchers = ["none", "speculative", "speculative:2", "markov", "oracle"].map((p) =>
  parsePrefetch(p)!
);

function close(a: number, b: number, what: string) {
  ok(Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(a), Math.abs(b)), `${what}: ${a} vs ${b}`);
}

async function check(budget: Budget, capacities: number[], workers: number) {
  const result = await runSweep(trace, model, {
    policies: [...POLICY_NAMES],
    capacities: capacities.map((c) => ({ kind: "experts", experts: c, text: String(c) })),
    prefetchers,
    dtypes: [DTYPES.bf16!, DTYPES.int4!],
    hardware: machines,
    budget,
    seed: 4,
  }, { workers });
  // Swap ignores the capacity: one set of rows.
  assertEquals(
    result.combinations.length,
    ((POLICY_NAMES.length - 1) * capacities.length + 1) * prefetchers.length * 2 * 2,
  );
  const future = traceFutureUses(trace);
  const counts = accessCounts(trace);
  for (const c of result.combinations) {
    const what = `${budget} ${c.policy} ${c.capacityText} ${c.prefetch} ${c.dtype} ${c.hardware}`;
    const capacity = Number(c.capacityText);
    const options = {
      ...policyOptions({ layers: 3, experts: 6, topK: 2, capacity, budget, seed: 4 }),
      future,
      counts,
    };
    const costs = stepCosts(machines.find((m) => m.name === c.hardware)!, DTYPES[c.dtype]!, model);
    const direct = replay(trace, {
      policy: createPolicy(c.policy, options),
      budget,
      prefetcher: createPrefetcher(prefetchers.find((p) => p.name === c.prefetch)!, trace),
      costs: [costs],
    });
    assertEquals(c.hits, direct.stats.hits, `${what} hits`);
    assertEquals(c.misses, direct.stats.misses, `${what} misses`);
    assertEquals(c.prefetchIssued, direct.stats.prefetchIssued, `${what} issued`);
    assertEquals(c.prefetchUsed, direct.stats.prefetchUsed, `${what} used`);
    assertEquals(c.prefetchWasted, direct.stats.prefetchWasted, `${what} wasted`);
    const timing = direct.timings[0]!;
    assertEquals([...c.prefetchLate], [...timing.late], `${what} late`);
    for (let l = 0; l < 3; l++) {
      close(c.stallMs[l]!, timing.stallMs[l]!, `${what} stall ${l}`);
      close(c.layerMs[l]!, timing.layerMs[l]!, `${what} layer ms ${l}`);
    }
    close(c.totalMs, timing.now, `${what} total ms`);
    if (direct.accuracy) {
      const shared = result.accuracy.get(c.prefetch)!;
      assertEquals([...shared.correct], [...direct.accuracy.correct], `${what} accuracy`);
      assertEquals(
        [...shared.opportunities],
        [...direct.accuracy.opportunities],
        `${what} opportunities`,
      );
    }
  }
}

Deno.test("sweep shortcuts equal direct replays: per-layer budget, in this thread", async () => {
  await check("per-layer", [2, 3, 4, 6], 0);
});

Deno.test("sweep shortcuts equal direct replays: per-layer budget, two workers", async () => {
  await check("per-layer", [2, 5], 2);
});

Deno.test("sweep shortcuts equal direct replays: global budget", async () => {
  await check("global", [2, 5, 9, 18], 0);
});
