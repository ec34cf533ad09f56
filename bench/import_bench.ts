/**
 * `moetrace bench import`: import an SGLang per_token recording of
 * 10,240,000 token-layer rows (640,000 tokens × 16 MoE layers, top-8 of 64
 * experts, one dense layer, 72 physical experts) written by two ranks, end to
 * end: read the .pt files, unzip, read the pickles, rebuild the sequences,
 * map physical to logical ids and write the trace. Target: ≥ 1,000,000
 * tokens/s (a token is one sequence position with all its 16 MoE layers;
 * the token-layer rows/s printed beside it are 16× that).
 *
 * The import reads the files' pickles on this thread, then makes the
 * shards whole, each on whichever thread claims it next (this one or a
 * worker, one per core but this one): the routing read from the files,
 * checked, gathered into reused buffers, encoded and written as it lies
 * (trace/import/sglang_shard.ts). Then each stage on its own, on one thread,
 * as comparisons: reading the .pt files whole, the generic trace writer on
 * the same documents (on this thread, and with one encoding worker),
 * moetrace's Parquet encoder and parquet-wasm (the encoder before) alone on
 * the same shard tables, and Arrow IPC shards. CPU seconds (all threads) are
 * printed too: on a loaded machine they move less than wall time.
 *
 * The recording is made here, not by PyTorch (trace/import/sglang_synthetic.ts):
 * the same pickle opcodes `torch.save` writes, in a zip of stored entries.
 */
import process from "node:process";
import type * as arrow from "apache-arrow";
import type { BenchOptions } from "./measure.ts";
import { type Figure, medianSeconds, printFigures, rssMiB } from "./measure.ts";
import { importFiles } from "../trace/import/command.ts";
import { openTorchFile } from "../trace/import/torch_zip.ts";
import { MOE_LAYERS, sglangRecording } from "../trace/import/sglang_synthetic.ts";
import { parquetToTable, tableToParquet, tableToParquetWasm } from "../trace/parquet.ts";
import { type ShardFormat, type TraceDoc, TraceReader, TraceWriter } from "../trace/mod.ts";

const RANKS = 2;
const REPEATS = 3;

export async function benchImport(options: BenchOptions): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-bench-import-" });
  try {
    const files: string[] = [];
    let tokens = 0;
    for (let rank = 0; rank < RANKS; rank++) {
      const { bytes, tokens: n } = sglangRecording(rank);
      files.push(`${dir}/expert_distribution_recorder_0_${rank}.pt`);
      await Deno.writeFile(files[rank]!, bytes);
      tokens += n;
    }
    const rows = tokens * MOE_LAYERS;
    const seconds: number[] = [];
    const cpu: number[] = [];
    let peak = 0;
    for (let r = 0; r < REPEATS; r++) {
      const out = `${dir}/trace${r}`;
      const before = process.cpuUsage();
      const start = performance.now();
      const summary = await importFiles(files, out, "sglang-pt");
      seconds.push((performance.now() - start) / 1000);
      const used = process.cpuUsage(before);
      cpu.push((used.user + used.system) / 1e6);
      peak = Math.max(peak, rssMiB());
      if (summary.tokens !== tokens) {
        throw new Error(`bench import: imported ${summary.tokens} tokens, made ${tokens}`);
      }
      if (r < REPEATS - 1) await Deno.remove(out, { recursive: true });
    }
    const trace = `${dir}/trace${REPEATS - 1}`;
    // The stages one by one, each on its own, for comparison: reading the
    // .pt files whole (unzip, pickle, tensors), the generic trace writer on
    // the same documents, and the encoders alone on the same shard tables.
    const parseSeconds = await medianSeconds(REPEATS, async () => {
      for (const file of files) await openTorchFile(file, await Deno.readFile(file));
    });
    const writerSeconds = await rewrite(trace, `${dir}/rewritten`);
    const workerSeconds = await rewrite(trace, `${dir}/rewritten-worker`, "parquet", 1);
    // The same with Arrow IPC shards, the format before Parquet, for the side-by-side figure.
    const ipcSeconds = await rewrite(trace, `${dir}/rewritten-ipc`, "arrow");
    const encodeSeconds = await parquetEncodeSeconds(trace, tableToParquet);
    const wasmSeconds = await parquetEncodeSeconds(trace, tableToParquetWasm);
    const median = (values: number[]) => [...values].sort((a, b) => a - b)[values.length >> 1]!;
    const importSeconds = median(seconds);
    const fileMiB = files.reduce((n, f) => n + Deno.statSync(f).size, 0) / 2 ** 20;
    const figures: Figure[] = [
      {
        name:
          `tokens/s, SGLang .pt → trace (median of ${REPEATS}; a token = 1 position × 16 layers)`,
        value: tokens / importSeconds,
        unit: "tokens/s",
        target: 1_000_000,
        direction: "min",
      },
      {
        name: "token-layer rows/s (tokens × 16 MoE layers)",
        value: rows / importSeconds,
        unit: "rows/s",
      },
      {
        name: "tokens per CPU second (all threads) of the import",
        value: tokens / median(cpu),
        unit: "tokens/s",
      },
      {
        name: "stage: read + unzip + unpickle the .pt files",
        value: tokens / parseSeconds,
        unit: "tokens/s",
      },
      {
        name: "stage: the trace writer alone, same documents (Parquet)",
        value: tokens / writerSeconds,
        unit: "tokens/s",
      },
      {
        name: "stage: the same writer with 1 encoding worker",
        value: tokens / workerSeconds,
        unit: "tokens/s",
      },
      {
        name: "stage: moetrace's Parquet encoder alone on the same shard tables",
        value: tokens / encodeSeconds,
        unit: "tokens/s",
      },
      {
        name: "stage: parquet-wasm alone on the same tables (the encoder before)",
        value: tokens / wasmSeconds,
        unit: "tokens/s",
      },
      {
        name: "stage: the trace writer alone, Arrow IPC shards (before Parquet)",
        value: tokens / ipcSeconds,
        unit: "tokens/s",
      },
      { name: "tokens", value: tokens, unit: "tokens" },
      { name: "token-layer rows (MoE layers)", value: rows, unit: "rows" },
      { name: ".pt input", value: fileMiB, unit: "MiB" },
      {
        name: "import seconds (median; each run)",
        value: importSeconds,
        unit: `s (${seconds.map((s) => s.toFixed(2)).join(" / ")})`,
      },
      {
        name: "stage seconds: read whole / generic writer (of which the encoder)",
        value: parseSeconds + writerSeconds,
        unit: `s = ${parseSeconds.toFixed(2)} / ${writerSeconds.toFixed(2)} (${
          encodeSeconds.toFixed(2)
        })`,
      },
      { name: "peak RSS", value: peak, unit: "MiB" },
      { name: "load average (1 min) at the end", value: Deno.loadavg()[0]!, unit: "" },
    ];
    printFigures("bench import", figures, options.json);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Seconds `encode` takes to encode the shard tables of trace `dir` once more. */
async function parquetEncodeSeconds(
  dir: string,
  encode: (table: arrow.Table) => Uint8Array,
): Promise<number> {
  const reader = await TraceReader.open(dir);
  const tables: arrow.Table[] = [];
  for (const shard of reader.manifest.shards) {
    tables.push(parquetToTable(await Deno.readFile(`${dir}/${shard.file}`), { rows: shard.rows }));
  }
  const start = performance.now();
  for (const table of tables) encode(table);
  return (performance.now() - start) / 1000;
}

/** Writes the documents of trace `from` again into `to`; returns the writer's seconds. */
async function rewrite(
  from: string,
  to: string,
  format: ShardFormat = "parquet",
  encoders = 0,
): Promise<number> {
  const reader = await TraceReader.open(from);
  const docs: TraceDoc[] = [];
  for await (const d of reader.documents()) {
    // Copies: a document's arrays are views of its whole shard.
    docs.push({
      ...d,
      tokens: d.tokens.slice(),
      pieces: [...d.pieces],
      phase: d.phase!.slice(),
      experts: d.experts.slice(),
      weights: d.weights.slice(),
    });
  }
  const writer = await TraceWriter.open(to, {
    model: reader.manifest.model,
    capture: { ...reader.manifest.capture, domains: [] },
  }, { format, encoders });
  const start = performance.now();
  for (const doc of docs) await writer.add(doc);
  await writer.close();
  return (performance.now() - start) / 1000;
}
