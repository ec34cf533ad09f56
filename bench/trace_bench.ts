/**
 * `moetrace bench trace`: write and read 1,000,000 tokens × 32 layers × top-2
 * (targets: ≥ 2,000,000 tokens/s read; memory independent of length).
 * Peak memory is measured while reading the 1M-token trace and one twice as
 * long: equal peaks mean streaming works (both past V8's warm-up).
 */
import type { BenchOptions } from "./measure.ts";
import { type Figure, printFigures, rssMiB } from "./measure.ts";
import { syntheticCapture, syntheticDocs, syntheticModel } from "../trace/synthetic.ts";
import { type TraceDoc, TraceReader, TraceWriter } from "../trace/mod.ts";

const LAYERS = 32;
const TOP_K = 2;
const TOKENS_PER_DOC = 1000;

async function writeTrace(dir: string, docs: TraceDoc[], copies: number): Promise<number> {
  const options = { numLayers: LAYERS, topK: TOP_K, numExperts: 8 };
  const writer = await TraceWriter.open(dir, {
    model: syntheticModel(options),
    capture: syntheticCapture(options),
  });
  const start = performance.now();
  let id = 0;
  for (let c = 0; c < copies; c++) {
    for (const doc of docs) await writer.add({ ...doc, doc: id++ });
  }
  await writer.close();
  return (performance.now() - start) / 1000;
}

async function readTrace(dir: string): Promise<{ seconds: number; rows: number; peakMiB: number }> {
  const reader = await TraceReader.open(dir);
  const start = performance.now();
  let rows = 0;
  let checksum = 0;
  let peak = rssMiB();
  for await (const batch of reader.batches()) {
    rows += batch.rows;
    // Touch every expert id so the read is not just a file load.
    const experts = batch.experts;
    for (let i = 0; i < experts.length; i++) checksum += experts[i]!;
    peak = Math.max(peak, rssMiB());
  }
  if (checksum < 0) console.log(checksum);
  return { seconds: (performance.now() - start) / 1000, rows, peakMiB: peak };
}

export async function benchTrace(options: BenchOptions): Promise<void> {
  // 50 distinct documents of 1,000 tokens, repeated to 1,000,000 rows: generating
  // a million random routings would dominate the benchmark otherwise.
  const docs = [...syntheticDocs({
    numLayers: LAYERS,
    topK: TOP_K,
    numExperts: 8,
    tokensPerDoc: TOKENS_PER_DOC,
    domains: [{ name: "A", docs: 25 }, { name: "B", docs: 25 }],
    seed: 1,
  })];
  const small = await Deno.makeTempDir({ prefix: "moetrace-bench-" });
  const large = await Deno.makeTempDir({ prefix: "moetrace-bench-" });
  try {
    const writeSeconds = await writeTrace(small, docs, 20);
    await writeTrace(large, docs, 40);
    const reads = [await readTrace(small), await readTrace(small), await readTrace(small)];
    const largeRead = await readTrace(large);
    reads.sort((a, b) => a.seconds - b.seconds);
    const median = reads[1]!;
    const figures: Figure[] = [
      {
        name: "write tokens/s (1M × 32 layers × top-2)",
        value: median.rows / writeSeconds,
        unit: "tokens/s",
      },
      {
        name: "read tokens/s (median of 3)",
        value: median.rows / median.seconds,
        unit: "tokens/s",
        target: 2_000_000,
        direction: "min",
      },
      { name: "peak RSS reading 1M tokens", value: median.peakMiB, unit: "MiB" },
      { name: "peak RSS reading 2M tokens", value: largeRead.peakMiB, unit: "MiB" },
      {
        name: "peak RSS ratio 2M / 1M",
        value: largeRead.peakMiB / median.peakMiB,
        unit: "×",
        target: 1.25,
        direction: "max",
      },
    ];
    printFigures("bench trace", figures, options.json);
  } finally {
    await Deno.remove(small, { recursive: true });
    await Deno.remove(large, { recursive: true });
  }
}
