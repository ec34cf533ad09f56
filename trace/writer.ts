/**
 * Writing a trace: documents are buffered and written as whole-document
 * shards (Parquet `shards/part-NNNNN.parquet` by default, Arrow IPC
 * `shards/NNNNN.arrow` on request), each to a temporary name then renamed, and the manifest is
 * rewritten the same way after every shard. A killed writer therefore leaves
 * a valid trace of whole documents, and `TraceWriter.open(..., { resume: true })`
 * carries on without duplicating or losing any.
 */
import * as arrow from "apache-arrow";
import { DataError } from "../common/errors.ts";
import { removeStaleTemporaries, writeError, writeFileAtomic } from "../common/atomic_write.ts";
import { pathExists } from "../common/fs.ts";
import {
  type CaptureFacts,
  checkShardFiles,
  DEFAULT_ROWS_PER_SHARD,
  domainNameProblem,
  type Manifest,
  type ModelFacts,
  readManifest,
  type RowShape,
  rowShape,
  shardFingerprint,
  TRACE_FORMAT,
  TRACE_ID_KEY,
  validateManifest,
  writeManifest,
} from "./manifest.ts";
import { TraceReader } from "./reader.ts";
import { tableToParquet } from "./parquet.ts";
import { defaultEncoders, ParquetPool } from "./parquet_pool.ts";
import { shardTable, type TraceDoc } from "./schema.ts";

/** Shards with fewer rows are encoded on the writer's thread: a worker would cost more than it saves. */
const MIN_WORKER_ROWS = 8192;

/** How shards are stored: Parquet (the default) or Arrow IPC files. */
export type ShardFormat = "parquet" | "arrow";

export interface TraceWriterOptions {
  /** Rows after which a shard is written (default DEFAULT_ROWS_PER_SHARD). */
  rowsPerShard?: number;
  /**
   * Carry on with an existing trace in `dir` (default false). Its model facts
   * and row shape must match; the documents it holds are in `completedDocs`.
   */
  resume?: boolean;
  /** Format of the shards this writer adds (default "parquet"); a trace may mix both. */
  format?: ShardFormat;
  /**
   * Worker threads that encode Parquet shards while the caller goes on
   * (default `defaultEncoders()`: cores − 1, 1 to 4; 0 encodes on the
   * caller's thread). At most this many shards are in flight; each is
   * committed to the manifest in order, so an interrupted writer still
   * leaves whole documents, and loses at most the shards in flight.
   */
  encoders?: number;
  /** The new trace's id (default a random UUID): tests that compare two traces' bytes fix it. */
  traceId?: string;
}

/** A shard being encoded, committed to the manifest when its bytes are ready. */
interface InFlight {
  file: string;
  rows: number;
  docs: number[];
  bytes: Promise<Uint8Array>;
}

/** Streams documents into a trace directory as whole-document shards. */
export class TraceWriter {
  readonly dir: string;
  readonly shape: RowShape;
  #manifest: Manifest;
  #rowsPerShard: number;
  #format: ShardFormat;
  #encoders: number;
  #pool: ParquetPool | null = null;
  #inFlight: InFlight[] = [];
  /** Documents queued or in flight, not yet committed. */
  #queued = new Set<number>();
  #pending: TraceDoc[] = [];
  #pendingRows = 0;
  #completed: Set<number>;
  #closed = false;

  private constructor(
    dir: string,
    manifest: Manifest,
    rowsPerShard: number,
    completed: Set<number>,
    format: ShardFormat,
    encoders: number,
  ) {
    this.dir = dir;
    this.#manifest = manifest;
    this.shape = rowShape(manifest);
    this.#rowsPerShard = rowsPerShard;
    this.#format = format;
    this.#encoders = encoders;
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
    const format = options.format ?? "parquet";
    const encoders = options.encoders ?? defaultEncoders();
    const now = new Date().toISOString();
    const fresh: Manifest = {
      format: TRACE_FORMAT,
      trace_id: options.traceId ?? crypto.randomUUID(),
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
      try {
        await Deno.mkdir(`${dir}/shards`, { recursive: true });
      } catch (error) {
        // A file where the trace or its shards folder should be, a parent that is a file, ...
        throw writeError(`${dir}/shards`, error);
      }
      await checkShardsFolder(dir);
      await writeManifest(dir, fresh);
      return new TraceWriter(dir, fresh, rowsPerShard, new Set(), format, encoders);
    }
    const existing = await readManifest(dir);
    const mismatch = describeMismatch(existing, fresh);
    if (mismatch) {
      throw new DataError(`Cannot resume the trace in ${dir}: ${mismatch}.`);
    }
    // Before anything is deleted or written: a shards folder or shard that is a
    // symlink out of the trace would have this run write and delete elsewhere.
    await checkShardsFolder(dir);
    await checkShardFiles(dir, existing);
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
    return new TraceWriter(dir, existing, rowsPerShard, completed, format, encoders);
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
    const problem = domainNameProblem(doc.domain);
    if (problem) {
      throw new DataError(
        `Document ${doc.doc}'s domain ${JSON.stringify(doc.domain)} ${problem}; rename the domain.`,
      );
    }
    if (this.#completed.has(doc.doc) || this.#queued.has(doc.doc)) {
      throw new DataError(`Document ${doc.doc} is already in the trace in ${this.dir}.`);
    }
    if (!this.#manifest.capture.domains.includes(doc.domain)) {
      this.#manifest.capture.domains.push(doc.domain);
    }
    this.#pending.push(doc);
    this.#queued.add(doc.doc);
    this.#pendingRows += doc.tokens.length;
    if (this.#pendingRows >= this.#rowsPerShard) await this.#submit();
  }

  /** Writes the queued documents as one shard and waits until every shard is in the manifest. */
  async flush(): Promise<void> {
    await this.#submit();
    while (this.#inFlight.length > 0) await this.#commitOldest();
  }

  /**
   * Starts encoding the queued documents as one shard; waits first for the
   * oldest shard in flight when as many as there are encoders are.
   */
  async #submit(): Promise<void> {
    if (this.#pending.length === 0) return;
    const workers = this.#format === "parquet" && this.#encoders > 0 &&
      this.#pendingRows >= MIN_WORKER_ROWS;
    while (this.#inFlight.length >= Math.max(1, workers ? this.#encoders : 0)) {
      await this.#commitOldest();
    }
    const table = this.#format === "parquet" ? this.#table() : null;
    let bytes: Promise<Uint8Array>;
    if (table && workers) {
      this.#pool ??= new ParquetPool(this.#encoders);
      bytes = this.#pool.encode(table);
    } else {
      bytes = Promise.resolve(
        table ? tableToParquet(table) : arrow.tableToIPC(this.#table(), "file"),
      );
    }
    this.#inFlight.push({
      file: this.#nextFile(),
      rows: this.#pendingRows,
      docs: this.#pending.map((d) => d.doc),
      bytes,
    });
    // Settled later; a rejection is reported by the commit that awaits it.
    bytes.catch(() => {});
    this.#pending = [];
    this.#pendingRows = 0;
    if (!workers) await this.#commitOldest();
  }

  /** The queued documents as one shard's table, carrying the trace's id in its schema metadata. */
  #table(): arrow.Table {
    const table = shardTable(this.#pending, this.shape);
    const id = this.#manifest.trace_id;
    if (id === undefined) return table;
    const metadata = new Map(table.schema.metadata);
    metadata.set(TRACE_ID_KEY, id);
    return new arrow.Table(new arrow.Schema(table.schema.fields, metadata), table.batches);
  }

  /** Writes the oldest shard in flight and records it in the manifest. */
  async #commitOldest(): Promise<void> {
    const shard = this.#inFlight[0]!;
    const bytes = await shard.bytes;
    await writeFileAtomic(`${this.dir}/${shard.file}`, bytes);
    this.#manifest.shards.push({
      file: shard.file,
      rows: shard.rows,
      docs: shard.docs.length,
      bytes: bytes.length,
      fingerprint: await shardFingerprint(bytes),
    });
    this.#manifest.capture.updated = new Date().toISOString();
    await writeManifest(this.dir, this.#manifest);
    this.#inFlight.shift();
    for (const doc of shard.docs) {
      this.#completed.add(doc);
      this.#queued.delete(doc);
    }
  }

  /**
   * Records shards written into this trace's folder by other threads (an
   * import's shard makers), in order, as if this writer had written them:
   * their documents count as done, and the manifest is rewritten once.
   * Nothing may be queued or in flight.
   */
  async adoptShards(
    shards: { file: string; rows: number; docs: number[]; bytes: number; fingerprint: string }[],
    domains: readonly string[],
  ): Promise<void> {
    if (this.#closed || this.#pending.length > 0 || this.#inFlight.length > 0) {
      throw new Error("TraceWriter.adoptShards with documents of its own queued, or after close");
    }
    const taken = new Set(this.#manifest.shards.map((s) => s.file));
    for (const shard of shards) {
      if (taken.has(shard.file) || !/^shards\/part-\d{5,}\.parquet$/.test(shard.file)) {
        throw new Error(`TraceWriter.adoptShards: ${shard.file} is taken or not a shard name`);
      }
      for (const doc of shard.docs) {
        if (this.#completed.has(doc)) {
          throw new DataError(`Document ${doc} is already in the trace in ${this.dir}.`);
        }
        this.#completed.add(doc);
      }
      taken.add(shard.file);
      this.#manifest.shards.push({
        file: shard.file,
        rows: shard.rows,
        docs: shard.docs.length,
        bytes: shard.bytes,
        fingerprint: shard.fingerprint,
      });
    }
    for (const domain of domains) {
      if (!this.#manifest.capture.domains.includes(domain)) {
        this.#manifest.capture.domains.push(domain);
      }
    }
    this.#manifest.capture.updated = new Date().toISOString();
    await writeManifest(this.dir, this.#manifest);
  }

  /** A shard name neither the manifest nor a shard in flight uses (a merged trace lists other traces' shards too). */
  #nextFile(): string {
    const taken = new Set([...this.#manifest.shards, ...this.#inFlight].map((s) => s.file));
    for (let index = this.#manifest.shards.length + this.#inFlight.length;; index++) {
      const file = this.#format === "parquet"
        ? parquetShardFile(index)
        : `shards/${String(index).padStart(5, "0")}.arrow`;
      if (!taken.has(file)) return file;
    }
  }

  /** Flushes and marks the trace complete, recording `facts` of this run (capture's GPU memory) in the manifest. */
  async close(facts: Partial<CaptureFacts> = {}): Promise<void> {
    if (this.#closed) return;
    try {
      await this.flush();
    } finally {
      this.#pool?.close();
      this.#pool = null;
    }
    Object.assign(this.#manifest.capture, facts);
    this.#manifest.capture.complete = true;
    this.#manifest.capture.updated = new Date().toISOString();
    await writeManifest(this.dir, this.#manifest);
    this.#closed = true;
  }
}

/** The name of a trace's `index`th Parquet shard. */
export function parquetShardFile(index: number): string {
  return `shards/part-${String(index).padStart(5, "0")}.parquet`;
}

/** The shards folder of a trace must be a real folder inside it, not a link elsewhere. */
async function checkShardsFolder(dir: string): Promise<void> {
  const info = await Deno.lstat(`${dir}/shards`);
  if (!info.isDirectory) {
    throw new DataError(
      `${dir}/shards is ${
        info.isSymlink ? "a symbolic link" : "not a folder"
      }; a trace's shards folder must be a folder inside it, so that writing and tidying it stays there.`,
    );
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
  for (
    const key of [
      "mode",
      "lookahead",
      "probs",
      "seed",
      "corpus",
      "requests",
      "arrival_steps",
    ] as const
  ) {
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
      return `its capture.settings.${key} is ${
        JSON.stringify(before[key]) ?? "not recorded"
      }, this run has ${JSON.stringify(now[key]) ?? "none"}`;
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
  if (shape.requests && typeof doc.request !== "string") {
    throw new Error(
      `TraceDoc ${doc.doc}: the trace has a request column but the document has no request`,
    );
  }
  if (shape.arrivalSteps && !(Number.isInteger(doc.arrivalStep) && doc.arrivalStep! >= 0)) {
    throw new Error(
      `TraceDoc ${doc.doc}: the trace has an arrival_step column but the document has none`,
    );
  }
}
