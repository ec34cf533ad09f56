/**
 * `moetrace analyze TRACE --out DIR [--bootstrap N] [--seed S] [--router-temperature T]
 * [--engine stream|duckdb] [--counts]`, or `analyze --from-counts DIR --out OUT`
 * (from_counts.ts):
 * routing statistics per layer, per domain and overall, with cluster
 * jackknife intervals, tests against random routing and uniform and
 * marginal-preserving baselines, written as tidy CSVs, SVG figures, an HTML
 * token colouring and a README documenting every column and method. With
 * --engine duckdb it writes only the count tables (sql/command.ts).
 */
import { DataError, UsageError } from "../common/errors.ts";
import { writingOutputs } from "../common/interrupt.ts";
import { checkOutputFolder, tablesOutput } from "../common/output_folder.ts";
import { TraceReader } from "../trace/mod.ts";
import { analyseCounts } from "./from_counts.ts";
import { type AnalysisResult, runAnalysis } from "./run.ts";
import { writeCounts } from "./sql/command.ts";
import { writeAnalysis } from "./write.ts";

export async function analyzeCommand(
  trace: string | undefined,
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
  const fromCounts = flags["from-counts"];
  if (fromCounts === undefined && trace === undefined) {
    throw new UsageError(
      "analyze needs a TRACE argument or --from-counts DIR (count tables of analysis/sql/); run `moetrace analyze --help`.",
    );
  }
  if (fromCounts !== undefined && trace !== undefined) {
    throw new UsageError(
      "analyze takes a TRACE argument or --from-counts DIR, not both.",
    );
  }
  await checkOutputFolder(
    out,
    { command: "analyze", ...tablesOutput("an analysis", "analysis.json") },
    flags.force === true,
  );
  if (typeof fromCounts === "string") {
    if (flags.engine === "duckdb" || flags.counts === true) {
      throw new UsageError(
        "--engine duckdb and --counts of analyze read a trace, not --from-counts.",
      );
    }
    const options = { bootstrap, seed, accumulate: { routerTemperature: temperature } };
    const result = await analyseCounts(fromCounts, options);
    writingOutputs(out);
    await writeAnalysis(result, out, { bootstrap, seed });
    if (flags.json !== true) { for (const line of result.skipped) console.log(line); }
    console.log(
      flags.json === true
        ? JSON.stringify({
          out,
          from_counts: fromCounts,
          tokens: result.totals.n_tokens,
          docs: result.totals.n_docs,
          domains: result.domains,
          bootstrap,
          seed,
          skipped: result.skipped,
        })
        : `Analysed ${result.totals.n_tokens} tokens in ${result.totals.n_docs} documents (${result.domains.length} domains) from the count tables in ${fromCounts}; wrote ${out}/.`,
    );
    return;
  }
  const reader = await TraceReader.open(trace!);
  if (reader.rows === 0) {
    throw new DataError(`The trace in ${trace} holds no tokens, so there is nothing to analyse.`);
  }
  if (!reader.manifest.capture.complete) {
    console.error(
      `analyze: ${trace} is incomplete (its capture was interrupted or is still running), so this analyses only its ${reader.docs} documents so far; run the same capture again to finish it.`,
    );
  }
  const engine = flags.engine ?? "stream";
  if (engine === "duckdb") {
    writingOutputs(out);
    const seconds = await writeCounts(reader, out, "duckdb");
    if (flags.json === true) {
      const counted = { out, engine, tokens: reader.rows, docs: reader.docs, seconds };
      console.log(JSON.stringify({ ...counted, complete: reader.manifest.capture.complete }));
      return;
    }
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
  const result = await analyseTo(reader, out, {
    bootstrap,
    seed,
    routerTemperature: temperature,
    onWrite: () => writingOutputs(out),
  });
  // With --json the lines go into the object: stdout holds nothing else.
  if (flags.json !== true) { for (const line of result.skipped) console.log(line); }
  if (flags.counts === true) await writeCounts(reader, out, "stream");
  if (flags.json === true) {
    console.log(JSON.stringify({
      out,
      engine,
      tokens: result.totals.n_tokens,
      docs: result.totals.n_docs,
      domains: result.domains,
      complete: reader.manifest.capture.complete,
      bootstrap,
      seed,
      seconds: result.timing,
      skipped: result.skipped,
    }));
    return;
  }
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
  options: {
    bootstrap: number;
    seed: number;
    routerTemperature: number;
    /** Called as the writing of `out` begins (what Ctrl-C then says). */
    onWrite?: () => void;
  },
): Promise<AnalysisResult> {
  const { bootstrap, seed } = options;
  const result = await runAnalysis(reader, {
    bootstrap,
    seed,
    accumulate: { routerTemperature: options.routerTemperature },
  });
  options.onWrite?.();
  await writeAnalysis(result, out, { bootstrap, seed });
  return result;
}
