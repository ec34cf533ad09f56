/**
 * moetrace's own Parquet encoder for shard tables: the few column kinds a
 * shard has, written straight from the table's typed arrays.
 *
 * Why: parquet-wasm took 1.6 of the 3.1 s of `bench import` (10.24 M
 * token-layer rows) and ran on one core at ~400k tokens/s, below the import's
 * 1 M tokens/s target by itself; and reading its delta-encoded, zstd pages
 * made Parquet 3× slower to read than Arrow IPC. Most of a shard is the
 * expert-id lists: small integers (< E), which as dictionary indices of one
 * byte each (E ≤ 256) need no compressor, encode and decode by plain byte
 * copies, and take half the bytes of Arrow IPC's u16.
 *
 * What is written (every reader of Parquet 2 reads it: DuckDB, pyarrow,
 * polars, Spark 3.3+, arrow-rs; the tests read the files back with
 * parquet-wasm and DuckDB):
 * - one row group, no compression; version 2 data pages, each starting at a
 *   row (a list never spans pages): PAGE_VALUES dictionary indices at most,
 *   or for PLAIN columns one page of up to PLAIN_PAGE_BYTES whose values
 *   start 4-byte aligned, so a reader can view them in place;
 * - u8/u16 columns and lists of them (phase, experts, spec): RLE_DICTIONARY,
 *   indices 8 bits wide (16 past 256 values), the values their own indices;
 * - u32/i32 columns (doc, pos, token, arrival_step): PLAIN, uncompressed,
 *   with min/max statistics (engines skip shards by `doc`);
 * - f32 lists (weights, probs): PLAIN, uncompressed: zstd shrank router
 *   weights by only ~10%, and its ~400 MB/s to write and ~400–600 MB/s to read
 *   made the weights most of a shard's encode and decode time;
 * - dictionary<utf8> columns (domain, piece, request): RLE_DICTIONARY over
 *   the Arrow dictionary;
 * - the table's Arrow schema, base64 in `ARROW:schema`, as arrow-rs and
 *   arrow-cpp write it, so Arrow readers get fixed_size_list and dictionary
 *   types back.
 *
 * `encodeShardParquet` returns null for a table outside that subset (several
 * record batches, nulls, another type); the caller then uses parquet-wasm.
 */
import * as arrow from "apache-arrow";
import { CompactWriter } from "./parquet_thrift.ts";
import { bitPack, bytePack, indexBitWidth, listRepetitionLevels, rleRun } from "./parquet_runs.ts";

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

/** What a column holds, as the encoder sees it. */
type ColumnKind =
  | { kind: "small-int"; values: Uint8Array | Uint16Array; bits: 8 | 16 }
  | { kind: "int32"; values: Uint32Array | Int32Array; signed: boolean }
  | { kind: "float"; values: Float32Array }
  | { kind: "strings"; codes: Uint16Array; dictionary: arrow.Vector<arrow.Utf8> };

interface ColumnPlan {
  name: string;
  /** The list's item name (Arrow's field name, "item"), for lists. */
  item?: string;
  /** Values per row: 1, or the list width. */
  width: number;
  column: ColumnKind;
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
  values: Uint8Array,
  encoding: number,
  numValues: number,
  rows: number,
  levels: { rep: Uint8Array; def: Uint8Array },
) {
  return page(
    DATA_PAGE_V2,
    levels.rep.length + levels.def.length + values.length,
    [levels.rep, levels.def, values],
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
function pageLevels(rows: number, plan: ColumnPlan, listed: boolean) {
  if (!listed) return { rep: new Uint8Array(0), def: new Uint8Array(0) };
  const n = rows * plan.width;
  return {
    rep: listRepetitionLevels(rows, plan.width),
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
  const words = new Uint32Array(values.buffer, values.byteOffset, whole);
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

function encodeChunk(
  plan: ColumnPlan,
  rows: number,
  listed: boolean,
  plainPageBytes: number,
): EncodedChunk {
  const { column, width } = plan;
  const total = rows * width;
  const rowsPerPage = Math.max(1, Math.floor(PAGE_VALUES / width));
  const pages: { bytes: Uint8Array[]; uncompressed: number; compressed: number }[] = [];
  let physicalType = INT32;
  let encodings = [PLAIN, RLE];
  let statistics: EncodedChunk["statistics"] = null;
  let hasDictionary = false;
  const path = listed ? [plan.name, "list", plan.item ?? "item"] : [plan.name];
  // Levels repeat page to page: made once for full pages, once for the last.
  const levelsFor = new Map<number, { rep: Uint8Array; def: Uint8Array }>();
  const levels = (pageRows: number) => {
    let l = levelsFor.get(pageRows);
    if (!l) levelsFor.set(pageRows, l = pageLevels(pageRows, plan, listed));
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
    values: Uint16Array,
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
        dataPage(out.subarray(0, end), RLE_DICTIONARY, n, pageRows, levels(pageRows)),
      );
    }
  };

  if (column.kind === "small-int") {
    const { map, dictionary } = smallIntDictionary(column.values);
    dictionaryPage(new Uint8Array(dictionary.buffer), dictionary.length);
    const bitWidth = dictionary.length <= 256 ? 8 : 16;
    for (let row = 0; row < rows; row += rowsPerPage) {
      const pageRows = Math.min(rowsPerPage, rows - row);
      const n = pageRows * width;
      const out = new Uint8Array(1 + 10 + Math.ceil(n / 8) * bitWidth);
      out[0] = bitWidth;
      const values = column.values.subarray(row * width, row * width + n);
      const end = bytePack(out, 1, values, n, bitWidth, map);
      pages.push(
        dataPage(out.subarray(0, end), RLE_DICTIONARY, n, pageRows, levels(pageRows)),
      );
    }
  } else if (column.kind === "strings") {
    physicalType = BYTE_ARRAY;
    const data = column.dictionary.data[0]!;
    const offsets = data.valueOffsets;
    const chars = data.values;
    const count = column.dictionary.length;
    const plain = new Uint8Array(4 * count + (offsets[count]! - offsets[0]!));
    const view = new DataView(plain.buffer);
    let at = 0;
    for (let i = 0; i < count; i++) {
      const length = offsets[i + 1]! - offsets[i]!;
      view.setUint32(at, length, true);
      plain.set(chars.subarray(offsets[i]!, offsets[i + 1]!), at + 4);
      at += 4 + length;
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
      pages.push(dataPage(body, PLAIN, pageRows * width, pageRows, levels(pageRows)));
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
    // The first page's parts are its header, repetition and definition levels, values.
    valuesAt: hasDictionary ? -1 : pages[0]!.bytes.slice(0, 3).reduce((n, b) => n + b.length, 0),
    uncompressedSize: pages.reduce((n, p) => n + p.uncompressed, 0),
    compressedSize: sizes.reduce((n, s) => n + s, 0),
    statistics,
    path,
  };
}

// ---------------------------------------------------------------- the file

/** A column's plan, or null when its type is outside what this encoder writes. */
function planColumn(field: arrow.Field, data: arrow.Data): ColumnPlan | null {
  // A sliced column (offset > 0) is left to parquet-wasm: shards are built whole.
  if (data.nullCount > 0 || field.nullable || data.offset !== 0) return null;
  const type = field.type;
  const flat = (t: arrow.DataType, d: arrow.Data): ColumnKind | null => {
    const values = d.values;
    if (arrow.DataType.isInt(t) && !t.isSigned && (t.bitWidth === 8 || t.bitWidth === 16)) {
      return { kind: "small-int", values: values as Uint8Array | Uint16Array, bits: t.bitWidth };
    }
    if (arrow.DataType.isInt(t) && t.bitWidth === 32) {
      return { kind: "int32", values: values as Uint32Array | Int32Array, signed: t.isSigned };
    }
    if (arrow.DataType.isFloat(t) && t.precision === arrow.Precision.SINGLE) {
      return { kind: "float", values: values as Float32Array };
    }
    return null;
  };
  if (arrow.DataType.isFixedSizeList(type)) {
    const item = type.children[0]!;
    const child = data.children[0]!;
    if (item.nullable || child.nullCount > 0 || child.offset !== 0) return null;
    const values = flat(item.type, child);
    const width = type.listSize;
    if (!values || width < 1) return null;
    return {
      name: field.name,
      item: item.name,
      width,
      column: sliceRows(values, data.length, width),
    };
  }
  if (arrow.DataType.isDictionary(type)) {
    if (!arrow.DataType.isUtf8(type.dictionary) || type.indices.bitWidth !== 32) return null;
    const dictionary = data.dictionary as arrow.Vector<arrow.Utf8> | undefined;
    if (!dictionary || dictionary.data.length !== 1 || dictionary.nullCount > 0) return null;
    // Codes as u16 (what the packer reads): a dictionary of more than 65,536
    // strings, or a code outside it, is left to parquet-wasm.
    const size = dictionary.length;
    if (size > 65536) return null;
    const int32 = (data.values as Int32Array).subarray(0, data.length);
    const codes = new Uint16Array(int32.length);
    let outside = 0;
    for (let i = 0; i < int32.length; i++) {
      const code = int32[i]!;
      if (code < 0 || code >= size) outside++;
      codes[i] = code;
    }
    if (outside > 0) return null;
    return { name: field.name, width: 1, column: { kind: "strings", codes, dictionary } };
  }
  const values = flat(type, data);
  return values ? { name: field.name, width: 1, column: sliceRows(values, data.length, 1) } : null;
}

/** The values of the first `rows` rows of a column whose rows hold `width` values. */
function sliceRows(column: ColumnKind, rows: number, width: number): ColumnKind {
  if (column.kind === "strings") return column;
  const values = column.values.subarray(0, rows * width);
  return { ...column, values } as ColumnKind;
}

/** The Arrow schema as an IPC schema message (continuation, length, flatbuffer), base64. */
function arrowSchemaBase64(schema: arrow.Schema): string {
  // Dictionary ids renumbered 0, 1, … in field order: apache-arrow numbers
  // them per process, so the same shard would otherwise embed different
  // bytes when encoded on a worker thread.
  let id = 0;
  const fields = schema.fields.map((f) =>
    arrow.DataType.isDictionary(f.type)
      ? f.clone({
        type: new arrow.Dictionary(f.type.dictionary, f.type.indices, id++, f.type.isOrdered),
      })
      : f
  );
  const stream = arrow.tableToIPC(
    new arrow.Table(new arrow.Schema(fields, schema.metadata)),
    "stream",
  );
  // The stream is the schema message then the 8-byte end-of-stream marker.
  const message = stream.subarray(0, stream.length - 8);
  let binary = "";
  for (let i = 0; i < message.length; i += 0x8000) {
    binary += String.fromCharCode(...message.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

function schemaElements(w: CompactWriter, plans: ColumnPlan[], fields: arrow.Field[]): void {
  const elements: ((w: CompactWriter) => void)[] = [(w) => {
    w.binary(4, "arrow_schema");
    w.i32(5, plans.length);
  }];
  const leaf = (name: string, plan: ColumnPlan, field: arrow.Field) => (w: CompactWriter) => {
    const type = arrow.DataType.isFixedSizeList(field.type)
      ? field.type.children[0]!.type
      : field.type;
    const column = plan.column;
    w.i32(1, column.kind === "float" ? FLOAT : column.kind === "strings" ? BYTE_ARRAY : INT32);
    w.i32(3, REQUIRED);
    w.binary(4, name);
    if (column.kind === "strings") {
      w.i32(6, CONVERTED_UTF8);
      w.struct(10, () => w.struct(1, () => {}));
    } else if (column.kind !== "float" && arrow.DataType.isInt(type)) {
      w.i32(6, type.isSigned ? CONVERTED_INT_32 : CONVERTED_UINT[type.bitWidth]!);
      w.struct(10, () =>
        w.struct(10, () => {
          w.i8(1, type.bitWidth);
          w.bool(2, type.isSigned);
        }));
    }
  };
  plans.forEach((plan, i) => {
    const field = fields[i]!;
    if (arrow.DataType.isFixedSizeList(field.type)) {
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
      elements.push(leaf(field.type.children[0]!.name, plan, field));
    } else {
      elements.push(leaf(plan.name, plan, field));
    }
  });
  w.structs(2, elements, (element) => element(w));
}

/**
 * A table of one record batch as a Parquet file of one row group, or null
 * when a column is outside what this encoder writes (see the file comment).
 * `plainPageBytes` (default PLAIN_PAGE_BYTES) lets tests split PLAIN columns.
 */
export function encodeShardParquet(
  table: arrow.Table,
  options: { plainPageBytes?: number } = {},
): Uint8Array | null {
  if (table.batches.length !== 1 || table.numRows === 0) return null;
  const batch = table.batches[0]!;
  const fields = table.schema.fields;
  const plans: ColumnPlan[] = [];
  for (const [i, field] of fields.entries()) {
    const plan = planColumn(field, batch.data.children[i]!);
    if (!plan) return null;
    plans.push(plan);
  }
  const rows = batch.numRows;
  const chunks = plans.map((plan, i) =>
    encodeChunk(
      plan,
      rows,
      arrow.DataType.isFixedSizeList(fields[i]!.type),
      options.plainPageBytes ?? PLAIN_PAGE_BYTES,
    )
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
    schemaElements(w, plans, fields);
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
    w.structs(5, [["ARROW:schema", arrowSchemaBase64(table.schema)] as const], ([key, value]) => {
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
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
