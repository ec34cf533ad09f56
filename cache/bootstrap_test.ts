import { deepStrictEqual as assertEquals, ok } from "node:assert";
import { parse } from "csv-parse/sync";
import { Rng } from "../common/random.ts";
import { NO_EXPERT, TraceWriter } from "../trace/mod.ts";
import {
  syntheticCapture,
  syntheticModel,
  type SyntheticOptions,
  writeSyntheticTrace,
} from "../trace/synthetic.ts";
import { bootstrapSweep } from "./bootstrap.ts";
import { DTYPES } from "./dtypes.ts";
import { HARDWARE_PRESETS } from "./hardware.ts";
import { parsePrefetch } from "./prefetch/mod.ts";
import { simulateCommand } from "./simulate.ts";
import type { SweepSettings } from "./sweep.ts";
import { syntheticAccessTrace } from "./synthetic.ts";

const dir = await Deno.makeTempDir({ prefix: "moetrace-bootstrap-test-" });

function readCsv(path: string): Record<string, string>[] {
  return parse(Deno.readTextFileSync(path), { columns: true });
}

const close = (a: number, b: number, what: string) =>
  ok(Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);

/** Writes documents given as [doc][t][layer] expert lists (k = 1), with optional spec. */
async function writeTrace(
  path: string,
  shape: SyntheticOptions,
  docs: { experts: number[][]; spec?: number[][] }[],
): Promise<void> {
  const writer = await TraceWriter.open(path, {
    model: syntheticModel(shape),
    capture: syntheticCapture(shape),
  });
  let id = 0;
  for (const d of docs) {
    const T = d.experts.length;
    await writer.add({
      doc: id++,
      domain: "A",
      tokens: Uint32Array.from({ length: T }, (_, t) => t + 1),
      pieces: Array.from({ length: T }, (_, t) => `p${t}`),
      experts: Uint16Array.from(d.experts.flat()),
      weights: new Float32Array(T * shape.numLayers!).fill(1),
      ...(d.spec ? { spec: Uint16Array.from(d.spec.flat()) } : {}),
    });
  }
  await writer.close();
}

// Uploads take 1 ms (latency; the bandwidth makes the bytes free), attention
// and one expert 0.1 ms each.
await Deno.writeTextFile(
  `${dir}/slow.json`,
  JSON.stringify({
    name: "slow",
    bandwidth_gb_s: 1e12,
    latency_us: 1000,
    expert_ms: 0.1,
    attention_ms_per_layer: 0.1,
  }),
);

Deno.test("hit_rate_in_time leaves out a hit on a prefetch still in flight", async () => {
  // 2 layers, E = 4, k = 1, one document of 2 tokens choosing expert 0 at
  // layer 0 and expert 1 at layer 1; at layer 0 the speculative column
  // predicts layer 1's expert 1.
  // Token 0, layer 0: the router decides at 0.1 ms; expert 0 misses and
  // uploads 0.1 → 1.1; the prefetch of layer 1's expert 1 queues 1.1 → 2.1;
  // the layer waits to 1.1 and computes to 1.2. Layer 1 decides at 1.3:
  // expert 1 is cached (a hit) but arrives at 2.1, still in flight (late).
  // Token 1: both experts are cached and resident (hits in time).
  // hit_rate = 3/4; hit_rate_in_time = 2/4; layer 1: 1 and 1/2.
  const shape = { numLayers: 2, numExperts: 4, topK: 1, lookahead: 1 };
  const trace = `${dir}/in-flight`;
  const spec = [[1, NO_EXPERT], [1, NO_EXPERT]];
  await writeTrace(trace, shape, [{ experts: [[0, 1], [0, 1]], spec }]);
  const out = `${dir}/in-flight-out`;
  await simulateCommand(trace, {
    out,
    policy: ["lru"],
    capacity: ["4"],
    prefetch: ["speculative"],
    hardware: [`${dir}/slow.json`],
    dtype: ["bf16"],
    budget: "per-layer",
    seed: 0,
    bootstrap: 0,
  });
  const rows = readCsv(`${out}/simulation.csv`);
  const all = rows.find((r) => r.layer === "all")!;
  assertEquals([all.hits, all.misses, all.prefetch_late], ["3", "1", "1"]);
  assertEquals(Number(all.hit_rate), 0.75);
  assertEquals(Number(all.hit_rate_in_time), 0.5);
  const layer1 = rows.find((r) => r.moe_layer === "1")!;
  assertEquals([Number(layer1.hit_rate), Number(layer1.hit_rate_in_time)], [1, 0.5]);
  // Without bootstrap the intervals are empty.
  assertEquals([all.hit_rate_ci_low, all.ms_per_token_ci_high], ["", ""]);
});

/**
 * The p quantile of `values` (linear between order statistics at (n − 1) p),
 * moved by the point estimate minus the values' mean.
 */
function percentile(values: number[], p: number, point: number): number {
  const s = [...values].sort((a, b) => a - b);
  const h = (s.length - 1) * p;
  const i = Math.floor(h);
  const q = i + 1 < s.length ? s[i]! + (h - i) * (s[i + 1]! - s[i]!) : s[i]!;
  return q + point - values.reduce((a, b) => a + b, 0) / values.length;
}

Deno.test("the bootstrap interval equals the percentiles of resampled documents replayed independently", async () => {
  // 1 layer, E = 4, k = 1, LRU holding 2 experts; 5 documents of different lengths.
  const shape = { numLayers: 1, numExperts: 4, topK: 1 };
  const docs = [[0, 1, 0, 2], [3, 3], [1, 2, 3, 0, 1], [2], [0, 0, 1]];
  const trace = `${dir}/tiny`;
  await writeTrace(trace, shape, docs.map((d) => ({ experts: d.map((e) => [e]) })));
  const out = `${dir}/tiny-out`;
  const B = 15;
  const seed = 7;
  await simulateCommand(trace, {
    out,
    policy: ["lru"],
    capacity: ["2"],
    prefetch: ["none"],
    hardware: [`${dir}/slow.json`],
    dtype: ["bf16"],
    budget: "per-layer",
    seed,
    bootstrap: B,
  });
  const all = readCsv(`${out}/simulation.csv`).find((r) => r.layer === "all")!;
  // The documented draws: Rng(seed), G documents per resample as rng.int(G).
  const rng = new Rng(seed);
  const G = docs.length;
  const rates: number[] = [];
  const msPerToken: number[] = [];
  for (let b = 0; b < B; b++) {
    // Laid out copy by copy: each document drawn, in trace order, then the second copies, ...
    const copies = new Array(G).fill(0);
    for (let i = 0; i < G; i++) copies[rng.int(G)]++;
    const stream: number[] = [];
    for (let round = 1; round <= Math.max(...copies); round++) {
      for (let g = 0; g < G; g++) if (copies[g] >= round) stream.push(...docs[g]!);
    }
    // LRU of 2 from empty, most recent first.
    const cache: number[] = [];
    let hits = 0;
    for (const e of stream) {
      const at = cache.indexOf(e);
      if (at >= 0) {
        hits++;
        cache.splice(at, 1);
      } else if (cache.length === 2) cache.pop();
      cache.unshift(e);
    }
    const misses = stream.length - hits;
    rates.push(hits / stream.length);
    // Per token: attention 0.1 + one expert 0.1; each miss waits 1 ms of upload.
    const bytes = 3 * 4096 * 14336 * 2;
    msPerToken.push((stream.length * 0.2 + misses * (1 + bytes / 1e12 / 1e6)) / stream.length);
  }
  // The point estimates, from the whole trace the same way.
  const whole = docs.flat();
  const lru: number[] = [];
  let hits = 0;
  for (const e of whole) {
    const at = lru.indexOf(e);
    if (at >= 0) {
      hits++;
      lru.splice(at, 1);
    } else if (lru.length === 2) lru.pop();
    lru.unshift(e);
  }
  const rate = hits / whole.length;
  const bytes = 3 * 4096 * 14336 * 2;
  const ms = (whole.length * 0.2 + (whole.length - hits) * (1 + bytes / 1e12 / 1e6)) / whole.length;
  close(Number(all.hit_rate), rate, "hit_rate");
  close(Number(all.ms_per_token), ms, "ms_per_token");
  close(Number(all.hit_rate_ci_low), percentile(rates, 0.025, rate), "hit_rate_ci_low");
  close(Number(all.hit_rate_ci_high), percentile(rates, 0.975, rate), "hit_rate_ci_high");
  close(Number(all.ms_per_token_ci_low), percentile(msPerToken, 0.025, ms), "ms_per_token_ci_low");
  close(
    Number(all.ms_per_token_ci_high),
    percentile(msPerToken, 0.975, ms),
    "ms_per_token_ci_high",
  );
  ok(Number(all.hit_rate_ci_low) < Number(all.hit_rate_ci_high));
});

Deno.test("the bootstrap interval holds the point estimate and narrows with more documents", async () => {
  const width: number[] = [];
  for (const docs of [8, 64]) {
    const trace = `${dir}/docs-${docs}`;
    await writeSyntheticTrace(trace, {
      numLayers: 2,
      numExperts: 8,
      topK: 2,
      stickiness: 0.5,
      domains: [{ name: "A", docs }],
      tokensPerDoc: 20,
      seed: 5,
    });
    const out = `${trace}-out`;
    await simulateCommand(trace, {
      out,
      policy: ["lru", "lfu"],
      capacity: ["4"],
      prefetch: ["none"],
      hardware: ["pcie4"],
      dtype: ["bf16"],
      budget: "per-layer",
      seed: 1,
      bootstrap: 40,
    });
    const rows = readCsv(`${out}/simulation.csv`);
    for (const r of rows) {
      for (const what of ["hit_rate", "ms_per_token"]) {
        const [low, point, high] = [r[`${what}_ci_low`], r[what], r[`${what}_ci_high`]].map(Number);
        ok(low! <= point! && point! <= high!, `${docs} docs ${r.policy} ${r.layer} ${what}`);
      }
    }
    const all = rows.find((r) => r.layer === "all" && r.policy === "lru")!;
    width.push(Number(all.hit_rate_ci_high) - Number(all.hit_rate_ci_low));
  }
  ok(width[1]! < width[0]!, `widths ${width}`);
});

Deno.test("resamples replayed in worker threads give the sequential path's values exactly", async () => {
  // 8 documents of 40 tokens; random needs the seed, markov and speculative
  // prefetch and two hardware settings take the replay's timing path.
  const trace = syntheticAccessTrace({
    tokens: 320,
    layers: 3,
    experts: 6,
    topK: 2,
    stickiness: 0.6,
    memory: "geometric",
    tokensPerDoc: 40,
    lookahead: 1,
    seed: 3,
  });
  const model = { ...syntheticModel({ numLayers: 3, numExperts: 6, topK: 2 }), expert_params: 1e6 };
  const settings: SweepSettings = {
    policies: ["lru", "lfu", "random", "belady"],
    capacities: [3, 4].map((c) => ({ kind: "experts", experts: c, text: String(c) })),
    prefetchers: ["none", "speculative", "markov"].map((p) => parsePrefetch(p)!),
    dtypes: [DTYPES.bf16!],
    hardware: ["pcie4", "pcie3"].map((h) => HARDWARE_PRESETS[h]!),
    budget: "per-layer",
    seed: 7,
  };
  const run = (threads: { workers?: number; parallel?: number }) =>
    bootstrapSweep(trace, model, settings, { resamples: 5, seed: 11, ...threads });
  const sequential = await run({ workers: 0 });
  ok(sequential.hitRate.length > 0 && sequential.hitRate[0]!.length === 5 * 4);
  // Resamples differ from one another (the draws are not all the same).
  const all = sequential.hitRate[0]!.filter((_, i) => i % 4 === 3);
  ok(new Set(all).size > 1, `resampled hit rates ${all}`);
  // 5 resamples over 3 workers: they finish out of order.
  const parallel = await run({ parallel: 3 });
  assertEquals(parallel.hitRate, sequential.hitRate, "hit rates");
  assertEquals(parallel.msPerToken, sequential.msPerToken, "ms/token");
});
