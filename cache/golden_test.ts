/**
 * Golden miss counts at libCacheSim's scale: a fixed trace of 102,400 accesses
 * (fixtures/cache/golden_trace.*) under every policy × capacity × budget ×
 * prefetcher, against the counts an independent Python reference computed
 * once (fixtures/train/cache_goldens.py, written to
 * fixtures/cache/golden_misses.json). Every entry is checked through a direct
 * replay, and again through the sweep with its shortcuts (stack distances,
 * policies that coincide, the oracle derived from the replay without
 * prefetch).
 */
import { deepStrictEqual as assertEquals, ok } from "node:assert";
import { NO_EXPERT } from "../trace/mod.ts";
import { syntheticModel } from "../trace/synthetic.ts";
import { accessCounts, type AccessTrace } from "./access_trace.ts";
import { DTYPES } from "./dtypes.ts";
import { type Budget, type CacheStats, policyOptions } from "./expert_cache.ts";
import { HARDWARE_PRESETS } from "./hardware.ts";
import { createPolicy, POLICY_NAMES, type PolicyName, traceFutureUses } from "./policies/mod.ts";
import { createPrefetcher, parsePrefetch } from "./prefetch/mod.ts";
import { replay } from "./replay.ts";
import { runSweep } from "./sweep.ts";

const FIXTURES = new URL("../fixtures/cache/", import.meta.url);

interface TraceHeader {
  file: string;
  sha256: string;
  tokens: number;
  layers: number;
  experts: number;
  top_k: number;
  lookahead: number;
  tokens_per_doc: number;
}

interface Golden {
  policy: PolicyName;
  budget: Budget;
  capacity: number;
  prefetch: string;
  /** Demand misses over all layers. */
  misses: number;
  /** Experts loaded by prefetch over all layers. */
  prefetch_issued: number;
}

const header: TraceHeader = JSON.parse(
  await Deno.readTextFile(new URL("golden_trace.json", FIXTURES)),
);
const table: { columns: (keyof Golden)[]; rows: (string | number)[][] } = JSON.parse(
  await Deno.readTextFile(new URL("golden_misses.json", FIXTURES)),
);
const goldens = table.rows.map((row) =>
  Object.fromEntries(table.columns.map((column, i) => [column, row[i]])) as unknown as Golden
);
const packed = await Deno.readFile(new URL(header.file, FIXTURES));

/** The fixture as an AccessTrace: u8 expert ids, 255 for "no speculative pick". */
async function loadGoldenTrace(): Promise<AccessTrace> {
  const { tokens: T, layers: M, top_k: k, lookahead: D } = header;
  const bytes = new Uint8Array(
    await new Response(new Blob([packed]).stream().pipeThrough(new DecompressionStream("gzip")))
      .arrayBuffer(),
  );
  const accesses = T * M * k;
  if (bytes.length !== accesses * (1 + D)) {
    throw new Error(`${header.file} holds ${bytes.length} bytes, expected ${accesses * (1 + D)}.`);
  }
  const chosen = Uint16Array.from(bytes.subarray(0, accesses));
  const spec = Uint16Array.from(bytes.subarray(accesses), (e) => e === 255 ? NO_EXPERT : e);
  const doc = Uint32Array.from({ length: T }, (_, t) => Math.floor(t / header.tokens_per_doc));
  return {
    tokens: T,
    layers: M,
    experts: header.experts,
    topK: k,
    chosen,
    lookahead: D,
    spec,
    doc,
  };
}

const trace = await loadGoldenTrace();
const sum = (a: Float64Array) => a.reduce((x, y) => x + y, 0);
const counted = (stats: CacheStats) => ({
  misses: sum(stats.misses),
  prefetch_issued: sum(stats.prefetchIssued),
});
const what = (g: Golden) => `${g.policy}:${g.capacity} ${g.budget} ${g.prefetch}`;

Deno.test("golden fixture: the trace the goldens were computed on, ≥ 100k accesses, every combination", async () => {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", packed));
  assertEquals(Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join(""), header.sha256);
  ok(trace.chosen.length >= 100_000, `${trace.chosen.length} accesses`);
  // 8 policies × (7 per-layer + 8 global capacities) × 5 prefetchers.
  assertEquals(goldens.length, POLICY_NAMES.length * 15 * 5);
  assertEquals(new Set(goldens.map(what)).size, goldens.length);
  assertEquals([...new Set(goldens.map((g) => g.policy))].sort(), [...POLICY_NAMES].sort());
});

Deno.test("golden miss counts: every policy, capacity, budget and prefetcher, replayed directly", () => {
  const future = traceFutureUses(trace);
  const counts = accessCounts(trace);
  const wrong: string[] = [];
  for (const g of goldens) {
    const options = {
      ...policyOptions({
        layers: trace.layers,
        experts: trace.experts,
        topK: trace.topK,
        capacity: g.capacity,
        budget: g.budget,
      }),
      future,
      counts,
    };
    const result = replay(trace, {
      policy: createPolicy(g.policy, options),
      budget: g.budget,
      prefetcher: createPrefetcher(parsePrefetch(g.prefetch)!, trace),
      costs: [],
      accuracy: false,
    });
    const got = counted(result.stats);
    const expected = { misses: g.misses, prefetch_issued: g.prefetch_issued };
    if (JSON.stringify(got) !== JSON.stringify(expected)) {
      wrong.push(`${what(g)}: ${JSON.stringify(got)}, golden ${JSON.stringify(expected)}`);
    }
  }
  assertEquals(wrong, []);
});

for (const budget of ["per-layer", "global"] as const) {
  Deno.test(`golden miss counts through the sweep and its shortcuts (${budget})`, async () => {
    const mine = goldens.filter((g) => g.budget === budget);
    const capacities = [...new Set(mine.map((g) => g.capacity))];
    const prefetchers = [...new Set(mine.map((g) => g.prefetch))];
    const result = await runSweep(
      trace,
      syntheticModel({ numLayers: trace.layers, numExperts: trace.experts, topK: trace.topK }),
      {
        policies: [...POLICY_NAMES],
        capacities: capacities.map((c) => ({ kind: "experts", experts: c, text: String(c) })),
        prefetchers: prefetchers.map((p) => parsePrefetch(p)!),
        dtypes: [DTYPES.bf16!],
        hardware: [HARDWARE_PRESETS.pcie4!],
        budget,
        seed: 0,
      },
      { workers: 0 },
    );
    const wrong: string[] = [];
    let checked = 0;
    for (const c of result.combinations) {
      const g = mine.find((g) =>
        g.policy === c.policy && String(g.capacity) === c.capacityText && g.prefetch === c.prefetch
      );
      if (!g) {
        wrong.push(`${c.policy}:${c.capacityText} ${c.prefetch}: no golden`);
        continue;
      }
      const got = { misses: sum(c.misses), prefetch_issued: sum(c.prefetchIssued) };
      const expected = { misses: g.misses, prefetch_issued: g.prefetch_issued };
      if (JSON.stringify(got) !== JSON.stringify(expected)) {
        wrong.push(`${what(g)}: ${JSON.stringify(got)}, golden ${JSON.stringify(expected)}`);
      }
      checked++;
    }
    assertEquals(wrong, []);
    // Swap ignores the capacity, so the sweep gives it one row per prefetcher.
    assertEquals(checked, (7 * capacities.length + 1) * prefetchers.length);
  });
}
