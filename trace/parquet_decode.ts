/**
 * A fast path for reading the Parquet shards moetrace writes: their column
 * chunks decoded straight into typed arrays (PLAIN f32/u32 columns viewed in
 * place, whole-byte dictionary indices copied natively), instead of through
 * parquet-wasm.
 *
 * Why: parquet-wasm spends 130–230 ms on one 66,000-row shard of 32 layers ×
 * top-2 (its `columns` option is ignored, so every column is decoded even to
 * read `doc`), about ten times an Arrow IPC read; that bounded every pass over
 * a trace. The files moetrace writes use a small part of the format (version 2
 * data pages, PLAIN or dictionary-encoded values, no compression, fixed-size
 * lists whose levels mark exactly W values per row); traces written before
 * parquet_encode.ts (parquet-wasm's delta-encoded integers, zstd pages undone
 * by the runtime's native zstd, `node:zlib`) are in that part too. This
 * reader decodes only that part. Anything else, or anything that does not
 * check out (a level pattern, a page size, a value out of its type's range),
 * returns null and the caller decodes the file with parquet-wasm, which then
 * reports any fault in its own words: the fast path never decides that a file
 * is bad.
 *
 * The result is the same Arrow table parquet-wasm gives: the file's embedded
 * Arrow schema (`ARROW:schema`) decides each column's Arrow type.
 */
import * as arrow from "apache-arrow";
import { zstdDecompressSync } from "node:zlib";
import { CompactReader, list, num, refuse, str, sub, type ThriftStruct } from "./parquet_thrift.ts";
import {
  bitWidthOf,
  bytePacked,
  deltaBinaryPacked,
  dictionaryIndices,
  hybridRuns,
  packedGroups16,
} from "./parquet_runs.ts";

/** Decodes a Parquet file into an Arrow table, or null when the fast path does not apply. */
export function fastParquetToTable(bytes: Uint8Array, columns?: string[]): arrow.Table | null {
  try {
    return decode(bytes, columns);
  } catch {
    // FastPathRefused, or bytes that broke a decoding step (base64, UTF-8,
    // a read past a buffer): parquet-wasm decides, and words any fault.
    return null;
  }
}

/** Scratch space for delta-encoded pages, grown to the largest page seen. */
let scratch = new Int32Array(0);

// ---------------------------------------------------------------- file layout

/** Parquet's physical types this reader takes. */
const INT32 = 1;
const FLOAT = 4;
const BYTE_ARRAY = 6;
/** Encodings. */
const PLAIN = 0;
const PLAIN_DICTIONARY = 2;
const DELTA_BINARY_PACKED = 5;
const RLE_DICTIONARY = 8;
/** Codecs. */
const UNCOMPRESSED = 0;
const ZSTD = 6;
/** Page types. */
const DICTIONARY_PAGE = 2;
const DATA_PAGE_V2 = 3;

interface ChunkInfo {
  physicalType: number;
  codec: number;
  /** Offset of the first page (the dictionary page when there is one). */
  start: number;
  compressedSize: number;
  numValues: number;
}

interface FileLayout {
  rows: number;
  /** The Arrow schema the file embeds. */
  schema: arrow.Schema;
  /** Column path (dot-joined) → its chunk in each row group, and the row group's rows. */
  chunks: Map<string, { chunk: ChunkInfo; rows: number }[]>;
  /** Column path → [max definition level, max repetition level]. */
  levels: Map<string, [number, number]>;
}

function readLayout(bytes: Uint8Array): FileLayout {
  const n = bytes.length;
  if (n < 12) refuse("too short");
  const magic = (at: number) =>
    bytes[at] === 0x50 && bytes[at + 1] === 0x41 && bytes[at + 2] === 0x52 &&
    bytes[at + 3] === 0x31;
  if (!magic(0) || !magic(n - 4)) refuse("no PAR1 magic");
  const footerLength = new DataView(bytes.buffer, bytes.byteOffset + n - 8, 4).getUint32(0, true);
  if (footerLength > n - 12) refuse("footer longer than the file");
  const meta = new CompactReader(bytes.subarray(n - 8 - footerLength, n - 8), 0).struct();
  const rows = num(meta, 3);
  // Levels from the schema tree: OPTIONAL adds a definition level, REPEATED both.
  const elements = list(meta, 2).map((e) => e as ThriftStruct);
  const levels = new Map<string, [number, number]>();
  let index = 1;
  const walk = (path: string[], def: number, rep: number, children: number) => {
    for (let c = 0; c < children; c++) {
      const element = elements[index++] ?? refuse("schema ends early");
      const repetition = element.has(3) ? num(element, 3) : 0; // 0 REQUIRED, 1 OPTIONAL, 2 REPEATED
      const name = str(element.get(4));
      const d = def + (repetition === 0 ? 0 : 1);
      const r = rep + (repetition === 2 ? 1 : 0);
      const kids = element.has(5) ? num(element, 5) : 0;
      if (kids > 0) walk([...path, name], d, r, kids);
      else levels.set([...path, name].join("."), [d, r]);
    }
  };
  walk([], 0, 0, num(elements[0] as ThriftStruct, 5));
  const chunks = new Map<string, { chunk: ChunkInfo; rows: number }[]>();
  for (const group of list(meta, 4) as ThriftStruct[]) {
    const groupRows = num(group, 3);
    for (const column of list(group, 1) as ThriftStruct[]) {
      if (column.has(1)) refuse("column chunk in another file");
      const cm = sub(column, 3);
      const path = list(cm, 3).map(str).join(".");
      const dataOffset = num(cm, 9);
      const dictionaryOffset = cm.has(11) ? num(cm, 11) : dataOffset;
      const start = Math.min(dataOffset, dictionaryOffset > 0 ? dictionaryOffset : dataOffset);
      const chunk: ChunkInfo = {
        physicalType: num(cm, 1),
        codec: num(cm, 4),
        start,
        compressedSize: num(cm, 7),
        numValues: num(cm, 5),
      };
      if (start < 4 || start + chunk.compressedSize > n - 8 - footerLength) {
        refuse("column chunk outside the file");
      }
      if (!chunks.has(path)) chunks.set(path, []);
      chunks.get(path)!.push({ chunk, rows: groupRows });
    }
  }
  const keyValues = meta.has(5) ? list(meta, 5) as ThriftStruct[] : [];
  const arrowSchema = keyValues.find((kv) => str(kv.get(1)) === "ARROW:schema");
  if (!arrowSchema) refuse("no embedded Arrow schema");
  const embedded = embeddedSchema(str(arrowSchema.get(2)));
  // As arrow-rs does: the file's key-value metadata, then the embedded schema's for keys not set.
  const metadata = new Map<string, string>();
  for (const kv of keyValues) {
    const key = str(kv.get(1));
    if (key !== "ARROW:schema") metadata.set(key, kv.has(2) ? str(kv.get(2)) : "");
  }
  for (const [key, value] of embedded.metadata) if (!metadata.has(key)) metadata.set(key, value);
  return { rows, schema: new arrow.Schema(embedded.fields, metadata), chunks, levels };
}

/** The Arrow schema stored base64 in `ARROW:schema`: an IPC schema message, read as a stream. */
function embeddedSchema(base64: string): arrow.Schema {
  const message = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const stream = new Uint8Array(message.length + 8);
  stream.set(message);
  stream.set([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0], message.length);
  return arrow.tableFromIPC(stream).schema;
}

// ---------------------------------------------------------------- pages

interface Page {
  /** Dictionary page, or data page v2. */
  type: number;
  numValues: number;
  encoding: number;
  /** v2: the level bytes (never compressed). */
  repLevels: Uint8Array;
  defLevels: Uint8Array;
  /** The values, decompressed. */
  values: Uint8Array;
}

/** The pages of one column chunk, values decompressed. */
function* pages(bytes: Uint8Array, chunk: ChunkInfo, maxBytes: number): Generator<Page> {
  let at = chunk.start;
  const end = chunk.start + chunk.compressedSize;
  while (at < end) {
    const reader = new CompactReader(bytes, at);
    const header = reader.struct();
    at = reader.at;
    const type = num(header, 1);
    const uncompressedSize = num(header, 2);
    const compressedSize = num(header, 3);
    if (compressedSize < 0 || at + compressedSize > end) refuse("page past its chunk");
    if (uncompressedSize < 0 || uncompressedSize > maxBytes) refuse("page larger than expected");
    const body = bytes.subarray(at, at + compressedSize);
    at += compressedSize;
    if (type === DICTIONARY_PAGE) {
      const dph = sub(header, 7);
      yield {
        type,
        numValues: num(dph, 1),
        encoding: num(dph, 2),
        repLevels: new Uint8Array(0),
        defLevels: new Uint8Array(0),
        values: decompress(body, chunk.codec, uncompressedSize),
      };
    } else if (type === DATA_PAGE_V2) {
      const v2 = sub(header, 8);
      const defLength = num(v2, 5);
      const repLength = num(v2, 6);
      if (defLength < 0 || repLength < 0 || repLength + defLength > compressedSize) {
        refuse("levels longer than the page");
      }
      const compressed = v2.get(7) !== false;
      const valueBytes = body.subarray(repLength + defLength);
      yield {
        type,
        numValues: num(v2, 1),
        encoding: num(v2, 4),
        repLevels: body.subarray(0, repLength),
        defLevels: body.subarray(repLength, repLength + defLength),
        values: compressed
          ? decompress(valueBytes, chunk.codec, uncompressedSize - repLength - defLength)
          : valueBytes,
      };
    } else {
      refuse(`page type ${type}`);
    }
  }
}

function decompress(body: Uint8Array, codec: number, size: number): Uint8Array {
  if (codec === UNCOMPRESSED) {
    if (body.length !== size) refuse("uncompressed page of the wrong size");
    return body;
  }
  if (codec !== ZSTD) refuse(`codec ${codec}`);
  let out: Uint8Array;
  try {
    out = zstdDecompressSync(body, { maxOutputLength: Math.max(1, size) });
  } catch {
    return refuse("a zstd page that does not decompress");
  }
  if (out.length !== size) refuse("zstd page of the wrong size");
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

/**
 * Checks a page's levels describe `rows` lists of exactly `width` present
 * values each (`maxRep` 1) or `rows` present values (`maxRep` 0).
 */
function checkLevels(page: Page, maxDef: number, maxRep: number, width: number): void {
  const key = `${maxDef} ${maxRep} ${width} ${page.numValues}`;
  const known = checkedLevels.get(key);
  if (known && sameBytes(known[0], page.defLevels) && sameBytes(known[1], page.repLevels)) return;
  checkLevelsOnce(page, maxDef, maxRep, width);
  // Bounded: the last page of each column chunk has its own length, so a long
  // trace would otherwise add a few entries per shard.
  if (checkedLevels.size >= MAX_CHECKED_LEVELS) checkedLevels.clear();
  checkedLevels.set(key, [page.defLevels.slice(), page.repLevels.slice()]);
}

/**
 * Level bytes already checked, by shape: the pages of every shard of a trace
 * carry the same levels (W values per row, no nulls), so each shape's are
 * checked once and later pages only compared with them.
 */
const checkedLevels = new Map<string, [Uint8Array, Uint8Array]>();
const MAX_CHECKED_LEVELS = 64;

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function checkLevelsOnce(page: Page, maxDef: number, maxRep: number, width: number): void {
  if (maxDef > 0) {
    hybridRuns(page.defLevels, bitWidthOf(maxDef), page.numValues, (v) => {
      if (v !== maxDef) refuse("a null or empty value");
    }, (values, length) => {
      for (let i = 0; i < length; i++) if (values[i] !== maxDef) refuse("a null or empty value");
    });
  } else if (page.defLevels.length !== 0) refuse("definition levels on a required column");
  if (maxRep === 0) {
    if (page.repLevels.length !== 0) refuse("repetition levels on a flat column");
    return;
  }
  if (maxRep !== 1) refuse("nested lists");
  if (page.numValues % width !== 0) refuse("a page that splits a row");
  // Position p (within the page) starts a row iff p % width == 0, and only row starts have level 0.
  let p = 0;
  hybridRuns(page.repLevels, 1, page.numValues, (value, length) => {
    const phase = p % width;
    if (value === 0) {
      if (phase !== 0 || (length > 1 && width !== 1)) refuse("a list of the wrong length");
    } else if (value !== 1 || phase === 0 || phase + length > width) {
      refuse("a list of the wrong length");
    }
    p += length;
  }, (values, length) => {
    for (let i = 0; i < length; i++, p++) {
      if ((values[i] === 0) !== (p % width === 0) || values[i]! > 1) {
        refuse("a list of the wrong length");
      }
    }
  });
}

// ---------------------------------------------------------------- columns

type Primitive = Uint8Array | Uint16Array | Uint32Array | Int32Array | Float32Array;

/** Reads one column's values across its row groups into `out` (`width` values per row). */
function primitiveColumn(
  bytes: Uint8Array,
  layout: FileLayout,
  path: string,
  type: arrow.DataType,
  width: number,
  listed: boolean,
): Primitive {
  const groups = layout.chunks.get(path) ?? refuse(`no column ${path}`);
  const [maxDef, maxRep] = layout.levels.get(path) ?? refuse(`no levels for ${path}`);
  if (maxRep !== (listed ? 1 : 0)) refuse("levels do not match the Arrow type");
  const total = layout.rows * width;
  let physical: number;
  let ctor:
    | Uint8ArrayConstructor
    | Uint16ArrayConstructor
    | Uint32ArrayConstructor
    | Int32ArrayConstructor
    | Float32ArrayConstructor
    | null;
  if (arrow.DataType.isFloat(type) && type.precision === arrow.Precision.SINGLE) {
    ctor = Float32Array;
    physical = FLOAT;
  } else if (arrow.DataType.isInt(type) && type.bitWidth <= 32) {
    physical = INT32;
    ctor = type.bitWidth === 8
      ? (type.isSigned ? null : Uint8Array)
      : type.bitWidth === 16
      ? (type.isSigned ? null : Uint16Array)
      : (type.isSigned ? Int32Array : Uint32Array);
    if (!ctor) refuse("signed narrow integers");
  } else {
    return refuse(`Arrow type ${type}`);
  }
  if (ctor === Float32Array || ctor === Uint32Array || ctor === Int32Array) {
    const view = plainView(bytes, groups, physical, ctor, total, [maxDef, maxRep, width]);
    if (view) return view;
  }
  const out: Primitive = new ctor(total);
  const bytesOut = new Uint8Array(out.buffer);
  let filled = 0;
  for (const { chunk, rows } of groups) {
    if (chunk.physicalType !== physical) refuse("physical type");
    if (chunk.numValues !== rows * width) refuse("value count");
    const groupEnd = filled + rows * width;
    /** The chunk's dictionary (INT32 columns), each entry checked to fit the column's type. */
    let dictionary: Int32Array | null = null;
    // A page holds at most the values left (4 bytes each) and their levels (2 bits each at most).
    for (const page of pages(bytes, chunk, (groupEnd - filled) * 5 + 4096)) {
      if (page.type === DICTIONARY_PAGE) {
        if (dictionary || physical !== INT32 || page.encoding !== PLAIN) refuse("dictionary page");
        dictionary = plainInt32Dictionary(page, out);
        continue;
      }
      if (page.type !== DATA_PAGE_V2) refuse("not a v2 data page");
      checkLevels(page, maxDef, maxRep, width);
      if (filled + page.numValues > groupEnd) refuse("more values than rows");
      if (page.encoding === RLE_DICTIONARY || page.encoding === PLAIN_DICTIONARY) {
        if (!dictionary) refuse("dictionary indices before a dictionary");
        if (
          (out instanceof Uint16Array || out instanceof Uint8Array) &&
          bytePacked(page.values, page.numValues, dictionary, out, filled)
        ) {
          filled += page.numValues;
          continue;
        }
        if (
          out instanceof Uint16Array &&
          packedGroups16(page.values, page.numValues, dictionary, out, filled)
        ) {
          filled += page.numValues;
          continue;
        }
        if (scratch.length < page.numValues) scratch = new Int32Array(page.numValues);
        dictionaryIndices(page.values, page.numValues, dictionary, scratch);
        const ints = scratch.subarray(0, page.numValues);
        // Entries were checked to fit the column's type: set() converts each exactly.
        if (out instanceof Uint32Array) {
          out.set(new Uint32Array(ints.buffer, 0, ints.length), filled);
        } else out.set(ints, filled);
      } else if (page.encoding === DELTA_BINARY_PACKED && physical === INT32) {
        if (out instanceof Float32Array) refuse("delta-encoded floats");
        // Decoded into one Int32Array (monomorphic stores), then copied into the column's type.
        if (scratch.length < page.numValues) scratch = new Int32Array(page.numValues);
        const seen = deltaBinaryPacked(page.values, page.numValues, scratch);
        const ints = scratch.subarray(0, page.numValues);
        const limit = out instanceof Uint8Array ? 0xff : out instanceof Uint16Array ? 0xffff : -1;
        // A narrow column's values must fit it (the typed array would wrap them).
        if (limit >= 0 && (seen < 0 || seen > limit)) refuse("a value out of the column's range");
        if (out instanceof Int32Array) out.set(ints, filled);
        else if (out instanceof Uint32Array) {
          out.set(new Uint32Array(ints.buffer, 0, ints.length), filled);
        } else out.set(ints, filled); // values checked to fit: set() converts each exactly
      } else if (page.encoding === PLAIN) {
        if (page.values.length !== page.numValues * 4) refuse("value bytes");
        if (
          out instanceof Float32Array || out instanceof Uint32Array || out instanceof Int32Array
        ) {
          bytesOut.set(page.values, filled * 4);
        } else {
          narrow(page.values, out, filled, page.numValues);
        }
      } else {
        refuse(`encoding ${page.encoding}`);
      }
      filled += page.numValues;
    }
    if (filled !== groupEnd) refuse("fewer values than rows");
  }
  if (filled !== total) refuse("row groups do not cover the rows");
  return out;
}

/**
 * A column stored as one PLAIN page whose values start 4-byte aligned in the
 * file (as moetrace's encoder places f32 and u32 columns): a view of the
 * file's bytes instead of a copy, as an Arrow IPC read gives. Null otherwise.
 */
function plainView(
  bytes: Uint8Array,
  groups: { chunk: ChunkInfo; rows: number }[],
  physical: number,
  ctor: Float32ArrayConstructor | Uint32ArrayConstructor | Int32ArrayConstructor,
  total: number,
  [maxDef, maxRep, width]: [number, number, number],
): Float32Array | Uint32Array | Int32Array | null {
  if (groups.length !== 1) return null;
  const { chunk } = groups[0]!;
  if (chunk.physicalType !== physical || chunk.numValues !== total) return null;
  const all = pages(bytes, chunk, total * 5 + 4096);
  const first = all.next();
  if (first.done) return null;
  const page = first.value;
  if (
    page.type !== DATA_PAGE_V2 || page.encoding !== PLAIN || page.numValues !== total ||
    page.values.length !== total * 4 || page.values.byteOffset % 4 !== 0 || !all.next().done
  ) {
    return null;
  }
  checkLevels(page, maxDef, maxRep, width);
  return new ctor(page.values.buffer as ArrayBuffer, page.values.byteOffset, total);
}

/** A dictionary page of PLAIN INT32 values, refused unless every one fits `out`'s type. */
function plainInt32Dictionary(page: Page, out: Primitive): Int32Array {
  if (page.values.length !== page.numValues * 4) refuse("dictionary bytes");
  const aligned = page.values.byteOffset % 4 === 0 ? page.values : page.values.slice();
  const values = new Int32Array(aligned.buffer, aligned.byteOffset, page.numValues).slice();
  const [low, high] = out instanceof Uint8Array
    ? [0, 0xff]
    : out instanceof Uint16Array
    ? [0, 0xffff]
    : out instanceof Int32Array
    ? [-(2 ** 31), 2 ** 31 - 1]
    : [-(2 ** 31), 2 ** 31 - 1]; // u32 stored as i32 bits: any value
  for (const v of values) if (v < low || v > high) refuse("a dictionary value out of range");
  return values;
}

/** INT32 values that hold u8 or u16: copied into the narrow array, refusing any out of range. */
function narrow(
  values: Uint8Array,
  out: Uint8Array | Uint16Array,
  at: number,
  count: number,
): void {
  const aligned = values.byteOffset % 4 === 0 ? values : values.slice();
  const ints = new Uint32Array(aligned.buffer, aligned.byteOffset, count);
  const limit = out instanceof Uint8Array ? 0xff : 0xffff;
  let high = 0;
  for (let i = 0; i < count; i++) {
    const v = ints[i]!;
    high |= v;
    out[at + i] = v;
  }
  if (high > limit) refuse("a value out of the narrow type's range");
}

/** A dictionary<utf8> column: the dictionary page's strings and each row's index. */
function dictionaryColumn(
  bytes: Uint8Array,
  layout: FileLayout,
  path: string,
): { codes: Int32Array; names: string[] } {
  const groups = layout.chunks.get(path) ?? refuse(`no column ${path}`);
  if (groups.length !== 1) refuse("a dictionary column over several row groups");
  const { chunk, rows } = groups[0]!;
  const [maxDef, maxRep] = layout.levels.get(path) ?? refuse(`no levels for ${path}`);
  if (maxRep !== 0 || chunk.physicalType !== BYTE_ARRAY || chunk.numValues !== rows) {
    refuse("not a flat string column");
  }
  const codes = new Int32Array(rows);
  let names: string[] | null = null;
  let filled = 0;
  const decoder = new TextDecoder("utf-8", { fatal: true });
  for (const page of pages(bytes, chunk, chunk.compressedSize * 64 + rows * 8 + (1 << 20))) {
    if (page.type === DICTIONARY_PAGE) {
      if (names || (page.encoding !== PLAIN && page.encoding !== PLAIN_DICTIONARY)) {
        refuse("dictionary page");
      }
      names = [];
      const view = new DataView(page.values.buffer, page.values.byteOffset, page.values.length);
      let at = 0;
      for (let i = 0; i < page.numValues; i++) {
        const length = view.getUint32(at, true);
        at += 4;
        if (at + length > page.values.length) refuse("dictionary past its page");
        names.push(decoder.decode(page.values.subarray(at, at + length)));
        at += length;
      }
      continue;
    }
    if (!names || page.encoding !== RLE_DICTIONARY) refuse("strings not dictionary-encoded");
    checkLevels(page, maxDef, 0, 1);
    if (filled + page.numValues > rows) refuse("more values than rows");
    const bitWidth = page.values[0] ?? refuse("empty page");
    const size = names.length;
    const data = page.values.subarray(1);
    if (bitWidth === 0) {
      codes.fill(0, filled, filled + page.numValues);
      if (size === 0) refuse("index into an empty dictionary");
    } else {
      hybridRuns(data, bitWidth, page.numValues, (value, length) => {
        if (value >= size) refuse("dictionary index out of range");
        codes.fill(value, filled, filled + length);
        filled += length;
      }, (values, length) => {
        for (let i = 0; i < length; i++) {
          const v = values[i]!;
          if (v >= size) refuse("dictionary index out of range");
          codes[filled++] = v;
        }
      });
      continue;
    }
    filled += page.numValues;
  }
  if (filled !== rows || !names) refuse("fewer values than rows");
  return { codes, names };
}

function decode(bytes: Uint8Array, only?: string[]): arrow.Table {
  const layout = readLayout(bytes);
  const rows = layout.rows;
  const fields = layout.schema.fields.filter((f) => !only || only.includes(f.name));
  const children: arrow.Data[] = [];
  for (const field of fields) {
    const type = field.type;
    if (arrow.DataType.isFixedSizeList(type)) {
      const item = type.children[0]!;
      const path = [...layout.chunks.keys()].find((p) =>
        p === `${field.name}.list.${item.name}` || p === `${field.name}.list.element` ||
        p === `${field.name}.list.item`
      ) ?? refuse(`no column for ${field.name}`);
      const values = primitiveColumn(bytes, layout, path, item.type, type.listSize, true);
      const child = arrow.makeData(
        { type: item.type, length: values.length, data: values } as never,
      );
      children.push(arrow.makeData({ type, length: rows, nullCount: 0, child }));
    } else if (arrow.DataType.isDictionary(type)) {
      if (!arrow.DataType.isUtf8(type.dictionary) || type.indices.bitWidth !== 32) {
        refuse("a dictionary other than <int32, utf8>");
      }
      const { codes, names } = dictionaryColumn(bytes, layout, field.name);
      children.push(arrow.makeData({
        type,
        length: rows,
        nullCount: 0,
        data: codes,
        dictionary: arrow.vectorFromArray(names, new arrow.Utf8()),
      }));
    } else {
      const values = primitiveColumn(bytes, layout, field.name, type, 1, false);
      children.push(arrow.makeData({ type, length: rows, nullCount: 0, data: values } as never));
    }
  }
  const schema = new arrow.Schema(fields, layout.schema.metadata);
  const struct = arrow.makeData({
    type: new arrow.Struct(schema.fields),
    length: rows,
    nullCount: 0,
    children,
  });
  return new arrow.Table([new arrow.RecordBatch(schema, struct)]);
}
