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
 * This file turns an Arrow table into columns; parquet_columns.ts, which
 * needs no Arrow, writes them (an import's workers call it directly).
 */
import * as arrow from "apache-arrow";
import { type ColumnPlan, type ColumnValues, encodeColumns, joinParts } from "./parquet_columns.ts";

export { PAGE_VALUES, PLAIN_PAGE_BYTES } from "./parquet_columns.ts";

/** A column's plan, or null when its type is outside what this encoder writes. */
function planColumn(field: arrow.Field, data: arrow.Data): ColumnPlan | null {
  // A sliced column (offset > 0) is left to parquet-wasm: shards are built whole.
  if (data.nullCount > 0 || field.nullable || data.offset !== 0) return null;
  const type = field.type;
  type Flat = Pick<ColumnPlan, "int" | "column">;
  const flat = (t: arrow.DataType, d: arrow.Data): Flat | null => {
    const values = d.values;
    if (arrow.DataType.isInt(t) && !t.isSigned && (t.bitWidth === 8 || t.bitWidth === 16)) {
      return {
        int: { bits: t.bitWidth, signed: false },
        column: { kind: "small-int", values: values as Uint8Array | Uint16Array },
      };
    }
    if (arrow.DataType.isInt(t) && t.bitWidth === 32) {
      return {
        int: { bits: 32, signed: t.isSigned },
        column: { kind: "int32", values: values as Uint32Array | Int32Array },
      };
    }
    if (arrow.DataType.isFloat(t) && t.precision === arrow.Precision.SINGLE) {
      return { column: { kind: "float", values: values as Float32Array } };
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
      list: { item: item.name, width },
      ...values,
      column: sliceRows(values.column, data.length, width),
    };
  }
  if (arrow.DataType.isDictionary(type)) {
    if (!arrow.DataType.isUtf8(type.dictionary) || type.indices.bitWidth !== 32) return null;
    const dictionary = data.dictionary as arrow.Vector<arrow.Utf8> | undefined;
    if (!dictionary || dictionary.data.length !== 1 || dictionary.nullCount > 0) return null;
    // A code outside the dictionary is left to parquet-wasm to refuse, and
    // a dictionary past 2^24 strings (wider indices than readers take) to it.
    const size = dictionary.length;
    if (size > 1 << 24) return null;
    const int32 = (data.values as Int32Array).subarray(0, data.length);
    let outside = 0;
    for (let i = 0; i < int32.length; i++) {
      const code = int32[i]!;
      if (code < 0 || code >= size) outside++;
    }
    if (outside > 0) return null;
    const codes = new Uint32Array(int32.buffer, int32.byteOffset, int32.length);
    const utf8 = dictionary.data[0]!;
    return {
      name: field.name,
      column: {
        kind: "strings",
        codes,
        offsets: utf8.valueOffsets,
        chars: utf8.values,
        count: size,
      },
    };
  }
  const values = flat(type, data);
  return values
    ? { name: field.name, ...values, column: sliceRows(values.column, data.length, 1) }
    : null;
}

/** The values of the first `rows` rows of a column whose rows hold `width` values. */
function sliceRows(column: ColumnValues, rows: number, width: number): ColumnValues {
  if (column.kind === "strings") return column;
  const values = column.values.subarray(0, rows * width);
  return { ...column, values } as ColumnValues;
}

/** The Arrow schema as an IPC schema message (continuation, length, flatbuffer), base64. */
export function arrowSchemaBase64(schema: arrow.Schema): string {
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
  const plans: ColumnPlan[] = [];
  for (const [i, field] of table.schema.fields.entries()) {
    const plan = planColumn(field, batch.data.children[i]!);
    if (!plan) return null;
    plans.push(plan);
  }
  return joinParts(encodeColumns(plans, batch.numRows, arrowSchemaBase64(table.schema), options));
}
