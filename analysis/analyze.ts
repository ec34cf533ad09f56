/**
 * `moetrace analyze TRACE --out DIR [--bootstrap N] [--seed S] [--router-temperature T]
 * [--engine stream|duckdb] [--counts]`:
 * routing statistics per layer, per domain and overall, with cluster
 * jackknife intervals, tests against random routing and uniform and
 * marginal-preserving baselines, written as tidy CSVs, SVG figures, an HTML
 * token colouring and a README documenting every column and method. With
 * --engine duckdb it writes only the count tables (sql/command.ts).
 */
import { DataError, UsageError } from "../common/errors.ts";
import { TraceReader } from "../trace/mod.ts";
import { type AnalysisResult, runAnalysis } from "./run.ts";
import { writeCounts } from "./sql/command.ts";
import { writeAnalysis } from "./write.ts";

export async function analyzeCommand(
  trace: string,
  flags: Record<string, unknown>,
): Promise<void> {
  const out = flags.out;
  if (typeof out !== "string" || out === "") {
    throw new UsageError(
      `--out of analyze must name an output directory, got ${JSON.stringify(out)}.`,
    );
  }
  const bootstrap = flags.bootstrap ?? 1000;
  if (typeof bootstrap !== "number" || !Number.isInteger(bootstrap) || bootstrap < 0) {
    throw new UsageError(
      `--bootstrap of analyze must be an integer ≥ 0, got ${JSON.stringify(bootstrap)}.`,
    );
  }
  const seed = flags.seed ?? 0;
  if (typeof seed !== "number" || !Number.isInteger(seed) || seed < 0) {
    throw new UsageError(`--seed of analyze must be an integer ≥ 0, got ${JSON.stringify(seed)}.`);
  }
  const temperature = flags["router-temperature"] ?? 1;
  if (typeof temperature !== "number" || !(temperature > 0) || !Number.isFinite(temperature)) {
    throw new UsageError(
      `--router-temperature of analyze must be a number > 0, got ${JSON.stringify(temperature)}.`,
    );
  }
  try {
    const info = await Deno.stat(out);
    if (!info.isDirectory) {
      throw new UsageError(`--out of analyze must be a directory, got the file "${out}".`);
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  const reader = await TraceReader.open(trace);
  if (reader.rows === 0) {
    throw new DataError(`The trace in ${trace} holds no tokens, so there is nothing to analyse.`);
  }
  const engine = flags.engine ?? "stream";
  if (engine === "duckdb") {
    const seconds = await writeCounts(reader, out, "duckdb");
    console.log(
      `Counted ${reader.rows} tokens in ${reader.docs} documents with DuckDB; wrote ${out}/counts/ (${
        seconds.toFixed(1)
      } s). The statistics come from the default engine.`,
    );
    return;
  }
  if (engine !== "stream") {
    throw new UsageError(
      `--engine of analyze must be stream or duckdb, got ${JSON.stringify(engine)}.`,
    );
  }
  const result = await analyseTo(reader, out, { bootstrap, seed, routerTemperature: temperature });
  for (const line of result.skipped) console.log(line);
  if (flags.counts === true) await writeCounts(reader, out, "stream");
  console.log(
    `Analysed ${result.totals.n_tokens} tokens in ${result.totals.n_docs} documents (${result.domains.length} domains); wrote ${out}/ (pass ${
      result.timing.pass.toFixed(1)
    } s, jackknife ${result.timing.jackknife.toFixed(1)} s, permutations ${
      result.timing.permutations.toFixed(1)
    } s).`,
  );
}

/**
 * Analyses the trace of `reader` and writes the analysis into `out`, as
 * `analyze` does (also `compare`'s analysis of a trace, so the two agree).
 */
export async function analyseTo(
  reader: TraceReader,
  out: string,
  options: { bootstrap: number; seed: number; routerTemperature: number },
): Promise<AnalysisResult> {
  const { bootstrap, seed } = options;
  const result = await runAnalysis(reader, {
    bootstrap,
    seed,
    accumulate: { routerTemperature: options.routerTemperature },
  });
  await writeAnalysis(result, out, { bootstrap, seed });
  return result;
}
