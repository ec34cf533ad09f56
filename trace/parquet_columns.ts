/**
 * The Parquet column writer behind moetrace's shard encoder
 * (parquet_encode.ts), free of Arrow so that an import's worker threads can
 * encode shards without loading apache-arrow: columns come in as typed
 * arrays (`ColumnPlan`), the file goes out as a list of byte ranges
 * (`encodeColumns`) that the caller writes end to end or joins.
 *
 * Why a list: the expert-id pages of a shard with at most 256 experts are
 * the values themselves, one byte each, after a run header; a column given
 * as a Uint8Array is then written straight from its own buffer instead of
 * being copied into a fresh one (on the development machine a fresh MiB
 * costs ~3 ms of page faults, more than encoding it).
 *
 * What the columns become is said in parquet_encode.ts.
 */
import { CompactWriter } from "./parquet_thrift.ts";
import {
  bitPack,
  bytePack,
  indexBitWidth,
  listRepetitionLevels,
  packedRunHeader,
  rleRun,
} from "./parquet_runs.ts";

/** Values per data page: 1 MiB of PLAIN int32, the page size Parquet writers default to. */
export const PAGE_VALUES = 1 << 18;
/** Largest PLAIN page (f32, u32 columns) before a column is split into pages. */
export const PLAIN_PAGE_BYTES = 64 << 20;

// Parquet enums (parquet.thrift).
const INT32 = 1;
const FLOAT = 4;
const BYTE_ARRAY = 6;
const PLAIN = 0;
const RLE = 3;
const RLE_DICTIONARY = 8;
const UNCOMPRESSED = 0;
const DICTIONARY_PAGE = 2;
const DATA_PAGE_V2 = 3;
const REQUIRED = 0;
const REPEATED = 2;
const CONVERTED_UTF8 = 0;
const CONVERTED_LIST = 3;
const CONVERTED_UINT = { 8: 11, 16: 12, 32: 13 } as Record<number, number>;
const CONVERTED_INT_32 = 17;

// ---------------------------------------------------------------- column chunks

/**
 * What a column holds. Small ints are stored as u8 or u16 whatever their
 * logical width: a u16 column whose values fit a byte may come as a
 * Uint8Array, and is then written without a copy.
 */
export type ColumnValues =
  | { kind: "small-int"; values: Uint8Array | Uint16Array }
  | { kind: "int32"; values: Uint32Array | Int32Array }
  | { kind: "float"; values: Float32Array }
  | {
    kind: "strings";
    /** [rows] index of each row's string. */
    codes: Uint32Array;
    /** The dictionary's UTF-8 bytes end to end, string i at [offsets[i], offsets[i + 1]). */
    offsets: Int32Array;
    chars: Uint8Array;
    count: number;
  };

/** One column of a shard: its name, its Parquet logical type, its values. */
export interface ColumnPlan {
  name: string;
  /** For a fixed-size list: the item's name (Arrow's "item") and the values per row. */
  list?: { item: string; width: number };
  /** Integer columns: the logical width and sign (8 or 16 for small ints, 32 for int32). */
  int?: { bits: 8 | 16 | 32; signed: boolean };
  column: ColumnValues;
}

interface EncodedChunk {
  pages: Uint8Array[];
  physicalType: number;
  encodings: number[];
  numValues: number;
  /** Byte offsets within `pages` (concatenated) of the dictionary page (or −1) and first data page. */
  dictionaryAt: number;
  dataAt: number;
  /** Offset within the chunk of the first page's values, to be aligned to 4 bytes (PLAIN), or −1. */
  valuesAt: number;
  uncompressedSize: number;
  compressedSize: number;
  statistics: { min: Uint8Array; max: Uint8Array } | null;
  path: string[];
}

/** A page: its header then its body. */
function page(
  type: number,
  uncompressed: number,
  body: Uint8Array[],
  header: (w: CompactWriter) => void,
): { bytes: Uint8Array[]; uncompressed: number; compressed: number } {
  const compressed = body.reduce((n, b) => n + b.length, 0);
  const w = new CompactWriter();
  const bytes = w.topStruct(() => {
    w.i32(1, type);
    w.i32(2, uncompressed);
    w.i32(3, compressed);
    header(w);
  }).slice();
  return {
    bytes: [bytes, ...body],
    uncompressed: bytes.length + uncompressed,
    compressed: bytes.length + compressed,
  };
}

/** Values of one data page v2 and its levels, with the header fields the page needs. */
function dataPage(
  values: Uint8Array[],
  encoding: number,
  numValues: number,
  rows: number,
  levels: { rep: Uint8Array; def: Uint8Array },
) {
  const valueBytes = values.reduce((n, v) => n + v.length, 0);
  return page(
    DATA_PAGE_V2,
    levels.rep.length + levels.def.length + valueBytes,
    [levels.rep, levels.def, ...values],
    (w) =>
      w.struct(8, () => {
        w.i32(1, numValues);
        w.i32(2, 0); // nulls
        w.i32(3, rows);
        w.i32(4, encoding);
        w.i32(5, levels.def.length);
        w.i32(6, levels.rep.length);
        w.bool(7, false); // is_compressed: no page is
      }),
  );
}

/** Level bytes for one page of `rows` rows × `width` values: lists have both, flat columns none. */
function pageLevels(rows: number, width: number, listed: boolean) {
  if (!listed) return { rep: new Uint8Array(0), def: new Uint8Array(0) };
  const n = rows * width;
  return {
    rep: listRepetitionLevels(rows, width),
    def: Uint8Array.from(rleRun(n, 1)),
  };
}

/**
 * The dictionary of a u8/u16 column: 0..m, then 65535 when the no-expert
 * marker 65535 is present. Values below 65535 are then their own indices (no
 * lookup to encode or decode them), and `map` sends 65535 to the last index;
 * `map` is null when no value needs it. m + 1 is the OR of all values rounded
 * up to a power of two (an OR over 32-bit words is 3× faster than a scan for
 * the largest; unused entries cost 4 bytes each), or the largest value + 1
 * past 2^15, where the marker may hide among large ids.
 */
function smallIntDictionary(values: Uint8Array | Uint16Array): {
  map: Int32Array | null;
  dictionary: Int32Array;
} {
  let or = 0;
  const whole = values.byteOffset % 4 === 0 ? values.byteLength >> 2 : 0;
  // A column that does not start 4-byte aligned (a view into a larger buffer) is scanned value by value.
  const words = whole > 0
    ? new Uint32Array(values.buffer, values.byteOffset, whole)
    : new Uint32Array(0);
  for (let i = 0; i < words.length; i++) or |= words[i]!;
  const lanes = values instanceof Uint8Array ? [0, 8, 16, 24] : [0, 16];
  let folded = 0;
  for (const shift of lanes) {
    folded |= (or >>> shift) & (values instanceof Uint8Array ? 0xff : 0xffff);
  }
  for (let i = (whole * 4) / values.BYTES_PER_ELEMENT; i < values.length; i++) folded |= values[i]!;
  let max = folded === 0 ? 0 : 2 ** (32 - Math.clz32(folded)) - 1;
  let marker = false;
  if (folded >= 0x8000) {
    max = 0;
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      if (v === 65535) marker = true;
      else if (v > max) max = v;
    }
  }
  const dictionary = new Int32Array(max + 1 + (marker ? 1 : 0));
  for (let v = 0; v <= max; v++) dictionary[v] = v;
  if (!marker) return { map: null, dictionary };
  dictionary[max + 1] = 65535;
  const map = new Int32Array(65536);
  for (let v = 0; v <= max; v++) map[v] = v;
  map[65535] = max + 1;
  return { map, dictionary };
}

function encodeChunk(plan: ColumnPlan, rows: number, plainPageBytes: number): EncodedChunk {
  const { column } = plan;
  const listed = plan.list !== undefined;
  const width = plan.list?.width ?? 1;
  const total = rows * width;
  const rowsPerPage = Math.max(1, Math.floor(PAGE_VALUES / width));
  const pages: { bytes: Uint8Array[]; uncompressed: number; compressed: number }[] = [];
  let physicalType = INT32;
  let encodings = [PLAIN, RLE];
  let statistics: EncodedChunk["statistics"] = null;
  let hasDictionary = false;
  const path = plan.list ? [plan.name, "list", plan.list.item] : [plan.name];
  // Levels repeat page to page: made once for full pages, once for the last.
  const levelsFor = new Map<number, { rep: Uint8Array; def: Uint8Array }>();
  const levels = (pageRows: number) => {
    let l = levelsFor.get(pageRows);
    if (!l) levelsFor.set(pageRows, l = pageLevels(pageRows, width, listed));
    return l;
  };
  const dictionaryPage = (plainValues: Uint8Array, count: number) => {
    hasDictionary = true;
    encodings = [PLAIN, RLE, RLE_DICTIONARY];
    pages.push(page(DICTIONARY_PAGE, plainValues.length, [plainValues], (w) =>
      w.struct(7, () => {
        w.i32(1, count);
        w.i32(2, PLAIN);
      })));
  };
  /** Data pages of dictionary indices, `index(values, i)` read through `map` when given. */
  const indexPages = (
    values: Uint32Array,
    dictionarySize: number,
  ) => {
    const bitWidth = indexBitWidth(dictionarySize - 1);
    for (let row = 0; row < rows; row += rowsPerPage) {
      const pageRows = Math.min(rowsPerPage, rows - row);
      const n = pageRows * width;
      const out = new Uint8Array(1 + 10 + Math.ceil(n / 8) * bitWidth);
      out[0] = bitWidth;
      const end = bitPack(out, 1, values, row * width, n, bitWidth);
      pages.push(
        dataPage([out.subarray(0, end)], RLE_DICTIONARY, n, pageRows, levels(pageRows)),
      );
    }
  };

  if (column.kind === "small-int") {
    const { map, dictionary } = smallIntDictionary(column.values);
    dictionaryPage(new Uint8Array(dictionary.buffer), dictionary.length);
    const bitWidth = dictionary.length <= 256 ? 8 : 16;
    // Bytes that are their own indices go out as they are: the page is a
    // run header, then a view of the column's buffer (zeros pad the last group).
    const inPlace = bitWidth === 8 && !map && column.values instanceof Uint8Array;
    for (let row = 0; row < rows; row += rowsPerPage) {
      const pageRows = Math.min(rowsPerPage, rows - row);
      const n = pageRows * width;
      const values = column.values.subarray(row * width, row * width + n);
      let body: Uint8Array[];
      if (inPlace) {
        body = [Uint8Array.from([bitWidth, ...packedRunHeader(n)]), values as Uint8Array];
        if (n % 8 !== 0) body.push(new Uint8Array(8 - (n % 8)));
      } else {
        const out = new Uint8Array(1 + 10 + Math.ceil(n / 8) * bitWidth);
        out[0] = bitWidth;
        body = [out.subarray(0, bytePack(out, 1, values, n, bitWidth, map))];
      }
      pages.push(dataPage(body, RLE_DICTIONARY, n, pageRows, levels(pageRows)));
    }
  } else if (column.kind === "strings") {
    physicalType = BYTE_ARRAY;
    const { offsets, chars, count } = column;
    const plain = new Uint8Array(4 * count + (offsets[count]! - offsets[0]!));
    const view = new DataView(plain.buffer);
    let at = 0;
    for (let i = 0; i < count; i++) {
      const from = offsets[i]!;
      const length = offsets[i + 1]! - from;
      view.setUint32(at, length, true);
      at += 4;
      // Byte by byte: most strings are a few bytes (a shard's token pieces,
      // tens of thousands), for which a view to copy from costs more than the copy.
      if (length > 64) plain.set(chars.subarray(from, from + length), at);
      else for (let c = 0; c < length; c++) plain[at + c] = chars[from + c]!;
      at += length;
    }
    dictionaryPage(plain, count);
    indexPages(column.codes, Math.max(1, count));
  } else {
    const values = column.values;
    physicalType = column.kind === "float" ? FLOAT : INT32;
    const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    // One page when it fits PLAIN_PAGE_BYTES: its values, placed 4-byte
    // aligned in the file, are then read as a view with no copy.
    const plainRows = total * 4 <= plainPageBytes
      ? rows
      : Math.max(1, Math.floor(plainPageBytes / 4 / width));
    for (let row = 0; row < rows; row += plainRows) {
      const pageRows = Math.min(plainRows, rows - row);
      const body = bytes.subarray(row * width * 4, (row + pageRows) * width * 4);
      pages.push(dataPage([body], PLAIN, pageRows * width, pageRows, levels(pageRows)));
    }
    if (column.kind === "int32" && !listed && values.length > 0) {
      let min = values[0]!;
      let max = values[0]!;
      for (let i = 1; i < values.length; i++) {
        const v = values[i]!;
        if (v < min) min = v;
        else if (v > max) max = v;
      }
      const le = (v: number) => {
        const b = new Uint8Array(4);
        new DataView(b.buffer).setUint32(0, v >>> 0, true);
        return b;
      };
      statistics = { min: le(min), max: le(max) };
    }
  }
  const sizes = pages.map((p) => p.compressed);
  return {
    pages: pages.flatMap((p) => p.bytes),
    physicalType,
    encodings,
    numValues: total,
    dictionaryAt: hasDictionary ? 0 : -1,
    dataAt: hasDictionary ? sizes[0]! : 0,
    // The first page's parts are its header, repetition and definition levels, values (PLAIN: one part).
    valuesAt: hasDictionary ? -1 : pages[0]!.bytes.slice(0, 3).reduce((n, b) => n + b.length, 0),
    uncompressedSize: pages.reduce((n, p) => n + p.uncompressed, 0),
    compressedSize: sizes.reduce((n, s) => n + s, 0),
    statistics,
    path,
  };
}

// ---------------------------------------------------------------- the file

function schemaElements(w: CompactWriter, plans: ColumnPlan[]): void {
  const elements: ((w: CompactWriter) => void)[] = [(w) => {
    w.binary(4, "arrow_schema");
    w.i32(5, plans.length);
  }];
  const leaf = (name: string, plan: ColumnPlan) => (w: CompactWriter) => {
    const { column, int } = plan;
    w.i32(1, column.kind === "float" ? FLOAT : column.kind === "strings" ? BYTE_ARRAY : INT32);
    w.i32(3, REQUIRED);
    w.binary(4, name);
    if (column.kind === "strings") {
      w.i32(6, CONVERTED_UTF8);
      w.struct(10, () => w.struct(1, () => {}));
    } else if (column.kind !== "float" && int) {
      w.i32(6, int.signed ? CONVERTED_INT_32 : CONVERTED_UINT[int.bits]!);
      w.struct(10, () =>
        w.struct(10, () => {
          w.i8(1, int.bits);
          w.bool(2, int.signed);
        }));
    }
  };
  for (const plan of plans) {
    if (plan.list) {
      elements.push((w) => {
        w.i32(3, REQUIRED);
        w.binary(4, plan.name);
        w.i32(5, 1);
        w.i32(6, CONVERTED_LIST);
        w.struct(10, () => w.struct(3, () => {}));
      });
      elements.push((w) => {
        w.i32(3, REPEATED);
        w.binary(4, "list");
        w.i32(5, 1);
      });
      elements.push(leaf(plan.list.item, plan));
    } else {
      elements.push(leaf(plan.name, plan));
    }
  }
  w.structs(2, elements, (element) => element(w));
}

/**
 * `rows` rows of `plans`' columns as a Parquet file of one row group, as
 * byte ranges to write end to end (some are views of the columns' own
 * buffers, which must not change until they are written). `arrowSchema` is
 * the table's Arrow schema message, base64 (`ARROW:schema`).
 * `plainPageBytes` (default PLAIN_PAGE_BYTES) lets tests split PLAIN columns.
 */
export function encodeColumns(
  plans: ColumnPlan[],
  rows: number,
  arrowSchema: string,
  options: { plainPageBytes?: number } = {},
): Uint8Array[] {
  const chunks = plans.map((plan) =>
    encodeChunk(plan, rows, options.plainPageBytes ?? PLAIN_PAGE_BYTES)
  );
  const parts: Uint8Array[] = [Uint8Array.from([0x50, 0x41, 0x52, 0x31])];
  let at = 4;
  const offsets: { dictionary: number; data: number }[] = [];
  for (const chunk of chunks) {
    // Zeros before the chunk (readers seek to each chunk's offsets) align its values.
    const pad = chunk.valuesAt < 0 ? 0 : (4 - ((at + chunk.valuesAt) % 4)) % 4;
    if (pad > 0) {
      parts.push(new Uint8Array(pad));
      at += pad;
    }
    offsets.push({
      dictionary: chunk.dictionaryAt < 0 ? -1 : at + chunk.dictionaryAt,
      data: at + chunk.dataAt,
    });
    for (const p of chunk.pages) {
      parts.push(p);
      at += p.length;
    }
  }
  const w = new CompactWriter();
  const footer = w.topStruct(() => {
    w.i32(1, 2); // version
    schemaElements(w, plans);
    w.i64(3, rows);
    w.structs(4, [0], () => {
      w.structs(1, chunks, (chunk) => {
        const { dictionary, data } = offsets[chunks.indexOf(chunk)]!;
        w.i64(2, 0); // file_offset (deprecated; writers put 0)
        w.struct(3, () => {
          w.i32(1, chunk.physicalType);
          w.i32s(2, chunk.encodings);
          w.strings(3, chunk.path);
          w.i32(4, UNCOMPRESSED);
          w.i64(5, chunk.numValues);
          w.i64(6, chunk.uncompressedSize);
          w.i64(7, chunk.compressedSize);
          w.i64(9, data);
          if (dictionary >= 0) w.i64(11, dictionary);
          if (chunk.statistics) {
            const { min, max } = chunk.statistics;
            w.struct(12, () => {
              w.i64(3, 0); // null_count
              w.binary(5, max);
              w.binary(6, min);
            });
          }
        });
      });
      w.i64(2, chunks.reduce((n, c) => n + c.uncompressedSize, 0));
      w.i64(3, rows);
      // The row group starts where its first column chunk does (after any alignment zeros).
      w.i64(5, Math.min(...offsets.map((o) => (o.dictionary >= 0 ? o.dictionary : o.data))));
      w.i64(6, chunks.reduce((n, c) => n + c.compressedSize, 0));
      w.i16(7, 0); // ordinal
    });
    w.structs(5, [["ARROW:schema", arrowSchema] as const], ([key, value]) => {
      w.binary(1, key);
      w.binary(2, value);
    });
    w.binary(6, "moetrace");
    // TYPE_DEFINED_ORDER for every leaf: min/max compare as the logical type says (unsigned).
    w.structs(7, chunks, () => w.struct(1, () => {}));
  });
  const tail = new Uint8Array(8);
  new DataView(tail.buffer).setUint32(0, footer.length, true);
  tail.set([0x50, 0x41, 0x52, 0x31], 4);
  parts.push(footer, tail);
  return parts;
}

/** Byte ranges end to end in one buffer. */
export function joinParts(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
