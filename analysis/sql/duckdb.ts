/**
 * The count tables computed by DuckDB (embedded, through `@duckdb/node-api`)
 * from a trace's Parquet shards, with the SQL files of this folder: the same
 * files Spark SQL runs (README "Analysis on DuckDB and Spark"). Only the two
 * views the files read are engine-specific: `trace` (the shards the manifest
 * lists, each checked against its size and fingerprint first) and `slots`
 * (the `experts` list's positions; DuckDB subscripts count from 1).
 *
 * DuckDB is native code: it runs with Deno's --allow-ffi, outside the
 * permission checks that bound the rest of moetrace.
 */
import { DuckDBInstance } from "@duckdb/node-api";
import { DataError, messageOf } from "../../common/errors.ts";
import { FINGERPRINT_HEAD, FINGERPRINT_TAIL, shardFingerprint } from "../../trace/manifest.ts";
import { isParquetShard, type TraceReader } from "../../trace/reader.ts";
import { Accumulator } from "../accumulate.ts";
import type { CsvRow } from "../../common/csv.ts";
import { bucketed, COUNT_TABLES, type CountTables, sortTables } from "./counts.ts";

export interface DuckDBCountOptions {
  /** Threads DuckDB may use (default: all cores). */
  threads?: number;
  /** Folder DuckDB may spill to when the aggregations outgrow memory (default: none). */
  spillDir?: string;
}

/** The per-document SQL of each table, with the columns it returns. */
const QUERIES = ["expert_counts", "repetition", "overlap", "coactivation", "flow"] as const;

async function sqlFile(name: string): Promise<string> {
  return await Deno.readTextFile(new URL(`./${name}.sql`, import.meta.url));
}

function quote(text: string): string {
  return `'${text.replaceAll("'", "''")}'`;
}

/** Checks every shard's size and fingerprint (the manifest is the index) and returns their paths. */
export async function checkedShardPaths(reader: TraceReader): Promise<string[]> {
  const paths: string[] = [];
  for (const shard of reader.manifest.shards) {
    const path = `${reader.dir}/${shard.file}`;
    if (!isParquetShard(shard.file)) {
      throw new DataError(
        `Shard ${path} is an Arrow IPC file; --engine duckdb reads Parquet shards (traces written since Parquet became the default), so analyse this trace with the default engine.`,
      );
    }
    if (shard.bytes !== undefined || shard.fingerprint !== undefined) {
      const bytes = await headAndTail(path);
      if (shard.bytes !== undefined && bytes.size !== shard.bytes) {
        throw new DataError(
          `Shard ${path} has ${bytes.size} bytes but the manifest says ${shard.bytes}; it is truncated or was changed.`,
        );
      }
      if (
        shard.fingerprint !== undefined &&
        (await shardFingerprint(bytes.sample)) !== shard.fingerprint
      ) {
        throw new DataError(
          `Shard ${path} does not match its fingerprint in the manifest; it is corrupted or was changed.`,
        );
      }
    }
    paths.push(path);
  }
  return paths;
}

/**
 * A file's first FINGERPRINT_HEAD and last FINGERPRINT_TAIL bytes laid out
 * so that shardFingerprint gives the whole file's fingerprint, and its size.
 */
async function headAndTail(path: string): Promise<{ size: number; sample: Uint8Array }> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path);
  } catch (error) {
    throw new DataError(`Cannot read shard ${path}: ${messageOf(error)}.`);
  }
  try {
    const size = (await file.stat()).size;
    if (size <= FINGERPRINT_HEAD + FINGERPRINT_TAIL) {
      const all = new Uint8Array(size);
      await readFully(file, all);
      return { size, sample: all };
    }
    const sample = new Uint8Array(FINGERPRINT_HEAD + FINGERPRINT_TAIL);
    await readFully(file, sample.subarray(0, FINGERPRINT_HEAD));
    await file.seek(size - FINGERPRINT_TAIL, Deno.SeekMode.Start);
    await readFully(file, sample.subarray(FINGERPRINT_HEAD));
    return { size, sample };
  } finally {
    file.close();
  }
}

async function readFully(file: Deno.FsFile, into: Uint8Array): Promise<void> {
  let at = 0;
  while (at < into.length) {
    const n = await file.read(into.subarray(at));
    if (n === null) throw new DataError(`A shard ended while it was being read.`);
    at += n;
  }
}

function toNumber(value: unknown): unknown {
  return typeof value === "bigint" ? Number(value) : value;
}

/**
 * The two views every SQL file of this folder reads, as DuckDB defines them:
 * `trace` (the shards, matched by column name, with each row's file and place
 * in it for documents.sql) and `slots` (subscripts from 1).
 */
function viewsSql(paths: readonly string[], reader: TraceReader): string[] {
  const { layers: M, topK: k } = reader.shape;
  const moeLayers = reader.manifest.model.moe_layers;
  const files = paths.map(quote).join(", ");
  const slots: string[] = [];
  for (let l = 0; l < M; l++) {
    for (let r = 0; r < k; r++) slots.push(`(${l * k + r + 1}, ${moeLayers[l]}, ${l}, ${r})`);
  }
  return [
    // By name: shards of one trace may differ in optional columns (a weights column is
    // left out of shards that would hold only the 1/k placeholder).
    `CREATE VIEW trace AS SELECT *, filename AS shard_file, file_row_number AS shard_row FROM read_parquet([${files}], union_by_name = true, filename = true, file_row_number = true)`,
    `CREATE TABLE slots AS SELECT * FROM (VALUES ${
      slots.join(", ")
    }) AS s(slot, layer, layer_index, rank)`,
  ];
}

/** The tables `analyze --from-counts DIR` reads: documents.sql's, then the per-document count tables. */
export const EXPORTED_TABLES = ["documents", ...QUERIES] as const;

/**
 * Runs documents.sql and the per-document count SQL on the trace in DuckDB
 * and writes each result as `DIR/<table>/part-00000.parquet` (or `.csv`
 * with a header; for top_k ≥ 3 also topk_sets.sql's, unless `topkSets` is
 * false), with a copy of the trace's manifest.json: the folder that
 * the Spark recipe of README "Analysis on DuckDB and Spark" writes, for
 * `moetrace analyze --from-counts DIR` (DuckDB standing in for Spark in tests).
 */
export async function exportCountTables(
  reader: TraceReader,
  dir: string,
  options: DuckDBCountOptions & { format?: "parquet" | "csv"; topkSets?: boolean } = {},
): Promise<void> {
  const paths = await checkedShardPaths(reader);
  const format = options.format ?? "parquet";
  const instance = await DuckDBInstance.create(":memory:", {
    threads: String(options.threads ?? navigator.hardwareConcurrency ?? 1),
  });
  const connection = await instance.connect();
  try {
    for (const sql of viewsSql(paths, reader)) await connection.run(sql);
    // topk_sets (exact k ≥ 3 shuffle baselines) only where they need it: it is large.
    const names = reader.shape.topK >= 3 && options.topkSets !== false
      ? [...EXPORTED_TABLES, "topk_sets"]
      : EXPORTED_TABLES;
    for (const name of names) {
      await Deno.mkdir(`${dir}/${name}`, { recursive: true });
      const to = quote(`${dir}/${name}/part-00000.${format}`);
      const how = format === "csv" ? "FORMAT csv, HEADER true" : "FORMAT parquet";
      await connection.run(`COPY (${await sqlFile(name)}) TO ${to} (${how})`);
    }
  } catch (error) {
    throw new DataError(`DuckDB could not count the trace in ${reader.dir}: ${messageOf(error)}`);
  } finally {
    connection.closeSync();
    instance.closeSync();
  }
  await Deno.copyFile(`${reader.dir}/manifest.json`, `${dir}/manifest.json`);
}

/** Runs the SQL of analysis/sql/ on the trace in DuckDB; returns the count tables. */
export async function countsWithDuckDB(
  reader: TraceReader,
  options: DuckDBCountOptions = {},
): Promise<CountTables> {
  const paths = await checkedShardPaths(reader);
  const { layers: M, topK: k, experts: E } = reader.shape;
  const config: Record<string, string> = {
    threads: String(options.threads ?? navigator.hardwareConcurrency ?? 1),
  };
  if (options.spillDir) config.temp_directory = options.spillDir;
  const instance = await DuckDBInstance.create(":memory:", config);
  const connection = await instance.connect();
  const run = async (sql: string): Promise<CsvRow[]> => {
    try {
      const result = await connection.runAndReadAll(sql);
      // Column by column: getRowObjects made a DuckDBValue per cell (2.5 s for the
      // 496,000 rows of flow.sql on 10 M token-layers, against 0.6 s this way).
      const names = result.columnNames();
      const columns = result.getColumnsJS();
      const rows: CsvRow[] = [];
      const count = columns[0]?.length ?? 0;
      for (let i = 0; i < count; i++) {
        const out: CsvRow = {};
        for (let c = 0; c < names.length; c++) out[names[c]!] = toNumber(columns[c]![i]) as never;
        rows.push(out);
      }
      return rows;
    } catch (error) {
      throw new DataError(`DuckDB could not count the trace in ${reader.dir}: ${messageOf(error)}`);
    }
  };
  try {
    for (const sql of viewsSql(paths, reader)) await run(sql);
    const perDoc: Record<string, CsvRow[]> = {};
    for (const name of QUERIES) perDoc[name] = await run(await sqlFile(name));
    // Trace order of each domain's documents: manifest order of the files, then row order
    // (documents.sql, as analyze --from-counts reads it).
    const firsts = await run(await sqlFile("documents"));
    const fileIndex = new Map(paths.map((p, i) => [p, i]));
    firsts.sort((a, b) =>
      (fileIndex.get(a.shard_file as string)! - fileIndex.get(b.shard_file as string)!) ||
      (a.first_row as number) - (b.first_row as number)
    );
    const order = new Map<string, number[]>();
    for (const row of firsts) {
      const list = order.get(row.domain as string) ?? [];
      list.push(row.doc as number);
      order.set(row.domain as string, list);
    }
    // The streaming pass's bucket count for this trace (it depends only on the shape and domains).
    const buckets = new Accumulator(
      { layers: M, experts: E, topK: k, probs: false },
      reader.manifest.capture.domains,
    ).buckets;
    const tables: CountTables = {
      expert_counts: perDoc.expert_counts!,
      repetition: perDoc.repetition!,
      overlap: perDoc.overlap!,
      coactivation: bucketed(
        perDoc.coactivation!,
        order,
        buckets,
        COUNT_TABLES.coactivation.keys,
        "tokens",
      ),
      flow: bucketed(perDoc.flow!, order, buckets, COUNT_TABLES.flow.keys, "tokens"),
    };
    return sortTables(tables);
  } finally {
    connection.closeSync();
    instance.closeSync();
  }
}
