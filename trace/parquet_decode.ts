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

/** Thrown wherever the file leaves the subset this reader handles. */
class FastPathRefused extends Error {}

function refuse(why: string): never {
  throw new FastPathRefused(why);
}

// ---------------------------------------------------------------- Thrift compact protocol

/** A decoded Thrift struct: field id → value (structs nested, lists as arrays). */
type ThriftStruct = Map<number, unknown>;

class CompactReader {
  at: number;
  constructor(readonly bytes: Uint8Array, at: number) {
    this.at = at;
  }

  byte(): number {
    if (this.at >= this.bytes.length) refuse("thrift past the end");
    return this.bytes[this.at++]!;
  }

  varint(): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      const b = this.byte();
      result += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) return result;
      scale *= 128;
    }
    return refuse("varint too long");
  }

  zigzag(): number {
    const v = this.varint();
    return v % 2 === 0 ? v / 2 : -(v + 1) / 2;
  }

  struct(depth = 0): ThriftStruct {
    if (depth > 16) refuse("thrift nested too deep");
    const out: ThriftStruct = new Map();
    let field = 0;
    for (;;) {
      const header = this.byte();
      if (header === 0) return out;
      const type = header & 0x0f;
      const delta = header >> 4;
      field = delta === 0 ? this.zigzag() : field + delta;
      out.set(field, this.value(type, depth));
    }
  }

  value(type: number, depth: number): unknown {
    switch (type) {
      case 1:
        return true;
      case 2:
        return false;
      case 3:
        return (this.byte() << 24) >> 24;
      case 4:
      case 5:
      case 6:
        return this.zigzag();
      case 7:
        this.at += 8;
        return 0;
      case 8: {
        const length = this.varint();
        if (this.at + length > this.bytes.length) refuse("thrift binary past the end");
        const value = this.bytes.subarray(this.at, this.at + length);
        this.at += length;
        return value;
      }
      case 9:
      case 10: {
        const header = this.byte();
        let size = header >> 4;
        if (size === 15) size = this.varint();
        const elementType = header & 0x0f;
        if (size > this.bytes.length - this.at) refuse("thrift list longer than the file");
        const list: unknown[] = [];
        for (let i = 0; i < size; i++) {
          list.push(
            elementType === 1 || elementType === 2
              ? this.byte() === 1
              : this.value(elementType, depth + 1),
          );
        }
        return list;
      }
      case 11: {
        const size = this.varint();
        if (size === 0) return new Map();
        const types = this.byte();
        const map = new Map<unknown, unknown>();
        for (let i = 0; i < size; i++) {
          map.set(this.value(types >> 4, depth + 1), this.value(types & 0x0f, depth + 1));
        }
        return map;
      }
      case 12:
        return this.struct(depth + 1);
      default:
        return refuse(`thrift type ${type}`);
    }
  }
}

const num = (s: ThriftStruct, field: number): number => {
  const v = s.get(field);
  return typeof v === "number" ? v : refuse(`field ${field} is not a number`);
};
const str = (v: unknown): string =>
  v instanceof Uint8Array ? new TextDecoder().decode(v) : refuse("not a string");
const sub = (s: ThriftStruct, field: number): ThriftStruct => {
  const v = s.get(field);
  return v instanceof Map ? v as ThriftStruct : refuse(`field ${field} is not a struct`);
};
const list = (s: ThriftStruct, field: number): unknown[] => {
  const v = s.get(field);
  return Array.isArray(v) ? v : refuse(`field ${field} is not a list`);
};

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
 * The RLE / bit-packed hybrid runs of `data` (levels, dictionary indices),
 * `count` values of `bitWidth` bits: calls `run(value, length)` for each RLE
 * run and `packed(values)` for each bit-packed one.
 */
function hybridRuns(
  data: Uint8Array,
  bitWidth: number,
  count: number,
  run: (value: number, length: number) => void,
  packed: (values: ArrayLike<number>, length: number) => void,
): void {
  if (bitWidth > 24) refuse("bit width");
  const mask = (1 << bitWidth) - 1;
  const byteWidth = (bitWidth + 7) >> 3;
  const scratch = new Int32Array(8 * 64);
  let at = 0;
  let done = 0;
  while (done < count) {
    let header = 0;
    let shift = 0;
    for (;;) {
      if (at >= data.length) refuse("levels end early");
      const b = data[at++]!;
      header |= (b & 0x7f) << shift;
      if ((b & 0x80) === 0) break;
      shift += 7;
      if (shift > 28) refuse("level header");
    }
    if ((header & 1) === 0) {
      const length = Math.min(header >>> 1, count - done);
      let value = 0;
      for (let i = 0; i < byteWidth; i++) {
        value |= (data[at++] ?? refuse("levels end early")) << (8 * i);
      }
      run(value, length);
      done += length;
    } else {
      let groups = header >>> 1;
      while (groups > 0) {
        const take = Math.min(groups, 64);
        const values = take * 8;
        const bytesNeeded = take * bitWidth;
        if (at + bytesNeeded > data.length) refuse("levels end early");
        let bit = 0;
        for (let i = 0; i < values; i++) {
          const byte = at + (bit >> 3);
          const word = data[byte]! | (data[byte + 1] ?? 0) << 8 | (data[byte + 2] ?? 0) << 16 |
            (data[byte + 3] ?? 0) << 24;
          scratch[i] = (word >>> (bit & 7)) & mask;
          bit += bitWidth;
        }
        at += bytesNeeded;
        const length = Math.min(values, count - done);
        packed(scratch, length);
        done += length;
        groups -= take;
        if (done >= count) break;
      }
    }
  }
}

function bitWidthOf(max: number): number {
  return max === 0 ? 0 : 32 - Math.clz32(max);
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
          bytePacked(page, dictionary, out, filled)
        ) {
          filled += page.numValues;
          continue;
        }
        if (out instanceof Uint16Array && packedGroups16(page, dictionary, out, filled)) {
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

/**
 * DELTA_BINARY_PACKED INT32 values into `out` from index `at`: a header
 * (block size, miniblocks per block, value count, first value), then per
 * block the minimum delta, one bit width per miniblock and the miniblocks'
 * deltas − minimum, bit-packed LSB first. Sums wrap at 32 bits, as the
 * writer's do. Returns the OR of all values (for a narrow output, its range
 * check).
 */
function deltaBinaryPacked(data: Uint8Array, count: number, out: Int32Array): number {
  const reader = new CompactReader(data, 0);
  const blockSize = reader.varint();
  const miniblocks = reader.varint();
  const total = reader.varint();
  let value = reader.zigzag() | 0;
  if (total !== count || miniblocks === 0 || blockSize % miniblocks !== 0) refuse("delta header");
  const perMiniblock = blockSize / miniblocks;
  if (perMiniblock % 32 !== 0) refuse("delta miniblock size");
  if (count === 0) return 0;
  let seen = value;
  let o = 0;
  const end = count;
  out[o++] = value;
  while (o < end) {
    const minDelta = reader.zigzag() | 0;
    const widthsAt = reader.at;
    let p = widthsAt + miniblocks;
    for (let m = 0; m < miniblocks && o < end; m++) {
      const bitWidth = data[widthsAt + m] ?? refuse("delta widths past the page");
      if (bitWidth > 32) refuse("delta bit width");
      const take = Math.min(perMiniblock, end - o);
      const next = p + (perMiniblock * bitWidth) / 8;
      if (p + Math.ceil((take * bitWidth) / 8) > data.length) refuse("delta values past the page");
      if (bitWidth === 0) {
        for (let i = 0; i < take; i++) {
          value = (value + minDelta) | 0;
          seen |= value;
          out[o++] = value;
        }
      } else if (bitWidth <= 25) {
        // A 32-bit window at the value's first byte holds it (shift ≤ 7, width ≤ 25):
        // 2–3× faster than feeding a bit buffer a byte at a time. The last values of
        // a page, whose window would pass its end, read zeros there instead.
        const mask = (1 << bitWidth) - 1;
        const last = data.length - 4;
        let i = 0;
        let bit = 0;
        for (; i < take; i++, bit += bitWidth) {
          const b = p + (bit >>> 3);
          if (b > last) break;
          const word = data[b]! | (data[b + 1]! << 8) | (data[b + 2]! << 16) | (data[b + 3]! << 24);
          value = (value + minDelta + ((word >>> (bit & 7)) & mask)) | 0;
          seen |= value;
          out[o++] = value;
        }
        for (; i < take; i++, bit += bitWidth) {
          const b = p + (bit >>> 3);
          const word = (data[b] ?? 0) | ((data[b + 1] ?? 0) << 8) | ((data[b + 2] ?? 0) << 16) |
            ((data[b + 3] ?? 0) << 24);
          value = (value + minDelta + ((word >>> (bit & 7)) & mask)) | 0;
          seen |= value;
          out[o++] = value;
        }
      } else {
        for (let i = 0, bit = 0; i < take; i++, bit += bitWidth) {
          let delta = 0;
          for (let k = 0; k < bitWidth; k++) {
            const b = bit + k;
            delta += ((data[p + (b >>> 3)]! >>> (b & 7)) & 1) * 2 ** k;
          }
          value = (value + minDelta + delta) | 0;
          seen |= value;
          out[o++] = value;
        }
      }
      p = next;
    }
    reader.at = p;
  }
  return seen;
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

/**
 * A page of dictionary indices (bit width byte, then RLE / bit-packed runs)
 * into `out` as dictionary values. A page of one bit-packed run, as
 * moetrace's encoder writes, is unpacked in one tight loop through a table of
 * 2^width entries whose entries past the dictionary are −1 (an index out of
 * range is then caught by one OR per value); other pages go run by run.
 */
function dictionaryIndices(
  data: Uint8Array,
  count: number,
  dictionary: Int32Array,
  out: Int32Array,
): void {
  const bitWidth = data[0] ?? refuse("empty page");
  if (bitWidth > 24) refuse("bit width");
  const size = dictionary.length;
  let at = 1;
  let header = 0;
  for (let shift = 0;; shift += 7) {
    const b = data[at++] ?? refuse("page ends early");
    header += (b & 0x7f) * 2 ** shift;
    if ((b & 0x80) === 0) break;
    if (shift > 28) refuse("run header");
  }
  if (bitWidth > 0 && header % 2 === 1 && (header - 1) / 2 * 8 >= count) {
    if (at + Math.ceil((count * bitWidth) / 8) > data.length) refuse("indices past the page");
    if (lookup.length < 1 << bitWidth) lookup = new Int32Array(1 << bitWidth);
    const table = lookup;
    table.fill(-1, 0, 1 << bitWidth);
    // Sign bits mark entries past the dictionary; a value of −1 itself is
    // told apart by `valid` (a dictionary of i32 values may hold it).
    table.set(dictionary.subarray(0, Math.min(size, 1 << bitWidth)));
    const valid = size >= 1 << bitWidth;
    const mask = (1 << bitWidth) - 1;
    const last = data.length - 4;
    let bad = 0;
    let i = 0;
    let bit = at * 8;
    for (; i < count; i++, bit += bitWidth) {
      const b = bit >>> 3;
      if (b > last) break;
      const word = data[b]! | (data[b + 1]! << 8) | (data[b + 2]! << 16) | (data[b + 3]! << 24);
      const index = (word >>> (bit & 7)) & mask;
      if (!valid) bad |= size - 1 - index;
      out[i] = table[index]!;
    }
    for (; i < count; i++, bit += bitWidth) {
      const b = bit >>> 3;
      const word = (data[b] ?? 0) | ((data[b + 1] ?? 0) << 8) | ((data[b + 2] ?? 0) << 16) |
        ((data[b + 3] ?? 0) << 24);
      const index = (word >>> (bit & 7)) & mask;
      if (!valid) bad |= size - 1 - index;
      out[i] = table[index]!;
    }
    if (bad < 0) refuse("dictionary index out of range");
    return;
  }
  let filled = 0;
  const rest = data.subarray(1);
  if (bitWidth === 0) {
    if (size === 0) refuse("index into an empty dictionary");
    out.fill(dictionary[0]!, 0, count);
    return;
  }
  hybridRuns(rest, bitWidth, count, (value, length) => {
    if (value >= size) refuse("dictionary index out of range");
    out.fill(dictionary[value]!, filled, filled + length);
    filled += length;
  }, (values, length) => {
    for (let i = 0; i < length; i++) {
      const v = values[i]!;
      if (v >= size) refuse("dictionary index out of range");
      out[filled++] = dictionary[v]!;
    }
  });
}

/**
 * Expert ids as moetrace's encoder writes them: one bit-packed run of whole
 * bytes (width 8, or 16 past 256 entries) whose dictionary is 0..m, perhaps
 * then 65535. Indices below the dictionary's identity part are the values:
 * one native copy, a scan for the largest, and a lookup only for the
 * indices past it. Returns false (nothing written) for any other page.
 */
function bytePacked(
  page: Page,
  dictionary: Int32Array,
  out: Uint16Array | Uint8Array,
  at: number,
): boolean {
  const data = page.values;
  const count = page.numValues;
  const w = data[0];
  if (w !== 8 && w !== 16) return false;
  let header = 0;
  let p = 1;
  for (let shift = 0; shift <= 28; shift += 7) {
    const b = data[p++] ?? 0;
    header += (b & 0x7f) * 2 ** shift;
    if ((b & 0x80) === 0) break;
  }
  if (header % 2 === 0 || Math.floor(header / 2) * 8 < count) return false;
  const bytes = count * (w / 8);
  if (p + bytes > data.length) refuse("indices past the page");
  // The identity part: entries 0..identity − 1 equal their index.
  let identity = 0;
  while (identity < dictionary.length && dictionary[identity] === identity) identity++;
  const limit = out instanceof Uint8Array ? 0xff : 0xffff;
  if (w === 16 && (!LITTLE_ENDIAN || (data.byteOffset + p) % 2 !== 0)) return false;
  const indices = w === 8
    ? data.subarray(p, p + bytes)
    : new Uint16Array(data.buffer, data.byteOffset + p, count);
  // Every index is below `identity` when it is a power of two and no index has
  // a bit above it: an OR over the page as 32-bit words settles it in ~1/4
  // of a scan for the maximum.
  if (
    identity > 0 && (identity & (identity - 1)) === 0 && identity - 1 <= limit &&
    (orOfBytes(data, p, bytes) &
        ~(w === 8 ? (identity - 1) * 0x01010101 : (identity - 1) * 0x10001)) === 0
  ) {
    out.set(indices, at);
    return true;
  }
  let max = 0;
  for (let i = 0; i < count; i++) if (indices[i]! > max) max = indices[i]!;
  if (max >= dictionary.length) refuse("dictionary index out of range");
  if (max < identity) {
    if (max > limit) refuse("a value out of the column's range");
    out.set(indices, at);
    return true;
  }
  for (let i = 0; i < count; i++) {
    const e = dictionary[indices[i]!]!;
    if (e > limit || e < 0) refuse("a value out of the column's range");
    out[at + i] = e;
  }
  return true;
}

const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

/** The OR of `length` bytes from `data[start]`, folded into 32 bits (byte i into bits 8·(i mod 4)…, from aligned words). */
function orOfBytes(data: Uint8Array, start: number, length: number): number {
  let at = data.byteOffset + start;
  const end = at + length;
  const bytes = new Uint8Array(data.buffer, 0, end);
  let or = 0;
  // Head bytes up to a 4-byte boundary, words, tail bytes: each byte lands on
  // the lane of its address mod 4, as in the words.
  for (; at < end && at % 4 !== 0; at++) or |= bytes[at]! << (8 * (at % 4));
  const wordEnd = end - (end % 4);
  if (at < wordEnd) {
    const words = new Uint32Array(data.buffer, at, (wordEnd - at) / 4);
    for (let i = 0; i < words.length; i++) or |= words[i]!;
    at = wordEnd;
  }
  for (; at < end; at++) or |= bytes[at]! << (8 * (at % 4));
  return or;
}

/**
 * The common case of expert ids, decoded straight into the u16 column: a page
 * of dictionary indices ≤ 8 bits wide in one bit-packed run (what moetrace's
 * encoder writes for ≤ 256 distinct values). Each group of 8 indices is w
 * bytes, read as two 32-bit words and split with shifts: 1.5–2 ns a value,
 * against 2.5–3 ns for a 4-byte window per value into a scratch array.
 * Returns false (nothing written) for any other page.
 */
function packedGroups16(
  page: Page,
  dictionary: Int32Array,
  out: Uint16Array,
  at: number,
): boolean {
  const data = page.values;
  const count = page.numValues;
  const w = data[0] ?? 0;
  // The run header: a varint, (groups << 1) | 1 for a bit-packed run.
  let header = 0;
  let p = 1;
  for (let shift = 0; shift <= 28; shift += 7) {
    const b = data[p++] ?? 0;
    header += (b & 0x7f) * 2 ** shift;
    if ((b & 0x80) === 0) break;
  }
  const groups = Math.floor(header / 2);
  if (w < 1 || w > 8 || header % 2 === 0 || groups * 8 < count) return false;
  if (p + Math.ceil((count * w) / 8) > data.length) refuse("indices past the page");
  if (lookup.length < 256) lookup = new Int32Array(256);
  const table = lookup;
  // Entries past the dictionary are −1: one OR per value then catches an index out of range.
  table.fill(-1);
  table.set(dictionary.subarray(0, Math.min(dictionary.length, 256)));
  const mask = (1 << w) - 1;
  let o = at;
  let bad = 0;
  // Whole groups whose two words lie inside the page; the rest value by value.
  const safeGroups = Math.min(count >>> 3, Math.max(0, Math.floor((data.length - p - 8) / w) + 1));
  for (let g = 0; g < safeGroups; g++, p += w) {
    const lo = data[p]! | (data[p + 1]! << 8) | (data[p + 2]! << 16) | (data[p + 3]! << 24);
    const hi = data[p + 4]! | (data[p + 5]! << 8) | (data[p + 6]! << 16) | (data[p + 7]! << 24);
    for (let j = 0, bit = 0; j < 8; j++, bit += w) {
      const v = bit >= 32
        ? hi >>> (bit - 32)
        : bit + w > 32
        ? (lo >>> bit) | (hi << (32 - bit))
        : lo >>> bit;
      const e = table[v & mask]!;
      bad |= e;
      out[o++] = e;
    }
  }
  for (let i = safeGroups * 8, bit = 0; i < count; i++, bit += w) {
    const b = p + (bit >>> 3);
    const word = (data[b] ?? 0) | ((data[b + 1] ?? 0) << 8);
    const e = table[(word >>> (bit & 7)) & mask]!;
    bad |= e;
    out[o++] = e;
  }
  if (bad < 0) refuse("dictionary index out of range");
  return true;
}

/** Index → value table of `dictionaryIndices`, grown to the widest page seen. */
let lookup = new Int32Array(0);

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
