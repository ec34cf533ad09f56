/**
 * One row per token: the in-memory document and batch types, the Arrow
 * schema of a shard, and the table of whole documents that a shard holds
 * (written as Parquet by parquet.ts, or as one Arrow IPC file).
 */
import * as arrow from "apache-arrow";
import type { RowShape } from "./manifest.ts";

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
  /** The serving request this document belongs to, when the trace has a `request` column. */
  request?: string;
  /** The serving step its request arrived at, when the trace has an `arrival_step` column. */
  arrivalStep?: number;
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
  /** [rows] index into `requestNames`, when the trace has a `request` column. */
  requestCodes?: Int32Array;
  requestNames?: string[];
  /** [rows] when the trace has an `arrival_step` column. */
  arrivalStep?: Uint32Array;
}

export const UTF8_DICT = () => new arrow.Dictionary(new arrow.Utf8(), new arrow.Int32());

function listType(width: number, item: arrow.DataType): arrow.FixedSizeList {
  return new arrow.FixedSizeList(width, new arrow.Field("item", item, false));
}

/**
 * The Arrow schema of a shard for this row shape; `weights` false leaves out
 * the weights column (a shard of a trace whose log recorded no weights, all
 * 1/k: see `shardTable`).
 */
export function shardSchema(shape: RowShape, weights = true): arrow.Schema {
  const mk = shape.layers * shape.topK;
  const fields = [
    new arrow.Field("doc", new arrow.Uint32(), false),
    new arrow.Field("domain", UTF8_DICT(), false),
    new arrow.Field("pos", new arrow.Uint32(), false),
    new arrow.Field("token", new arrow.Uint32(), false),
    new arrow.Field("piece", UTF8_DICT(), false),
    new arrow.Field("phase", new arrow.Uint8(), false),
    new arrow.Field("experts", listType(mk, new arrow.Uint16()), false),
  ];
  if (weights) {
    fields.push(new arrow.Field("weights", listType(mk, new arrow.Float32()), false));
  }
  if (shape.probs) {
    fields.push(
      new arrow.Field("probs", listType(shape.layers * shape.experts, new arrow.Float32()), false),
    );
  }
  if (shape.lookahead > 0) {
    fields.push(new arrow.Field("spec", listType(mk * shape.lookahead, new arrow.Uint16()), false));
  }
  if (shape.requests) fields.push(new arrow.Field("request", UTF8_DICT(), false));
  if (shape.arrivalSteps) fields.push(new arrow.Field("arrival_step", new arrow.Uint32(), false));
  return new arrow.Schema(fields);
}

/** Encodes whole documents as one Arrow IPC file (the format of traces before Parquet). */
export function encodeShard(docs: readonly TraceDoc[], shape: RowShape): Uint8Array {
  return arrow.tableToIPC(shardTable(docs, shape), "file");
}

/** Whole documents as one Arrow table of one record batch, in `shardSchema(shape)`. */
export function shardTable(docs: readonly TraceDoc[], shape: RowShape): arrow.Table {
  const rows = docs.reduce((n, d) => n + d.tokens.length, 0);
  const mk = shape.layers * shape.topK;
  const doc = new Uint32Array(rows);
  const pos = new Uint32Array(rows);
  const token = new Uint32Array(rows);
  const phase = new Uint8Array(rows);
  // The documents' own buffer when they lie end to end in one (as the
  // SGLang importer's documents do, views of one buffer), else a copy.
  const adjacent = adjacentViews(docs.map((d) => d.experts));
  const experts = adjacent ?? new Uint16Array(rows * mk);
  // Left out when the log recorded no weights and every value is the 1/k
  // placeholder (readers give it back): the column would be most of the
  // bytes to encode. A trace that says not recorded but holds some real
  // weights (interchange JSONL where only some documents had them) keeps it.
  const placeholder = Math.fround(1 / shape.topK);
  const omitWeights = shape.weights === false &&
    docs.every((d) =>
      (d.weights.buffer === placeholderBuffer.buffer && placeholderBuffer[0] === placeholder) ||
      allEqual(d.weights, placeholder)
    );
  const weights = omitWeights ? null : new Float32Array(rows * mk);
  const probs = shape.probs ? new Float32Array(rows * shape.layers * shape.experts) : null;
  const spec = shape.lookahead > 0 ? new Uint16Array(rows * mk * shape.lookahead) : null;
  const domains = new DictionaryBuilder(rows);
  const pieces = new DictionaryBuilder(rows);
  const requests = shape.requests ? new DictionaryBuilder(rows) : null;
  const arrivalStep = shape.arrivalSteps ? new Uint32Array(rows) : null;
  let r = 0;
  for (const d of docs) {
    const t = d.tokens.length;
    doc.fill(d.doc, r, r + t);
    domains.pushRepeated(d.domain, t);
    for (let i = 0; i < t; i++) {
      pos[r + i] = i;
      pieces.push(d.pieces[i]!);
    }
    token.set(d.tokens, r);
    if (d.phase) phase.set(d.phase, r);
    if (!adjacent) experts.set(d.experts, r * mk);
    if (weights) weights.set(d.weights, r * mk);
    if (probs && d.probs) probs.set(d.probs, r * shape.layers * shape.experts);
    if (spec && d.spec) spec.set(d.spec, r * mk * shape.lookahead);
    if (requests) requests.pushRepeated(d.request ?? "", t);
    if (arrivalStep) arrivalStep.fill(d.arrivalStep ?? 0, r, r + t);
    r += t;
  }
  const schema = shardSchema(shape, !omitWeights);
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
  ];
  if (weights) children.push(list("weights", weights));
  if (probs) children.push(list("probs", probs));
  if (spec) children.push(list("spec", spec));
  if (requests) children.push(requests.toData());
  if (arrivalStep) {
    children.push(arrow.makeData({ type: new arrow.Uint32(), length: rows, data: arrivalStep }));
  }
  const struct = arrow.makeData({
    type: new arrow.Struct(schema.fields),
    length: rows,
    nullCount: 0,
    children,
  });
  return new arrow.Table([new arrow.RecordBatch(schema, struct)]);
}

/** One view over `views` when each starts where the one before ends in the same buffer, else null. */
function adjacentViews(views: readonly Uint16Array[]): Uint16Array | null {
  const first = views[0];
  if (!first) return null;
  let end = first.byteOffset + first.byteLength;
  for (let i = 1; i < views.length; i++) {
    const v = views[i]!;
    if (v.buffer !== first.buffer || v.byteOffset !== end) return null;
    end += v.byteLength;
  }
  return new Uint16Array(first.buffer, first.byteOffset, (end - first.byteOffset) / 2);
}

let placeholderBuffer = new Float32Array(0);

/**
 * `length` gate weights of 1/k each, for logs that record no weights: a view
 * of one shared, never-written buffer, so a large import does not allocate
 * and fill a weights array per document, and `shardTable` knows such a view
 * without reading it.
 */
export function placeholderWeights(length: number, k: number): Float32Array {
  if (placeholderBuffer.length < length || placeholderBuffer[0] !== Math.fround(1 / k)) {
    placeholderBuffer = new Float32Array(Math.max(length, 1 << 16)).fill(1 / k);
  }
  return placeholderBuffer.subarray(0, length);
}

function allEqual(values: Float32Array, value: number): boolean {
  for (let i = 0; i < values.length; i++) if (values[i] !== value) return false;
  return true;
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
    this.#codes[this.#length++] = this.#code(value);
  }

  pushRepeated(value: string, times: number): void {
    this.#codes.fill(this.#code(value), this.#length, this.#length + times);
    this.#length += times;
  }

  #code(value: string): number {
    let code = this.#index.get(value);
    if (code === undefined) {
      code = this.#values.length;
      this.#index.set(value, code);
      this.#values.push(value);
    }
    return code;
  }

  toData(): arrow.Data {
    const dictionary = arrow.makeVector(utf8Data(this.#values));
    return arrow.makeData({
      type: UTF8_DICT(),
      length: this.#length,
      nullCount: 0,
      data: this.#codes.subarray(0, this.#length),
      dictionary,
    });
  }
}

const ENCODER = new TextEncoder();

/**
 * A utf8 column of `values`: their bytes end to end and [n + 1] offsets,
 * written directly (apache-arrow's vectorFromArray builds it value by value,
 * most of a shard's encode time for a dictionary of 50,000 token pieces).
 */
function utf8Data(values: readonly string[]): arrow.Data<arrow.Utf8> {
  const offsets = new Int32Array(values.length + 1);
  // One encode of all values end to end; when every character took one byte
  // (ASCII: token ids as text, most pieces) the offsets are the strings'
  // lengths, else each value is encoded on its own to find where it ends.
  const joined = ENCODER.encode(values.join(""));
  let chars = 0;
  for (let i = 0; i < values.length; i++) offsets[i + 1] = chars += values[i]!.length;
  let bytes = joined;
  if (joined.length !== chars) {
    bytes = new Uint8Array(joined.length);
    let at = 0;
    for (let i = 0; i < values.length; i++) {
      at += ENCODER.encodeInto(values[i]!, bytes.subarray(at)).written;
      offsets[i + 1] = at;
    }
  }
  return arrow.makeData({
    type: new arrow.Utf8(),
    length: values.length,
    nullCount: 0,
    valueOffsets: offsets,
    data: bytes,
  });
}
