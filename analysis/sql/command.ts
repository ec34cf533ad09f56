/**
 * The count tables of `moetrace analyze`: `--engine duckdb` computes them
 * with DuckDB from the trace's Parquet shards (and nothing else); `--counts`
 * with the default engine writes those of the streaming pass. Either way
 * they land in `OUT/counts/*.csv`, identical for one trace.
 */
import type { TraceReader } from "../../trace/mod.ts";
import { accumulateTrace } from "../run.ts";
import { countsFromAccumulator, type CountTables, writeCountTables } from "./counts.ts";

/** Computes the count tables with `engine` and writes them to `out/counts/`; returns seconds taken. */
export async function writeCounts(
  reader: TraceReader,
  out: string,
  engine: "stream" | "duckdb",
): Promise<number> {
  const start = performance.now();
  let tables: CountTables;
  if (engine === "duckdb") {
    const spillDir = `${out}/.duckdb-spill`;
    const { countsWithDuckDB } = await import("./duckdb.ts");
    try {
      tables = await countsWithDuckDB(reader, { spillDir });
    } finally {
      await Deno.remove(spillDir, { recursive: true }).catch(() => {});
    }
  } else {
    tables = countsFromAccumulator(await accumulateTrace(reader), reader.manifest.model.moe_layers);
  }
  await writeCountTables(tables, `${out}/counts`);
  return (performance.now() - start) / 1000;
}
