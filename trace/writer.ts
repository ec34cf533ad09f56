/**
 * Writing a trace: documents are buffered and written as whole-document
 * shards, each to a temporary name then renamed, and the manifest is
 * rewritten the same way after every shard. A killed writer therefore leaves
 * a valid trace of whole documents, and `TraceWriter.open(..., { resume: true })`
 * carries on without duplicating or losing any.
 */
import { DataError } from "../common/errors.ts";
import { removeStaleTemporaries, writeFileAtomic } from "../common/atomic_write.ts";
import { pathExists } from "../common/fs.ts";
import {
  type CaptureFacts,
  DEFAULT_ROWS_PER_SHARD,
  type Manifest,
  type ModelFacts,
  readManifest,
  type RowShape,
  rowShape,
  shardFingerprint,
  TRACE_FORMAT,
  validateManifest,
  writeManifest,
} from "./manifest.ts";
import { TraceReader } from "./reader.ts";
import { encodeShard, type TraceDoc } from "./schema.ts";

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
