/**
 * `moetrace bench trace`: write and read 1,000,000 tokens × 32 layers × top-2
 * (targets: ≥ 2,000,000 tokens/s read; memory independent of length), for
 * the default Parquet shards (encoded by worker threads, and on the
 * writer's own thread) beside Arrow IPC shards (the format before Parquet),
 * all in one run so they share the machine's load.
 * Peak memory is measured while reading the 1M-token Parquet trace and one
 * twice as long, each in a fresh process: equal peaks mean streaming works.
 */
import type { BenchOptions } from "./measure.ts";
import { type Figure, printFigures } from "./measure.ts";
import { readTrace, readTraceInChild } from "./read_memory.ts";
import { syntheticCapture, syntheticDocs, syntheticModel } from "../trace/synthetic.ts";
import {
  defaultReadWorkers,
  type TraceDoc,
  TraceReader,
  TraceWriter,
  type TraceWriterOptions,
} from "../trace/mod.ts";
import { defaultEncoders } from "../trace/parquet_pool.ts";
import { parquetWasmToTable } from "../trace/parquet.ts";

const LAYERS = 32;
const TOP_K = 2;
const TOKENS_PER_DOC = 1000;

async function writeTrace(
  dir: string,
  docs: TraceDoc[],
  copies: number,
  writerOptions: TraceWriterOptions = {},
): Promise<{ seconds: number; bytes: number }> {
  const options = { numLayers: LAYERS, topK: TOP_K, numExperts: 8 };
  const writer = await TraceWriter.open(dir, {
    model: syntheticModel(options),
    capture: syntheticCapture(options),
  }, writerOptions);
  const start = performance.now();
  let id = 0;
  for (let c = 0; c < copies; c++) {
    for (const doc of docs) await writer.add({ ...doc, doc: id++ });
  }
  await writer.close();
  const seconds = (performance.now() - start) / 1000;
  return { seconds, bytes: writer.manifest.shards.reduce((n, s) => n + (s.bytes ?? 0), 0) };
}

/**
 * The shards decoded by parquet-wasm alone, as the reader did before its fast
 * path (parquet_decode.ts): file read and decode only, none of the reader's
 * checks, so the figure flatters it slightly.
 */
async function readWithParquetWasm(dir: string): Promise<{ seconds: number; rows: number }> {
  const reader = await TraceReader.open(dir);
  const start = performance.now();
  let rows = 0;
  let checksum = 0;
  for (const shard of reader.manifest.shards) {
    const table = parquetWasmToTable(await Deno.readFile(`${dir}/${shard.file}`), {
      rows: shard.rows,
    });
    rows += table.numRows;
    for (const data of table.getChild("experts")!.data) {
      const experts = data.children[0]!.values as Uint16Array;
      for (let i = 0; i < experts.length; i++) checksum += experts[i]!;
    }
  }
  if (checksum < 0) console.log(checksum);
  return { seconds: (performance.now() - start) / 1000, rows };
}

/** The median of three reads. */
async function medianRead(dir: string, workers?: number) {
  const reads = [];
  for (let i = 0; i < 3; i++) reads.push(await readTrace(dir, workers));
  reads.sort((a, b) => a.seconds - b.seconds);
  return reads[1]!;
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
  const root = await Deno.makeTempDir({ prefix: "moetrace-bench-" });
  const loadBefore = Deno.loadavg()[0]!;
  try {
    const encoders = Math.max(1, defaultEncoders());
    const parquet = await writeTrace(`${root}/parquet`, docs, 20, { encoders });
    const inline = await writeTrace(`${root}/inline`, docs, 20, { encoders: 0 });
    const ipc = await writeTrace(`${root}/arrow`, docs, 20, { format: "arrow" });
    await writeTrace(`${root}/large`, docs, 40);
    // The targets are for what a user gets: the default number of read
    // workers (none on fewer than 3 cores); the other setting is shown beside it.
    const readers = defaultReadWorkers();
    const otherReaders = readers === 0 ? 1 : 0;
    const parquetRead = await medianRead(`${root}/parquet`, readers);
    const parquetOther = await medianRead(`${root}/parquet`, otherReaders);
    const parquetInPlace = readers === 0 ? parquetRead : parquetOther;
    const ipcRead = await medianRead(`${root}/arrow`);
    const wasmRead = await readWithParquetWasm(`${root}/parquet`);
    // Peak memory: each read in a process of its own (see read_memory.ts).
    const memory = {
      small: await readTraceInChild(`${root}/parquet`, readers),
      large: await readTraceInChild(`${root}/large`, readers),
      smallOther: await readTraceInChild(`${root}/parquet`, otherReaders),
      largeOther: await readTraceInChild(`${root}/large`, otherReaders),
    };
    const rows = parquetRead.rows;
    const figures: Figure[] = [
      {
        name: `write tokens/s, Parquet, ${encoders} encoder worker(s)`,
        value: rows / parquet.seconds,
        unit: "tokens/s",
      },
      {
        name: "write tokens/s, Parquet, on the writer's thread",
        value: rows / inline.seconds,
        unit: "tokens/s",
      },
      {
        name: "write tokens/s, Arrow IPC (before Parquet)",
        value: rows / ipc.seconds,
        unit: "tokens/s",
      },
      {
        name: `read tokens/s, Parquet, default: ${readers} read worker(s) (median of 3)`,
        value: rows / parquetRead.seconds,
        unit: "tokens/s",
        target: 2_000_000,
        direction: "min",
      },
      {
        name: `read tokens/s, Parquet, ${otherReaders} read worker(s) (median of 3)`,
        value: rows / parquetOther.seconds,
        unit: "tokens/s",
      },
      {
        name: "read tokens/s, Arrow IPC (median of 3)",
        value: rows / ipcRead.seconds,
        unit: "tokens/s",
      },
      {
        name: "read time, Parquet on the reader's thread / Arrow IPC",
        value: parquetInPlace.seconds / ipcRead.seconds,
        unit: "×",
        target: 1.5,
        direction: "max",
      },
      {
        name: "read tokens/s, Parquet by parquet-wasm alone (before the fast path; one read)",
        value: wasmRead.rows / wasmRead.seconds,
        unit: "tokens/s",
      },
      { name: "bytes per token, Parquet", value: parquet.bytes / rows, unit: "B" },
      { name: "bytes per token, Arrow IPC", value: ipc.bytes / rows, unit: "B" },
      { name: "peak RSS reading 1M tokens (default)", value: memory.small.peakMiB, unit: "MiB" },
      { name: "peak RSS reading 2M tokens (default)", value: memory.large.peakMiB, unit: "MiB" },
      {
        name: "peak RSS ratio 2M / 1M (default)",
        value: memory.large.peakMiB / memory.small.peakMiB,
        unit: "×",
        target: 1.25,
        direction: "max",
      },
      {
        name: `peak RSS ratio 2M / 1M, ${otherReaders} read worker(s)`,
        value: memory.largeOther.peakMiB / memory.smallOther.peakMiB,
        unit: "×",
      },
      { name: "load average (1 min) before", value: loadBefore, unit: "" },
      { name: "load average (1 min) after", value: Deno.loadavg()[0]!, unit: "" },
    ];
    printFigures("bench trace", figures, options.json);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}
