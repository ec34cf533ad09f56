/**
 * `moetrace bench analysis`, second table: the count tables of a trace of
 * 10,000,000 token-layers (312,500 tokens × 32 layers, top-2 of 8) from the
 * streaming pass beside DuckDB running analysis/sql/ on the Parquet shards,
 * with all cores and with one (the speed-up from the cores). The streaming
 * pass is timed alone too, with shards read by worker threads and on its
 * own thread: it is what every analysis runs.
 */
import type { BenchOptions } from "../../bench/measure.ts";
import { type Figure, printFigures } from "../../bench/measure.ts";
import { syntheticCapture, syntheticDocs, syntheticModel } from "../../trace/synthetic.ts";
import { defaultReadWorkers, TraceReader, TraceWriter } from "../../trace/mod.ts";
import { Accumulator } from "../accumulate.ts";
import { accumulateTrace } from "../run.ts";
import { countsFromAccumulator } from "./counts.ts";

const LAYERS = 32;
const TOP_K = 2;
const EXPERTS = 8;
const TOKENS = 312_500;
const TOKENS_PER_DOC = 1250;
const DOMAINS = ["A", "B", "C", "D", "E", "F", "G", "H"];

async function seconds(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
}

export async function benchCountEngines(options: BenchOptions): Promise<void> {
  const ffi = Deno.permissions.querySync({ name: "ffi" }).state === "granted";
  const dir = await Deno.makeTempDir({ prefix: "moetrace-bench-" });
  const loadBefore = Deno.loadavg()[0]!;
  try {
    const shape = { numLayers: LAYERS, topK: TOP_K, numExperts: EXPERTS };
    const docs = [...syntheticDocs({
      ...shape,
      tokensPerDoc: TOKENS_PER_DOC,
      stickiness: 0.3,
      domains: [{ name: "A", docs: 25 }],
      seed: 2,
    })];
    const writer = await TraceWriter.open(dir, {
      model: syntheticModel(shape),
      capture: { ...syntheticCapture(shape), domains: DOMAINS },
    });
    for (let id = 0; id < TOKENS / TOKENS_PER_DOC; id++) {
      await writer.add({ ...docs[id % docs.length]!, doc: id, domain: DOMAINS[id % 8]! });
    }
    await writer.close();
    const reader = await TraceReader.open(dir);
    const tokenLayers = reader.rows * LAYERS;
    const moeLayers = reader.manifest.model.moe_layers;
    const dims = { layers: LAYERS, experts: EXPERTS, topK: TOP_K, probs: false };
    const passWith = (workers: number) =>
      seconds(async () => {
        const acc = new Accumulator(dims, DOMAINS);
        for await (const batch of reader.batches({ workers })) acc.addBatch(batch);
      });
    const readers = Math.max(1, defaultReadWorkers());
    const pass = await passWith(readers);
    const passAlone = await passWith(0);
    const streamCounts = await seconds(async () =>
      countsFromAccumulator(await accumulateTrace(reader), moeLayers)
    );
    const figures: Figure[] = [
      {
        name: `streaming pass token-layers/s (10M), shards read by ${readers} worker(s)`,
        value: tokenLayers / pass,
        unit: "token-layers/s",
      },
      {
        name: "streaming pass token-layers/s (10M), shards read on its thread",
        value: tokenLayers / passAlone,
        unit: "token-layers/s",
      },
      { name: "streaming pass speed-up from read workers", value: passAlone / pass, unit: "×" },
      {
        name: "count tables, streaming pass, token-layers/s",
        value: tokenLayers / streamCounts,
        unit: "token-layers/s",
      },
    ];
    if (ffi) {
      const { countsWithDuckDB } = await import("./duckdb.ts");
      const cores = navigator.hardwareConcurrency || 1;
      const all = await seconds(() => countsWithDuckDB(reader, { threads: cores }));
      const one = await seconds(() => countsWithDuckDB(reader, { threads: 1 }));
      figures.push(
        {
          name: `count tables, DuckDB, ${cores} threads, token-layers/s`,
          value: tokenLayers / all,
          unit: "token-layers/s",
        },
        {
          name: "count tables, DuckDB, 1 thread, token-layers/s",
          value: tokenLayers / one,
          unit: "token-layers/s",
        },
        { name: `DuckDB speed-up, ${cores} threads / 1`, value: one / all, unit: "×" },
        { name: "DuckDB / streaming, count tables", value: streamCounts / all, unit: "×" },
      );
    } else {
      console.log(
        "bench analysis: DuckDB figures skipped: they need --allow-ffi (deno task bench analysis grants it).",
      );
    }
    figures.push(
      { name: "load average (1 min) before", value: loadBefore, unit: "" },
      { name: "load average (1 min) after", value: Deno.loadavg()[0]!, unit: "" },
    );
    printFigures("bench analysis: count tables, streaming and DuckDB", figures, options.json);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
