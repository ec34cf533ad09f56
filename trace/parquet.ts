/**
 * Parquet shards (DESIGN.md "Trace format"): the same Arrow table as an IPC
 * shard, so DuckDB, polars, pyarrow and Spark read a trace's shards with no
 * options. One row group per shard: a shard is the unit the manifest indexes.
 *
 * Shards are written by moetrace's own encoder (parquet_encode.ts:
 * dictionary-encoded, bit-packed expert ids), 5× faster than parquet-wasm
 * (the Rust `parquet` crate in WebAssembly), which writes any table the
 * encoder does not take. Files embed their Arrow schema (the `ARROW:schema`
 * key every Arrow-based reader honours), so pyarrow, polars and this reader
 * get back fixed_size_list<u16>[M·k] and dictionary<utf8> columns; DuckDB
 * and Spark, which do not use it, see plain Parquet LIST and UTF8 columns.
 *
 * parquet-wasm's settings, measured on 66,000 rows × 32 layers × top-2 (one
 * shard of `deno task bench trace`) and on 66,000 rows × 16 layers × top-8
 * (one of `bench import`): version 2 data pages, whose repetition and
 * definition levels stay outside the compressed block (encode about 1.5× and
 * decode up to 2× faster than version 1 pages); dictionary encoding only for
 * the string columns (on the list columns parquet-wasm's tripled their encode
 * time); statistics only on the flat columns. Its per-column settings name a
 * column by one path segment, so they reach only the flat columns:
 * statistics are off by default and turned on per flat column.
 */
import * as arrow from "apache-arrow";
import * as parquet from "parquet-wasm";
import { fastParquetToTable } from "./parquet_decode.ts";
import { encodeShardParquet } from "./parquet_encode.ts";

/** Columns whose values repeat (strings): dictionary-encoded. */
const DICTIONARY_COLUMNS = ["domain", "piece", "request"];
/** One value per row: given chunk statistics (min/max, e.g. of `doc`, for engines that skip shards). */
const FLAT_COLUMNS = ["doc", "domain", "pos", "token", "piece", "phase", "request", "arrival_step"];

/** What the Parquet encoder needs to know of a table besides its IPC stream. */
export interface ParquetTableInfo {
  rows: number;
  columns: string[];
}

function writerProperties(info: ParquetTableInfo): parquet.WriterProperties {
  let builder = new parquet.WriterPropertiesBuilder()
    .setCompression(parquet.Compression.ZSTD)
    .setWriterVersion(parquet.WriterVersion.V2)
    .setDictionaryEnabled(false)
    .setStatisticsEnabled(parquet.EnabledStatistics.None)
    // One row group per shard: a shard is the unit the manifest indexes.
    .setMaxRowGroupSize(Math.max(1, info.rows))
    .setCreatedBy("moetrace (parquet-wasm)");
  for (const name of DICTIONARY_COLUMNS) {
    if (info.columns.includes(name)) builder = builder.setColumnDictionaryEnabled(name, true);
  }
  for (const name of FLAT_COLUMNS) {
    if (info.columns.includes(name)) {
      builder = builder.setColumnStatisticsEnabled(name, parquet.EnabledStatistics.Chunk);
    }
  }
  return builder.build();
}

/** The rows and column names of a table, as `ipcStreamToParquet` takes them. */
export function tableInfo(table: arrow.Table): ParquetTableInfo {
  return { rows: table.numRows, columns: table.schema.fields.map((f) => f.name) };
}

/**
 * Encodes a shard's Arrow table as one Parquet file with one row group:
 * moetrace's own encoder (parquet_encode.ts) for the column types a shard
 * has, parquet-wasm for any other table.
 */
export function tableToParquet(table: arrow.Table): Uint8Array {
  return encodeShardParquet(table) ?? tableToParquetWasm(table);
}

/** The same from the table's Arrow IPC stream (what a worker thread is sent). */
export function ipcStreamToParquet(stream: Uint8Array): Uint8Array {
  return tableToParquet(arrow.tableFromIPC(stream));
}

/**
 * A table through parquet-wasm's writer (delta-encoded integers, zstd): the
 * format of traces written before parquet_encode.ts, which readers must go on
 * reading, and the fallback for tables outside the encoder's subset.
 */
export function tableToParquetWasm(table: arrow.Table): Uint8Array {
  const wasmTable = parquet.Table.fromIPCStream(arrow.tableToIPC(table, "stream"));
  return parquet.writeParquet(wasmTable, writerProperties(tableInfo(table)));
}

export interface ParquetReadOptions {
  /**
   * Rows expected (the manifest's count): the batch size, so a file of that
   * many rows decodes as one record batch whose columns the reader hands out
   * as views. Default 65536.
   */
  rows?: number;
  /** Read only these columns (default all). */
  columns?: string[];
}

/**
 * Decodes a Parquet file into an Arrow table: moetrace's own shards on the
 * fast path of parquet_decode.ts, anything else (and any file the fast path
 * does not vouch for) through parquet-wasm; throws the decoder's error on
 * bytes it cannot decode.
 */
export function parquetToTable(bytes: Uint8Array, options: ParquetReadOptions = {}): arrow.Table {
  return fastParquetToTable(bytes, options.columns) ?? parquetWasmToTable(bytes, options);
}

/** The same through parquet-wasm alone (every file it can read; the fast path's reference in tests). */
export function parquetWasmToTable(
  bytes: Uint8Array,
  options: ParquetReadOptions = {},
): arrow.Table {
  const wasmTable = parquet.readParquet(bytes, {
    batchSize: Math.max(1, options.rows ?? 65536),
    ...(options.columns ? { columns: options.columns } : {}),
  });
  return arrow.tableFromIPC(wasmTable.intoIPCStream());
}
