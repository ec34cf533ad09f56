/**
 * Reading a trace: `TraceReader.batches()` streams one shard at a time, so
 * memory is bounded by the shard size, not the trace length; every shard is
 * checked against the manifest (bytes, fingerprint, rows, documents, column
 * types and widths, expert ids) as it is read.
 */
import * as arrow from "apache-arrow";
import { DataError, messageOf } from "../common/errors.ts";
import { readWhole } from "../common/fs.ts";
import {
  checkShardFiles,
  domainNameProblem,
  type Manifest,
  NO_EXPERT,
  readManifest,
  type RowShape,
  rowShape,
  type ShardEntry,
  shardFingerprint,
  TRACE_ID_KEY,
} from "./manifest.ts";
import { parquetToTable } from "./parquet.ts";
import type { TraceBatch, TraceDoc } from "./schema.ts";

/**
 * Which columns a read decodes: "all"; "doc" only (resume); "routing", every
 * column but the large ones a cache replay never reads (`weights`, `probs`
 * and the token pieces), which then come back empty: `weights` and
 * `pieceCodes` of length 0, `pieceNames` [], `probs` null.
 */
export type ShardColumns = "all" | "doc" | "routing";

/** The Parquet columns a "routing" read decodes. */
const ROUTING_COLUMNS = [
  "doc",
  "domain",
  "pos",
  "token",
  "phase",
  "experts",
  "spec",
  "request",
  "arrival_step",
];

export interface BatchOptions {
  /** Which columns to decode (default "all"; see ShardColumns). */
  columns?: ShardColumns;
  /**
   * Worker threads that read, check and decode shards ahead of the caller, by
   * shard, while batches are still yielded one at a time in manifest order
   * (default `defaultReadWorkers()` for traces of 2 or more shards and 65,536
   * or more rows, else 0: the caller's thread reads them).
   */
  workers?: number;
}

/**
 * Read workers by default: one per core but two (the caller's and the
 * system's), at most 4; none on fewer than 3 cores, where one worker made the
 * analysis pass 0.53× as fast and reads of 1M tokens 0.70× (2 cores shared
 * with other jobs, `deno task bench analysis` and `bench trace`).
 */
export function defaultReadWorkers(): number {
  return Math.max(0, Math.min(4, (navigator.hardwareConcurrency || 1) - 2));
}

/** Streams a trace shard by shard, checking each against the manifest. */
export class TraceReader {
  readonly dir: string;
  readonly manifest: Manifest;
  readonly shape: RowShape;

  constructor(dir: string, manifest: Manifest) {
    this.dir = dir;
    this.manifest = manifest;
    this.shape = rowShape(manifest);
  }

  /** Opens a trace and checks that every shard the manifest lists exists. */
  static async open(dir: string): Promise<TraceReader> {
    const manifest = await readManifest(dir);
    await checkShardFiles(dir, manifest);
    return new TraceReader(dir, manifest);
  }

  get rows(): number {
    return this.manifest.shards.reduce((n, s) => n + s.rows, 0);
  }

  get docs(): number {
    return this.manifest.shards.reduce((n, s) => n + s.docs, 0);
  }

  /** Yields each shard as one batch, in manifest order. */
  async *batches(options: BatchOptions = {}): AsyncGenerator<TraceBatch> {
    const shards = this.manifest.shards;
    const columns = options.columns ?? "all";
    const workers = options.workers ??
      (shards.length >= 2 && this.rows >= 65536 ? defaultReadWorkers() : 0);
    if (workers === 0 || columns === "doc" || shards.length < 2) {
      // The next shard's file is read and fingerprinted (off this thread) while
      // this one is decoded and used; faults are still reported in shard order.
      let next: Promise<Uint8Array> | null = null;
      try {
        for (let i = 0; i < shards.length; i++) {
          const bytes = await (next ?? readShardBytes(this.dir, shards[i]!));
          next = i + 1 < shards.length ? readShardBytes(this.dir, shards[i + 1]!) : null;
          next?.catch(() => {}); // reported when awaited, in order
          yield decodeShardBytes(bytes, this.dir, shards[i]!, this.shape, columns);
        }
      } finally {
        await next?.catch(() => {});
      }
      return;
    }
    const pool = new ShardReadPool(Math.min(workers, shards.length));
    try {
      // Each worker holds at most two shards: the one it decodes and the next.
      const window = 2 * pool.size;
      const pending: Promise<TraceBatch>[] = [];
      let next = 0;
      const submit = () => {
        const batch = pool.read(this.dir, shards[next]!, this.shape, columns);
        batch.catch(() => {}); // reported when awaited, in order
        pending.push(batch);
        next++;
      };
      while (next < shards.length && pending.length < window) submit();
      while (pending.length > 0) {
        const batch = await pending.shift()!;
        if (next < shards.length) submit();
        yield batch;
      }
    } finally {
      pool.close();
    }
  }

  /** Yields each document, in trace order, with its rows as subarrays of the batch. */
  async *documents(): AsyncGenerator<TraceDoc> {
    for await (const batch of this.batches()) yield* splitDocuments(batch, this.shape);
  }

  /** Reads and validates one shard. */
  readShard(shard: ShardEntry, options: BatchOptions = {}): Promise<TraceBatch> {
    return loadShard(this.dir, shard, this.shape, options.columns ?? "all");
  }
}

/**
 * Reads one shard of the trace in `dir` and checks it against its manifest
 * entry and the row shape (what TraceReader.readShard and the read workers do).
 */
export async function loadShard(
  dir: string,
  shard: ShardEntry,
  shape: RowShape,
  columns: ShardColumns,
): Promise<TraceBatch> {
  return decodeShardBytes(await readShardBytes(dir, shard), dir, shard, shape, columns);
}

/** A shard's bytes, checked against the manifest's size and fingerprint. */
async function readShardBytes(dir: string, shard: ShardEntry): Promise<Uint8Array> {
  const path = `${dir}/${shard.file}`;
  let bytes: Uint8Array;
  try {
    bytes = await readWhole(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new DataError(
        `Shard ${shard.file} listed in ${dir}/manifest.json does not exist.`,
      );
    }
    throw new DataError(`Cannot read shard ${path}: ${messageOf(error)}.`);
  }
  if (shard.bytes !== undefined && bytes.length !== shard.bytes) {
    throw new DataError(
      `Shard ${path} has ${bytes.length} bytes but the manifest says ${shard.bytes}; it is truncated or was changed.`,
    );
  }
  if (shard.fingerprint !== undefined && (await shardFingerprint(bytes)) !== shard.fingerprint) {
    throw new DataError(
      `Shard ${path} does not match its fingerprint in the manifest; it is corrupted or was changed.`,
    );
  }
  return bytes;
}

/** Decodes a shard's checked bytes and checks the table against the manifest and the row shape. */
function decodeShardBytes(
  bytes: Uint8Array,
  dir: string,
  shard: ShardEntry,
  shape: RowShape,
  columns: ShardColumns,
): TraceBatch {
  const path = `${dir}/${shard.file}`;
  const table = decodeFile(bytes, path, shard, columns);
  if (table.numRows !== shard.rows) {
    throw new DataError(
      `Shard ${path} has ${table.numRows} rows but the manifest says ${shard.rows}.`,
    );
  }
  return decodeShard(table, shape, path, shard, columns);
}

/** Read workers (read_worker.ts), each given shards round-robin. */
class ShardReadPool {
  readonly size: number;
  #workers: Worker[] = [];
  #pending = new Map<number, { resolve: (b: TraceBatch) => void; reject: (e: Error) => void }>();
  #next = 0;

  constructor(size: number) {
    this.size = size;
    for (let i = 0; i < size; i++) {
      const worker = new Worker(new URL("./read_worker.ts", import.meta.url).href, {
        type: "module",
      });
      worker.onmessage = (event) => {
        const { id, batch, error, data } = event.data;
        const pending = this.#pending.get(id);
        if (!pending) return;
        this.#pending.delete(id);
        if (batch) pending.resolve(batch);
        else pending.reject(data ? new DataError(error) : new Error(error));
      };
      worker.onerror = (event) => {
        event.preventDefault();
        for (const pending of this.#pending.values()) {
          pending.reject(new Error(`a shard read worker failed: ${event.message}`));
        }
        this.#pending.clear();
      };
      this.#workers.push(worker);
    }
  }

  read(
    dir: string,
    shard: ShardEntry,
    shape: RowShape,
    columns: ShardColumns,
  ): Promise<TraceBatch> {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#workers[id % this.size]!.postMessage({ id, dir, shard, shape, columns });
    });
  }

  close(): void {
    for (const worker of this.#workers) worker.terminate();
    this.#workers = [];
    this.#pending.clear();
  }
}

/** True for a shard stored as Parquet (the default since Parquet shards); else Arrow IPC. */
export function isParquetShard(file: string): boolean {
  return file.endsWith(".parquet");
}

/** A shard file's bytes as an Arrow table: Parquet by its name, Arrow IPC otherwise. */
function decodeFile(
  bytes: Uint8Array,
  path: string,
  shard: ShardEntry,
  columns: ShardColumns,
): arrow.Table {
  if (!isParquetShard(shard.file)) {
    try {
      return arrow.tableFromIPC(bytes);
    } catch {
      // The decoder's message can quote the file's first bytes as a length: not shown.
      throw new DataError(`Shard ${path} is not a readable Arrow IPC file.`);
    }
  }
  try {
    return parquetToTable(bytes, {
      rows: shard.rows,
      ...(columns === "doc" ? { columns: ["doc"] } : {}),
      ...(columns === "routing" ? { columns: ROUTING_COLUMNS } : {}),
    });
  } catch (error) {
    // The decoder's message can quote bytes of the file as a length ("need 174617449"):
    // its words are kept, its numbers not.
    throw new DataError(
      `Shard ${path} is not a readable Parquet file: ${
        messageOf(error).replace(/\d+/g, "N").replace(/\.$/, "")
      }.`,
    );
  }
}

/** Splits a batch into its documents (rows of one document are contiguous). */
export function* splitDocuments(batch: TraceBatch, shape: RowShape): Generator<TraceDoc> {
  const mk = shape.layers * shape.topK;
  const me = shape.layers * shape.experts;
  let start = 0;
  while (start < batch.rows) {
    let end = start + 1;
    while (end < batch.rows && batch.doc[end] === batch.doc[start]) end++;
    const doc: TraceDoc = {
      doc: batch.doc[start]!,
      domain: batch.domainNames[batch.domainCodes[start]!]!,
      tokens: batch.token.subarray(start, end),
      pieces: Array.from(batch.pieceCodes.subarray(start, end), (c) => batch.pieceNames[c]!),
      phase: batch.phase.subarray(start, end),
      experts: batch.experts.subarray(start * mk, end * mk),
      weights: batch.weights.subarray(start * mk, end * mk),
    };
    if (batch.probs) doc.probs = batch.probs.subarray(start * me, end * me);
    if (batch.spec) {
      doc.spec = batch.spec.subarray(start * mk * shape.lookahead, end * mk * shape.lookahead);
    }
    if (batch.requestCodes && batch.requestNames) {
      doc.request = batch.requestNames[batch.requestCodes[start]!]!;
    }
    if (batch.arrivalStep) doc.arrivalStep = batch.arrivalStep[start]!;
    yield doc;
    start = end;
  }
}

type Typed = Uint8Array | Uint16Array | Uint32Array | Int32Array | Float32Array;
type TypedCtor<T extends Typed> = { new (length: number): T; readonly name: string };

function decodeShard(
  table: arrow.Table,
  shape: RowShape,
  path: string,
  shard: ShardEntry,
  columns: ShardColumns,
): TraceBatch {
  const rows = table.numRows;
  const mk = shape.layers * shape.topK;
  const column = (name: string) => {
    const vector = table.getChild(name);
    if (!vector) throw new DataError(`Shard ${path} has no column "${name}".`);
    return vector;
  };
  const flat = <T extends Typed>(name: string, ctor: TypedCtor<T>, want: arrow.DataType): T => {
    const vector = column(name);
    if (String(vector.type) !== String(want)) {
      throw new DataError(
        `Shard ${path} column "${name}" has type ${vector.type}, expected ${want}.`,
      );
    }
    return concatValues(vector, ctor, rows);
  };
  const doc = flat("doc", Uint32Array, new arrow.Uint32());
  const docCount = countRuns(doc);
  if (docCount !== shard.docs) {
    throw new DataError(
      `Shard ${path} holds ${docCount} documents but the manifest says ${shard.docs}.`,
    );
  }
  if (columns === "doc") {
    checkTraceId(table, shape, path);
    return emptyBatchWithDocs(doc);
  }
  const list = <T extends Typed>(
    name: string,
    ctor: TypedCtor<T>,
    width: number,
    item: arrow.DataType,
  ): T => {
    const vector = column(name);
    const type = vector.type;
    if (!arrow.DataType.isFixedSizeList(type) || String(type.children[0]?.type) !== String(item)) {
      throw new DataError(
        `Shard ${path} column "${name}" has type ${type}, expected FixedSizeList[${width}]<${item}>.`,
      );
    }
    if (type.listSize !== width) {
      throw new DataError(
        `Shard ${path} column "${name}" has ${type.listSize} values per row, expected ${width}.`,
      );
    }
    if (vector.data.length === 1) {
      // One record batch (what the writer makes): hand out the IPC buffer, no copy.
      const data = vector.data[0]!;
      const child = data.children[0]!;
      const start = child.offset + data.offset * width;
      return (child.values as T).subarray(start, start + rows * width) as T;
    }
    const out = new ctor(rows * width);
    let offset = 0;
    for (const data of vector.data) {
      const child = data.children[0]!;
      const start = child.offset + data.offset * width;
      out.set((child.values as T).subarray(start, start + data.length * width) as never, offset);
      offset += data.length * width;
    }
    return out;
  };
  const [domainCodes, domainNames] = dictionary(column("domain"), path, "domain", rows);
  for (const name of domainNames) {
    const problem = domainNameProblem(name);
    if (problem) {
      throw new DataError(`Shard ${path}: its domain ${JSON.stringify(name)} ${problem}.`);
    }
  }
  const routing = columns === "routing";
  const [pieceCodes, pieceNames] = routing
    ? [new Int32Array(0), []]
    : dictionary(column("piece"), path, "piece", rows);
  const hasProbs = table.getChild("probs") !== null;
  if (shape.probs && !hasProbs && !routing) {
    throw new DataError(`Shard ${path} has no column "probs".`);
  }
  const hasSpec = table.getChild("spec") !== null;
  if (shape.lookahead > 0 && !hasSpec) throw new DataError(`Shard ${path} has no column "spec".`);
  const batch: TraceBatch = {
    rows,
    doc,
    domainCodes,
    domainNames,
    pos: flat("pos", Uint32Array, new arrow.Uint32()),
    token: flat("token", Uint32Array, new arrow.Uint32()),
    pieceCodes,
    pieceNames,
    phase: flat("phase", Uint8Array, new arrow.Uint8()),
    experts: list("experts", Uint16Array, mk, new arrow.Uint16()),
    weights: routing
      ? new Float32Array(0)
      : shape.weights === false && table.getChild("weights") === null
      ? new Float32Array(rows * mk).fill(1 / shape.topK)
      : list("weights", Float32Array, mk, new arrow.Float32()),
    probs: shape.probs && !routing
      ? list("probs", Float32Array, shape.layers * shape.experts, new arrow.Float32())
      : null,
    spec: shape.lookahead > 0
      ? list("spec", Uint16Array, mk * shape.lookahead, new arrow.Uint16())
      : null,
  };
  if (shape.requests) {
    [batch.requestCodes, batch.requestNames] = dictionary(column("request"), path, "request", rows);
  }
  if (shape.arrivalSteps) batch.arrivalStep = flat("arrival_step", Uint32Array, new arrow.Uint32());
  checkLengths(batch, shape, path, routing);
  checkExpertIds(batch.experts, shape.experts, false, path, "experts");
  checkRouting(batch, shape, path);
  checkTraceId(table, shape, path);
  if (batch.spec) checkExpertIds(batch.spec, shape.experts, true, path, "spec");
  return batch;
}

/** A shard carries the id of its trace (or of a part merged into it), when the trace has one. */
function checkTraceId(table: arrow.Table, shape: RowShape, path: string): void {
  if (!shape.traceIds) return;
  const id = table.schema.metadata.get(TRACE_ID_KEY);
  if (id === undefined) {
    throw new DataError(
      `Shard ${path} carries no trace id; it was not written for this trace (shards from another trace are refused).`,
    );
  }
  if (!shape.traceIds.includes(id)) {
    throw new DataError(
      `Shard ${path} belongs to another trace (id ${JSON.stringify(id.slice(0, 64))}, not ${
        shape.traceIds[0]
      }); copying shards between traces would mix their documents.`,
    );
  }
}

/** Every column holds exactly rows × width values (a damaged buffer holds fewer). */
function checkLengths(batch: TraceBatch, shape: RowShape, path: string, routing: boolean): void {
  const mk = shape.layers * shape.topK;
  const expected: [string, ArrayLike<number> | null, number][] = [
    ["pos", batch.pos, batch.rows],
    ["token", batch.token, batch.rows],
    ["phase", batch.phase, batch.rows],
    ["experts", batch.experts, batch.rows * mk],
    ["weights", routing ? null : batch.weights, batch.rows * mk],
    ["probs", batch.probs, batch.rows * shape.layers * shape.experts],
    ["spec", batch.spec, batch.rows * mk * shape.lookahead],
  ];
  for (const [name, values, length] of expected) {
    if (values && values.length !== length) {
      throw new DataError(
        `Shard ${path} column "${name}" holds ${values.length} values, expected ${length}.`,
      );
    }
  }
}

/** Expert ids index per-expert tables downstream: out-of-range ids are refused here. */
function checkExpertIds(
  ids: Uint16Array,
  numExperts: number,
  allowNone: boolean,
  path: string,
  name: string,
): void {
  if (!allowNone && (numExperts & (numExperts - 1)) === 0 && ids.byteOffset % 4 === 0) {
    // E a power of two: an id is out of range iff it has a bit above E − 1;
    // test two ids per 32-bit word (the common case, and the hot path).
    const words = new Uint32Array(ids.buffer, ids.byteOffset, ids.length >> 1);
    const high = ~((numExperts - 1) * 0x10001) >>> 0;
    let any = 0;
    for (let i = 0; i < words.length; i++) any |= words[i]! & high;
    if (any === 0 && (ids.length % 2 === 0 || ids[ids.length - 1]! < numExperts)) return;
  }
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (id >= numExperts && !(allowNone && id === NO_EXPERT)) {
      throw new DataError(
        `Shard ${path} column "${name}" holds expert id ${id}, but the model has ${numExperts} experts.`,
      );
    }
  }
}

/**
 * A router picks k different experts with finite weights: a token that lists
 * an expert twice, or a NaN or infinite weight, is corrupted routing (what a
 * NaN forward logs) that would analyse as perfect repetition.
 */
function checkRouting(batch: TraceBatch, shape: RowShape, path: string): void {
  const { experts, weights } = batch;
  const k = shape.topK;
  const where = (i: number) => {
    const row = Math.floor(i / (shape.layers * k));
    return `row ${row} (document ${batch.doc[row]}, position ${batch.pos[row]}) layer index ${
      Math.floor(i / k) % shape.layers
    }`;
  };
  if (k === 2) {
    for (let i = 0; i < experts.length; i += 2) {
      if (experts[i] === experts[i + 1]) {
        throw new DataError(
          `Shard ${path} ${where(i)} lists expert ${
            experts[i]
          } twice; a router picks different experts.`,
        );
      }
    }
  } else if (k > 2) {
    for (let i = 0; i < experts.length; i += k) {
      for (let a = i + 1; a < i + k; a++) {
        for (let b = i; b < a; b++) {
          if (experts[a] === experts[b]) {
            throw new DataError(
              `Shard ${path} ${where(i)} lists expert ${
                experts[a]
              } twice; a router picks different experts.`,
            );
          }
        }
      }
    }
  }
  // NaN and ±Inf have every exponent bit set.
  const bits = new Uint32Array(weights.buffer, weights.byteOffset, weights.length);
  for (let i = 0; i < bits.length; i++) {
    if ((bits[i]! & 0x7f800000) === 0x7f800000) {
      throw new DataError(
        `Shard ${path} ${where(i)} has gate weight ${weights[i]}; weights must be finite.`,
      );
    }
  }
}

/** The values of a primitive column as one typed array (zero-copy when it is one chunk). */
function concatValues<T extends Typed>(vector: arrow.Vector, ctor: TypedCtor<T>, rows: number): T {
  if (vector.data.length === 1) {
    const data = vector.data[0]!;
    return (data.values as T).subarray(data.offset, data.offset + rows) as T;
  }
  const out = new ctor(rows);
  let offset = 0;
  for (const data of vector.data) {
    out.set((data.values as T).subarray(data.offset, data.offset + data.length) as never, offset);
    offset += data.length;
  }
  return out;
}

function dictionary(
  vector: arrow.Vector,
  path: string,
  name: string,
  rows: number,
): [Int32Array, string[]] {
  const type = vector.type;
  if (!arrow.DataType.isDictionary(type) || !arrow.DataType.isUtf8(type.dictionary)) {
    throw new DataError(
      `Shard ${path} column "${name}" has type ${type}, expected Dictionary<Int32, Utf8>.`,
    );
  }
  if (vector.data.length !== 1) {
    throw new DataError(`Shard ${path} column "${name}" must be a single record batch.`);
  }
  const data = vector.data[0]!;
  const names = (data.dictionary?.toArray() ?? []) as string[];
  const raw = data.values as ArrayLike<number> & {
    subarray(a: number, b: number): ArrayLike<number>;
  };
  const codes = Int32Array.from(raw.subarray(data.offset, data.offset + rows));
  for (let i = 0; i < rows; i++) {
    if (codes[i]! < 0 || codes[i]! >= names.length) {
      throw new DataError(`Shard ${path} column "${name}" has a dictionary code out of range.`);
    }
  }
  return [codes, names];
}

function countRuns(values: Uint32Array): number {
  let runs = values.length > 0 ? 1 : 0;
  for (let i = 1; i < values.length; i++) if (values[i] !== values[i - 1]) runs++;
  return runs;
}

function emptyBatchWithDocs(doc: Uint32Array): TraceBatch {
  return {
    rows: doc.length,
    doc,
    domainCodes: new Int32Array(0),
    domainNames: [],
    pos: new Uint32Array(0),
    token: new Uint32Array(0),
    pieceCodes: new Int32Array(0),
    pieceNames: [],
    phase: new Uint8Array(0),
    experts: new Uint16Array(0),
    weights: new Float32Array(0),
    probs: null,
    spec: null,
  };
}
