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
 * The recording is made here, not by PyTorch: a small writer emits the same
 * pickle opcodes `torch.save` does (protocol 2, `_rebuild_tensor_v2` over
 * `torch.IntStorage`) into a zip of stored entries, as torch does.
 */
import process from "node:process";
import type * as arrow from "apache-arrow";
import { zipSync } from "fflate";
import type { BenchOptions } from "./measure.ts";
import { type Figure, medianSeconds, printFigures, rssMiB } from "./measure.ts";
import { importFiles } from "../trace/import/command.ts";
import { openTorchFile, storedEntries } from "../trace/import/torch_zip.ts";
import { parquetToTable, tableToParquet, tableToParquetWasm } from "../trace/parquet.ts";
import { type ShardFormat, type TraceDoc, TraceReader, TraceWriter } from "../trace/mod.ts";
import { Rng } from "../common/random.ts";

const LAYERS = 17; // layer 0 dense, as DeepSeek's first_k_dense_replace
const MOE_LAYERS = 16;
const WIDTH = 8; // SGLang's recorder always keeps 8 columns
const TOP_K = 8;
const LOGICAL = 64;
const PHYSICAL = 72;
const RANKS = 2;
const SEQUENCES_PER_RANK = 320;
const PROMPT = 900;
const GENERATED = 100;
const BATCH = 32; // sequences decoding together
const REPEATS = 3;

export async function benchImport(options: BenchOptions): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-bench-import-" });
  try {
    const files: string[] = [];
    let tokens = 0;
    for (let rank = 0; rank < RANKS; rank++) {
      const { bytes, tokens: n } = recording(rank);
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
      for (const file of files) openTorchFile(file, await Deno.readFile(file));
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

/** One rank's recording: prefill passes of one sequence each, then decode passes of BATCH. */
function recording(rank: number): { bytes: Uint8Array; tokens: number } {
  const rng = new Rng(17 + rank);
  // Physical experts 64..71 replicate logical 0..7; the rest are a fixed permutation.
  const map = new Int32Array(LAYERS * PHYSICAL);
  for (let l = 0; l < LAYERS; l++) {
    for (let p = 0; p < PHYSICAL; p++) {
      map[l * PHYSICAL + p] = p < LOGICAL ? (p * 5 + l) % LOGICAL : p - LOGICAL;
    }
  }
  const passes: Pass[] = [];
  let tokens = 0;
  for (let wave = 0; wave < SEQUENCES_PER_RANK / BATCH; wave++) {
    const seqTokens: number[][] = [];
    for (let s = 0; s < BATCH; s++) {
      const ids = Array.from({ length: PROMPT + GENERATED }, () => rng.int(50000));
      seqTokens.push(ids);
      passes.push(pass(rng, [{ ids: ids.slice(0, PROMPT), start: 0 }], 1));
    }
    for (let step = 0; step < GENERATED; step++) {
      const segments = seqTokens.map((ids) => ({
        ids: [ids[PROMPT + step]!],
        start: PROMPT + step,
      }));
      passes.push(pass(rng, segments, 2));
    }
    tokens += BATCH * (PROMPT + GENERATED);
  }
  return { bytes: torchSave(rank, passes, map), tokens };
}

interface Pass {
  mode: number;
  ids: number[];
  positions: number[];
  lens: number[] | null;
  /** [LAYERS, T, WIDTH] physical ids, −1 for the dense layer. */
  topk: Int32Array;
}

function pass(rng: Rng, segments: { ids: number[]; start: number }[], mode: number): Pass {
  const ids = segments.flatMap((s) => s.ids);
  const positions = segments.flatMap((s) => s.ids.map((_, i) => s.start + i));
  const T = ids.length;
  const topk = new Int32Array(LAYERS * T * WIDTH).fill(-1);
  const chosen = new Uint8Array(PHYSICAL);
  for (let l = 1; l < LAYERS; l++) {
    for (let t = 0; t < T; t++) {
      // 8 distinct logical experts; replicas 64..71 stand in for 0..7 half the time.
      chosen.fill(0);
      for (let j = 0; j < TOP_K; j++) {
        let e: number;
        do e = rng.int(LOGICAL); while (chosen[e]);
        chosen[e] = 1;
        // map[p] = (5p + l) mod 64 for p < 64, whose inverse is 13(e − l) mod 64.
        const physical = e < 8 && rng.int(2) === 1
          ? LOGICAL + e
          : ((((e - l) % LOGICAL) + LOGICAL) * 13) % LOGICAL;
        topk[(l * T + t) * WIDTH + j] = physical;
      }
    }
  }
  return {
    mode,
    ids,
    positions,
    lens: mode === 2 ? null : segments.map((s) => s.ids.length),
    topk,
  };
}

/** The bytes `torch.save` would write for {records: [...], last_physical_to_logical_map}. */
function torchSave(rank: number, passes: Pass[], map: Int32Array): Uint8Array {
  const p = new PickleWriter();
  const storages: Record<string, Uint8Array> = {};
  const tensor = (data: Int32Array, shape: number[], storage: "IntStorage" | "LongStorage") => {
    const key = String(Object.keys(storages).length);
    storages[key] = storage === "IntStorage"
      ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
      : new Uint8Array(BigInt64Array.from(data, (v) => BigInt(v)).buffer);
    const stride = shape.map((_, d) => shape.slice(d + 1).reduce((a, b) => a * b, 1));
    p.global("torch._utils", "_rebuild_tensor_v2").mark();
    p.mark().str("storage").global("torch", storage).str(key).str("cpu").int(data.length).tuple();
    p.op(0x51); // BINPERSID
    p.int(0).mark().ints(shape).tuple().mark().ints(stride).tuple().op(0x89); // NEWFALSE
    p.global("collections", "OrderedDict").op(0x29).op(0x52); // EMPTY_TUPLE REDUCE
    p.tuple().op(0x52);
  };
  p.op(0x80, 2).op(0x7d).mark(); // PROTO 2, EMPTY_DICT, MARK
  p.str("records").op(0x5d); // EMPTY_LIST
  for (const [i, pass] of passes.entries()) {
    p.op(0x7d).mark(); // a record dict
    p.str("forward_pass_id").int(i).str("rank").int(rank).str("gatherer_key").str("primary");
    p.str("input_ids").list(pass.ids).str("positions").list(pass.positions);
    p.str("extend_seq_lens");
    if (pass.lens) p.list(pass.lens);
    else p.op(0x4e); // NONE
    p.str("forward_mode").int(pass.mode);
    p.str("topk_ids_of_layer");
    tensor(pass.topk, [LAYERS, pass.ids.length, WIDTH], "IntStorage");
    p.str("misc_objects").op(0x5d);
    p.str("global_physical_count");
    tensor(new Int32Array(LAYERS * PHYSICAL), [LAYERS, PHYSICAL], "IntStorage");
    p.op(0x75).op(0x61); // SETITEMS, APPEND
  }
  p.str("last_physical_to_logical_map");
  tensor(map, [LAYERS, PHYSICAL], "LongStorage");
  p.op(0x75).op(0x2e); // SETITEMS, STOP
  const entries: Record<string, Uint8Array> = {
    "archive/data.pkl": p.bytes(),
    "archive/byteorder": new TextEncoder().encode("little"),
    "archive/version": new TextEncoder().encode("3\n"),
  };
  for (const [key, data] of Object.entries(storages)) entries[`archive/data/${key}`] = data;
  // torch.save pads each local header with an "FB" extra field so that the
  // entry's data starts at a multiple of 64 bytes; the same here, so that the
  // importer reads int32 storages in place as it does torch's files.
  const zippable: Record<string, [Uint8Array, { extra: Record<number, Uint8Array> }]> = {};
  let offset = 0;
  for (const [name, data] of Object.entries(entries)) {
    const header = 30 + new TextEncoder().encode(name).length + 4;
    const pad = (64 - ((offset + header) % 64)) % 64;
    zippable[name] = [data, { extra: { 0x4246: new Uint8Array(pad) } }];
    offset += header + pad + data.length;
  }
  const bytes = zipSync(zippable, { level: 0 });
  for (const [name, data] of Object.entries(storedEntries(bytes) ?? {})) {
    if (data.byteOffset % 64 !== 0) throw new Error(`bench import: ${name} is not 64-byte aligned`);
  }
  return bytes;
}

/** Just enough of a protocol-2 pickler for the structure above. */
class PickleWriter {
  #chunks: Uint8Array[] = [];
  #buffer = new Uint8Array(1 << 16);
  #view = new DataView(this.#buffer.buffer);
  #at = 0;

  #room(n: number): void {
    if (this.#at + n <= this.#buffer.length) return;
    this.#chunks.push(this.#buffer.slice(0, this.#at));
    this.#buffer = new Uint8Array(Math.max(1 << 16, n));
    this.#view = new DataView(this.#buffer.buffer);
    this.#at = 0;
  }

  op(...codes: number[]): this {
    this.#room(codes.length);
    for (const c of codes) this.#buffer[this.#at++] = c;
    return this;
  }

  mark(): this {
    return this.op(0x28);
  }

  tuple(): this {
    return this.op(0x74);
  }

  int(v: number): this {
    this.#room(5);
    this.#buffer[this.#at++] = 0x4a; // BININT
    this.#view.setInt32(this.#at, v, true);
    this.#at += 4;
    return this;
  }

  ints(values: number[]): this {
    for (const v of values) this.int(v);
    return this;
  }

  /** EMPTY_LIST then APPENDS in batches of 1000, as pickle does. */
  list(values: number[]): this {
    this.op(0x5d);
    for (let i = 0; i < values.length; i += 1000) {
      this.mark().ints(values.slice(i, i + 1000)).op(0x65);
    }
    return this;
  }

  str(s: string): this {
    const bytes = new TextEncoder().encode(s);
    this.#room(5 + bytes.length);
    this.#buffer[this.#at++] = 0x58; // BINUNICODE
    this.#view.setUint32(this.#at, bytes.length, true);
    this.#at += 4;
    this.#buffer.set(bytes, this.#at);
    this.#at += bytes.length;
    return this;
  }

  global(module: string, name: string): this {
    const bytes = new TextEncoder().encode(`c${module}\n${name}\n`);
    this.#room(bytes.length);
    this.#buffer.set(bytes, this.#at);
    this.#at += bytes.length;
    return this;
  }

  bytes(): Uint8Array {
    this.#chunks.push(this.#buffer.slice(0, this.#at));
    const total = this.#chunks.reduce((n, c) => n + c.length, 0);
    const out = new Uint8Array(total);
    let at = 0;
    for (const c of this.#chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}
