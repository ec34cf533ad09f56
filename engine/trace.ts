/**
 * The trace format, version 1 (DESIGN.md "Trace format"): a directory with a
 * `manifest.json` and Arrow IPC shards of one row per token.
 *
 * This module has no GPU imports: analysis/ and cache/ read traces made on a
 * big GPU elsewhere on a laptop.
 *
 * Writing: documents are buffered and written as whole-document shards, each
 * to a temporary name then renamed, and the manifest is rewritten the same way
 * after every shard. A killed writer therefore leaves a valid trace of whole
 * documents, and `TraceWriter.open(..., { resume: true })` carries on without
 * duplicating or losing any.
 *
 * Reading: `TraceReader.batches()` streams one shard at a time, so memory is
 * bounded by the shard size, not the trace length; every shard is checked
 * against the manifest (rows, documents, column types and widths) as it is read.
 */
import * as arrow from "apache-arrow";
import { DataError, messageOf } from "../common/errors.ts";
import { removeStaleTemporaries, writeFileAtomic } from "../common/atomic_write.ts";
import { pathExists } from "../common/fs.ts";

export const TRACE_FORMAT = "moetrace-trace/1";
export const TOOL_VERSION = "0.1.0";
/** Marks a speculative pick for a layer l+d that does not exist. */
export const NO_EXPERT = 65535;
/** Rows per shard unless the writer is told otherwise; about 20 MB for 32 layers × top-2. */
export const DEFAULT_ROWS_PER_SHARD = 65536;

/** Architecture facts that analysis and simulation need. */
export interface ModelFacts {
  name: string;
  /** config.json `model_type`, e.g. `mixtral`, or `synthetic` / `imported`. */
  family: string;
  num_layers: number;
  /** Indices of the MoE layers, in order; the trace's layer axis follows it. */
  moe_layers: number[];
  num_experts: number;
  top_k: number;
  num_shared_experts: number;
  hidden_size: number;
  /** Parameters of one routed expert (all its matrices). */
  expert_params: number;
  /** Weight dtype of the checkpoint, e.g. `float32`, `bfloat16`. */
  dtype: string;
}

/** How the trace was made. */
export interface CaptureFacts {
  /** Corpus path or prompts file the tokens came from. */
  corpus: string;
  /** Domains in the order they were first captured. */
  domains: string[];
  mode: "teacher-forced" | "generate";
  /** D: speculative picks for layers l+1..l+D are stored in `spec` when D > 0. */
  lookahead: number;
  /** Whether the full router distribution is stored in `probs`. */
  probs: boolean;
  seed: number;
  tool_version: string;
  created: string;
  updated: string;
  /** True once the producer finished; false while a capture is running or was interrupted. */
  complete: boolean;
  /** Producer-specific settings (flags of the command that made the trace). */
  settings?: Record<string, unknown>;
}

export interface ShardEntry {
  /** Path relative to the trace directory. */
  file: string;
  rows: number;
  docs: number;
  /** File size in bytes (checked before decoding, when present). */
  bytes?: number;
  /**
   * SHA-256 of the file's first FINGERPRINT_HEAD bytes and last
   * FINGERPRINT_TAIL bytes, hex: they hold the Arrow schema, dictionaries,
   * message headers and footer, whose corruption could make the Arrow decoder
   * allocate without bound. Checked before decoding, when present.
   */
  fingerprint?: string;
}

export const FINGERPRINT_HEAD = 2 * 2 ** 20;
export const FINGERPRINT_TAIL = 64 * 2 ** 10;

/** The fingerprint of a shard's bytes (see ShardEntry.fingerprint). */
export async function shardFingerprint(bytes: Uint8Array): Promise<string> {
  const head = bytes.subarray(0, Math.min(bytes.length, FINGERPRINT_HEAD));
  const tail = bytes.subarray(Math.max(head.length, bytes.length - FINGERPRINT_TAIL));
  const joined = new Uint8Array(head.length + tail.length);
  joined.set(head);
  joined.set(tail, head.length);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", joined));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

export interface Manifest {
  format: string;
  model: ModelFacts;
  capture: CaptureFacts;
  shards: ShardEntry[];
}

/** One document's router log, as a writer takes it. T tokens, M MoE layers. */
export interface TraceDoc {
  doc: number;
  domain: string;
  /** [T] token ids. */
  tokens: Uint32Array;
  /** [T] each token's text. */
  pieces: string[];
  /** [T] 0 prompt, 1 generated; all 0 when absent. */
  phase?: Uint8Array;
  /** [T, M, k] chosen experts, first choice first. */
  experts: Uint16Array;
  /** [T, M, k] gate weights actually applied. */
  weights: Float32Array;
  /** [T, M, E] full router distribution, when the capture stores it. */
  probs?: Float32Array;
  /** [T, M, D, k] speculative top-k of layer l+d's router on layer l's MoE input. */
  spec?: Uint16Array;
}

/** A run of rows from one shard, column by column. Documents never span batches. */
export interface TraceBatch {
  rows: number;
  /** [rows] */
  doc: Uint32Array;
  /** [rows] index into `domainNames`. */
  domainCodes: Int32Array;
  domainNames: string[];
  /** [rows] */
  pos: Uint32Array;
  /** [rows] */
  token: Uint32Array;
  /** [rows] index into `pieceNames`. */
  pieceCodes: Int32Array;
  pieceNames: string[];
  /** [rows] */
  phase: Uint8Array;
  /** [rows, M, k] */
  experts: Uint16Array;
  /** [rows, M, k] */
  weights: Float32Array;
  /** [rows, M, E] or null */
  probs: Float32Array | null;
  /** [rows, M, D, k] or null */
  spec: Uint16Array | null;
}

/** Widths of the list columns, derived from the manifest. */
export interface RowShape {
  layers: number;
  topK: number;
  experts: number;
  lookahead: number;
  probs: boolean;
}

export function rowShape(manifest: Manifest): RowShape {
  return {
    layers: manifest.model.moe_layers.length,
    topK: manifest.model.top_k,
    experts: manifest.model.num_experts,
    lookahead: manifest.capture.lookahead,
    probs: manifest.capture.probs,
  };
}

// ---------------------------------------------------------------------------
// Manifest

/** Reads and validates `DIR/manifest.json`. */
export async function readManifest(dir: string): Promise<Manifest> {
  const path = `${dir}/manifest.json`;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new DataError(`${dir} is not a trace: ${path} does not exist.`);
    }
    throw new DataError(`Cannot read ${path}: ${messageOf(error)}.`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new DataError(`${path} is not valid JSON: ${messageOf(error)}.`);
  }
  return validateManifest(json, path);
}

/** Checks the shape of a parsed manifest; `where` names it in errors. */
export function validateManifest(json: unknown, where: string): Manifest {
  if (!isObject(json)) throw new DataError(`${where} must hold a JSON object.`);
  if (json.format !== TRACE_FORMAT) {
    throw new DataError(
      `${where} has format ${JSON.stringify(json.format)}, expected "${TRACE_FORMAT}".`,
    );
  }
  const model = json.model;
  if (!isObject(model)) throw new DataError(`${where} field "model" must be an object.`);
  for (const key of ["num_layers", "num_experts", "top_k", "hidden_size", "expert_params"]) {
    requireCount(model[key], `${where} field "model.${key}"`, key === "num_layers" ? 1 : 0);
  }
  requireCount(model.num_shared_experts, `${where} field "model.num_shared_experts"`, 0);
  const numExperts = model.num_experts as number;
  const topK = model.top_k as number;
  if (numExperts < 1 || numExperts >= NO_EXPERT) {
    throw new DataError(
      `${where} field "model.num_experts" must be in 1..65534, got ${numExperts}.`,
    );
  }
  if (topK < 1 || topK > numExperts) {
    throw new DataError(
      `${where} field "model.top_k" must be in 1..num_experts (${numExperts}), got ${topK}.`,
    );
  }
  const moeLayers = model.moe_layers;
  if (
    !Array.isArray(moeLayers) || moeLayers.length === 0 ||
    !moeLayers.every((l, i) =>
      Number.isInteger(l) && l >= 0 && l < (model.num_layers as number) &&
      (i === 0 || l > moeLayers[i - 1])
    )
  ) {
    throw new DataError(
      `${where} field "model.moe_layers" must be a non-empty increasing list of layer indices below num_layers.`,
    );
  }
  for (const key of ["name", "family", "dtype"]) {
    if (typeof model[key] !== "string") {
      throw new DataError(`${where} field "model.${key}" must be a string.`);
    }
  }
  const capture = json.capture;
  if (!isObject(capture)) throw new DataError(`${where} field "capture" must be an object.`);
  if (capture.mode !== "teacher-forced" && capture.mode !== "generate") {
    throw new DataError(
      `${where} field "capture.mode" must be "teacher-forced" or "generate", got ${
        JSON.stringify(capture.mode)
      }.`,
    );
  }
  requireCount(capture.lookahead, `${where} field "capture.lookahead"`, 0);
  if (typeof capture.probs !== "boolean") {
    throw new DataError(`${where} field "capture.probs" must be true or false.`);
  }
  if (!Array.isArray(capture.domains) || !capture.domains.every((d) => typeof d === "string")) {
    throw new DataError(`${where} field "capture.domains" must be a list of strings.`);
  }
  const shards = json.shards;
  if (!Array.isArray(shards)) throw new DataError(`${where} field "shards" must be a list.`);
  shards.forEach((shard, i) => {
    if (
      !isObject(shard) || typeof shard.file !== "string" || shard.file === "" ||
      shard.file.startsWith("/") || [...shard.file].some((c) => c < " ")
    ) {
      throw new DataError(
        `${where} field "shards[${i}].file" must be a file path relative to the trace, got ${
          JSON.stringify(isObject(shard) ? shard.file : shard)
        }.`,
      );
    }
    requireCount(shard.rows, `${where} field "shards[${i}].rows"`, 0);
    requireCount(shard.docs, `${where} field "shards[${i}].docs"`, 0);
    if (shard.bytes !== undefined) {
      requireCount(shard.bytes, `${where} field "shards[${i}].bytes"`, 0);
    }
    if (shard.fingerprint !== undefined && typeof shard.fingerprint !== "string") {
      throw new DataError(`${where} field "shards[${i}].fingerprint" must be a string.`);
    }
  });
  return json as unknown as Manifest;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function requireCount(value: unknown, what: string, min: number): void {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min) {
    throw new DataError(`${what} must be an integer ≥ ${min}, got ${JSON.stringify(value)}.`);
  }
}

async function writeManifest(dir: string, manifest: Manifest): Promise<void> {
  await writeFileAtomic(`${dir}/manifest.json`, JSON.stringify(manifest, null, 2) + "\n");
}

// ---------------------------------------------------------------------------
// Writer

export interface TraceWriterOptions {
  /** Rows after which a shard is written (default DEFAULT_ROWS_PER_SHARD). */
  rowsPerShard?: number;
  /**
   * Carry on with an existing trace in `dir` (default false). Its model facts
   * and row shape must match; the documents it holds are in `completedDocs`.
   */
  resume?: boolean;
}

/** Streams documents into a trace directory as whole-document shards. */
export class TraceWriter {
  readonly dir: string;
  readonly shape: RowShape;
  #manifest: Manifest;
  #rowsPerShard: number;
  #pending: TraceDoc[] = [];
  #pendingRows = 0;
  #completed: Set<number>;
  #closed = false;

  private constructor(
    dir: string,
    manifest: Manifest,
    rowsPerShard: number,
    completed: Set<number>,
  ) {
    this.dir = dir;
    this.#manifest = manifest;
    this.shape = rowShape(manifest);
    this.#rowsPerShard = rowsPerShard;
    this.#completed = completed;
  }

  /**
   * Starts a trace in `dir`, or with `resume` carries on with the one there.
   * Without `resume` an existing trace is an error, so nothing is overwritten.
   */
  static async open(
    dir: string,
    init: { model: ModelFacts; capture: Omit<CaptureFacts, "created" | "updated" | "complete"> },
    options: TraceWriterOptions = {},
  ): Promise<TraceWriter> {
    const rowsPerShard = options.rowsPerShard ?? DEFAULT_ROWS_PER_SHARD;
    const now = new Date().toISOString();
    const fresh: Manifest = {
      format: TRACE_FORMAT,
      model: init.model,
      capture: { ...init.capture, created: now, updated: now, complete: false },
      shards: [],
    };
    validateManifest(fresh, "the new trace's manifest");
    const exists = await pathExists(`${dir}/manifest.json`);
    if (exists && !options.resume) {
      throw new DataError(
        `${dir} already holds a trace; choose another --out or remove it first.`,
      );
    }
    if (!exists) {
      await Deno.mkdir(`${dir}/shards`, { recursive: true });
      await writeManifest(dir, fresh);
      return new TraceWriter(dir, fresh, rowsPerShard, new Set());
    }
    const existing = await readManifest(dir);
    const mismatch = describeMismatch(existing, fresh);
    if (mismatch) {
      throw new DataError(`Cannot resume the trace in ${dir}: ${mismatch}.`);
    }
    await removeStaleTemporaries(`${dir}/shards`);
    await removeStaleTemporaries(dir);
    const completed = new Set<number>();
    const reader = new TraceReader(dir, existing);
    for await (const batch of reader.batches({ columns: "doc" })) {
      for (const doc of batch.doc) completed.add(doc);
    }
    existing.capture.complete = false;
    existing.capture.updated = now;
    await writeManifest(dir, existing);
    return new TraceWriter(dir, existing, rowsPerShard, completed);
  }

  get manifest(): Readonly<Manifest> {
    return this.#manifest;
  }

  /** Documents already written in earlier runs or flushed in this one. */
  get completedDocs(): ReadonlySet<number> {
    return this.#completed;
  }

  /** Queues a document; writes a shard once enough rows are waiting. */
  async add(doc: TraceDoc): Promise<void> {
    if (this.#closed) throw new Error("TraceWriter.add after close");
    checkDoc(doc, this.shape);
    if (this.#completed.has(doc.doc) || this.#pending.some((d) => d.doc === doc.doc)) {
      throw new DataError(`Document ${doc.doc} is already in the trace in ${this.dir}.`);
    }
    if (!this.#manifest.capture.domains.includes(doc.domain)) {
      this.#manifest.capture.domains.push(doc.domain);
    }
    this.#pending.push(doc);
    this.#pendingRows += doc.tokens.length;
    if (this.#pendingRows >= this.#rowsPerShard) await this.flush();
  }

  /** Writes the queued documents as one shard and records it in the manifest. */
  async flush(): Promise<void> {
    if (this.#pending.length === 0) return;
    const index = this.#manifest.shards.length;
    const file = `shards/${String(index).padStart(5, "0")}.arrow`;
    const bytes = encodeShard(this.#pending, this.shape);
    await writeFileAtomic(`${this.dir}/${file}`, bytes);
    this.#manifest.shards.push({
      file,
      rows: this.#pendingRows,
      docs: this.#pending.length,
      bytes: bytes.length,
      fingerprint: await shardFingerprint(bytes),
    });
    this.#manifest.capture.updated = new Date().toISOString();
    await writeManifest(this.dir, this.#manifest);
    for (const doc of this.#pending) this.#completed.add(doc.doc);
    this.#pending = [];
    this.#pendingRows = 0;
  }

  /** Flushes and marks the trace complete. */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.flush();
    this.#manifest.capture.complete = true;
    this.#manifest.capture.updated = new Date().toISOString();
    await writeManifest(this.dir, this.#manifest);
    this.#closed = true;
  }
}

function describeMismatch(existing: Manifest, fresh: Manifest): string | null {
  for (const key of Object.keys(fresh.model) as (keyof ModelFacts)[]) {
    if (JSON.stringify(existing.model[key]) !== JSON.stringify(fresh.model[key])) {
      return `its model.${key} is ${JSON.stringify(existing.model[key])}, this run has ${
        JSON.stringify(fresh.model[key])
      }`;
    }
  }
  for (const key of ["mode", "lookahead", "probs", "seed", "corpus"] as const) {
    if (existing.capture[key] !== fresh.capture[key]) {
      return `its capture.${key} is ${JSON.stringify(existing.capture[key])}, this run has ${
        JSON.stringify(fresh.capture[key])
      }`;
    }
  }
  // Settings that select or cut documents must match too, or a resumed run
  // would mix two different selections in one trace.
  const before = existing.capture.settings ?? {};
  const now = fresh.capture.settings ?? {};
  for (const key of new Set([...Object.keys(before), ...Object.keys(now)])) {
    if (JSON.stringify(before[key]) !== JSON.stringify(now[key])) {
      return `its capture.settings.${key} is ${JSON.stringify(before[key])}, this run has ${
        JSON.stringify(now[key])
      }`;
    }
  }
  return null;
}

function checkDoc(doc: TraceDoc, shape: RowShape): void {
  const t = doc.tokens.length;
  const mk = shape.layers * shape.topK;
  const expect = (name: string, got: number | undefined, want: number) => {
    if (got !== want) {
      throw new Error(`TraceDoc ${doc.doc}: ${name} has length ${got}, expected ${want}`);
    }
  };
  expect("pieces", doc.pieces.length, t);
  if (doc.phase) expect("phase", doc.phase.length, t);
  expect("experts", doc.experts.length, t * mk);
  expect("weights", doc.weights.length, t * mk);
  if (shape.probs) expect("probs", doc.probs?.length, t * shape.layers * shape.experts);
  if (shape.lookahead > 0) expect("spec", doc.spec?.length, t * mk * shape.lookahead);
}

// ---------------------------------------------------------------------------
// Arrow encoding

const UTF8_DICT = () => new arrow.Dictionary(new arrow.Utf8(), new arrow.Int32());

function listType(width: number, item: arrow.DataType): arrow.FixedSizeList {
  return new arrow.FixedSizeList(width, new arrow.Field("item", item, false));
}

/** The Arrow schema of a shard for this row shape. */
export function shardSchema(shape: RowShape): arrow.Schema {
  const mk = shape.layers * shape.topK;
  const fields = [
    new arrow.Field("doc", new arrow.Uint32(), false),
    new arrow.Field("domain", UTF8_DICT(), false),
    new arrow.Field("pos", new arrow.Uint32(), false),
    new arrow.Field("token", new arrow.Uint32(), false),
    new arrow.Field("piece", UTF8_DICT(), false),
    new arrow.Field("phase", new arrow.Uint8(), false),
    new arrow.Field("experts", listType(mk, new arrow.Uint16()), false),
    new arrow.Field("weights", listType(mk, new arrow.Float32()), false),
  ];
  if (shape.probs) {
    fields.push(
      new arrow.Field("probs", listType(shape.layers * shape.experts, new arrow.Float32()), false),
    );
  }
  if (shape.lookahead > 0) {
    fields.push(new arrow.Field("spec", listType(mk * shape.lookahead, new arrow.Uint16()), false));
  }
  return new arrow.Schema(fields);
}

/** Encodes whole documents as one Arrow IPC file. */
export function encodeShard(docs: readonly TraceDoc[], shape: RowShape): Uint8Array {
  const rows = docs.reduce((n, d) => n + d.tokens.length, 0);
  const mk = shape.layers * shape.topK;
  const doc = new Uint32Array(rows);
  const pos = new Uint32Array(rows);
  const token = new Uint32Array(rows);
  const phase = new Uint8Array(rows);
  const experts = new Uint16Array(rows * mk);
  const weights = new Float32Array(rows * mk);
  const probs = shape.probs ? new Float32Array(rows * shape.layers * shape.experts) : null;
  const spec = shape.lookahead > 0 ? new Uint16Array(rows * mk * shape.lookahead) : null;
  const domains = new DictionaryBuilder(rows);
  const pieces = new DictionaryBuilder(rows);
  let r = 0;
  for (const d of docs) {
    const t = d.tokens.length;
    doc.fill(d.doc, r, r + t);
    for (let i = 0; i < t; i++) {
      pos[r + i] = i;
      domains.push(d.domain);
      pieces.push(d.pieces[i]!);
    }
    token.set(d.tokens, r);
    if (d.phase) phase.set(d.phase, r);
    experts.set(d.experts, r * mk);
    weights.set(d.weights, r * mk);
    if (probs && d.probs) probs.set(d.probs, r * shape.layers * shape.experts);
    if (spec && d.spec) spec.set(d.spec, r * mk * shape.lookahead);
    r += t;
  }
  const schema = shardSchema(shape);
  const field = (name: string) => schema.fields.find((f) => f.name === name)!.type;
  const list = (name: string, values: Uint16Array | Float32Array) => {
    const type = field(name) as arrow.FixedSizeList;
    const child = arrow.makeData({
      type: type.children[0]!.type,
      length: values.length,
      data: values,
    });
    return arrow.makeData({ type, length: rows, nullCount: 0, child });
  };
  const children: arrow.Data[] = [
    arrow.makeData({ type: new arrow.Uint32(), length: rows, data: doc }),
    domains.toData(),
    arrow.makeData({ type: new arrow.Uint32(), length: rows, data: pos }),
    arrow.makeData({ type: new arrow.Uint32(), length: rows, data: token }),
    pieces.toData(),
    arrow.makeData({ type: new arrow.Uint8(), length: rows, data: phase }),
    list("experts", experts),
    list("weights", weights),
  ];
  if (probs) children.push(list("probs", probs));
  if (spec) children.push(list("spec", spec));
  const struct = arrow.makeData({
    type: new arrow.Struct(schema.fields),
    length: rows,
    nullCount: 0,
    children,
  });
  return arrow.tableToIPC(new arrow.Table([new arrow.RecordBatch(schema, struct)]), "file");
}

/** Builds a dictionary<utf8> column: codes into a list of distinct strings. */
class DictionaryBuilder {
  #codes: Int32Array;
  #length = 0;
  #index = new Map<string, number>();
  #values: string[] = [];

  constructor(capacity: number) {
    this.#codes = new Int32Array(capacity);
  }

  push(value: string): void {
    let code = this.#index.get(value);
    if (code === undefined) {
      code = this.#values.length;
      this.#index.set(value, code);
      this.#values.push(value);
    }
    this.#codes[this.#length++] = code;
  }

  toData(): arrow.Data {
    const dictionary = arrow.vectorFromArray(this.#values, new arrow.Utf8());
    return arrow.makeData({
      type: UTF8_DICT(),
      length: this.#length,
      nullCount: 0,
      data: this.#codes.subarray(0, this.#length),
      dictionary,
    });
  }
}

// ---------------------------------------------------------------------------
// Reader

export interface BatchOptions {
  /** Read only the `doc` column (for resume); default all columns. */
  columns?: "all" | "doc";
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
    for (const shard of manifest.shards) {
      if (!(await pathExists(`${dir}/${shard.file}`))) {
        throw new DataError(
          `Shard ${shard.file} listed in ${dir}/manifest.json does not exist.`,
        );
      }
    }
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
    for (const shard of this.manifest.shards) {
      yield await this.readShard(shard, options);
    }
  }

  /** Yields each document, in trace order, with its rows as subarrays of the batch. */
  async *documents(): AsyncGenerator<TraceDoc> {
    for await (const batch of this.batches()) yield* splitDocuments(batch, this.shape);
  }

  /** Reads and validates one shard. */
  async readShard(shard: ShardEntry, options: BatchOptions = {}): Promise<TraceBatch> {
    const path = `${this.dir}/${shard.file}`;
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) {
        throw new DataError(
          `Shard ${shard.file} listed in ${this.dir}/manifest.json does not exist.`,
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
    let table: arrow.Table;
    try {
      table = arrow.tableFromIPC(bytes);
    } catch (error) {
      throw new DataError(`Shard ${path} is not a readable Arrow IPC file: ${messageOf(error)}.`);
    }
    if (table.numRows !== shard.rows) {
      throw new DataError(
        `Shard ${path} has ${table.numRows} rows but the manifest says ${shard.rows}.`,
      );
    }
    return decodeShard(table, this.shape, path, shard, options.columns ?? "all");
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
  columns: "all" | "doc",
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
  if (columns === "doc") return emptyBatchWithDocs(doc);
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
  const [pieceCodes, pieceNames] = dictionary(column("piece"), path, "piece", rows);
  const hasProbs = table.getChild("probs") !== null;
  if (shape.probs && !hasProbs) throw new DataError(`Shard ${path} has no column "probs".`);
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
    weights: list("weights", Float32Array, mk, new arrow.Float32()),
    probs: shape.probs
      ? list("probs", Float32Array, shape.layers * shape.experts, new arrow.Float32())
      : null,
    spec: shape.lookahead > 0
      ? list("spec", Uint16Array, mk * shape.lookahead, new arrow.Uint16())
      : null,
  };
  checkLengths(batch, shape, path);
  checkExpertIds(batch.experts, shape.experts, false, path, "experts");
  if (batch.spec) checkExpertIds(batch.spec, shape.experts, true, path, "spec");
  return batch;
}

/** Every column holds exactly rows × width values (a damaged buffer holds fewer). */
function checkLengths(batch: TraceBatch, shape: RowShape, path: string): void {
  const mk = shape.layers * shape.topK;
  const expected: [string, ArrayLike<number> | null, number][] = [
    ["pos", batch.pos, batch.rows],
    ["token", batch.token, batch.rows],
    ["phase", batch.phase, batch.rows],
    ["experts", batch.experts, batch.rows * mk],
    ["weights", batch.weights, batch.rows * mk],
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
