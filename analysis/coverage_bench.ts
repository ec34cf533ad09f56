/**
 * `moetrace bench coverage`: the coverage study of coverage.ts on two shapes
 * of null trace, 200 traces each (issue 15 targets: every statistic's
 * intervals cover its null value in ≥ 93% of cells at 10 documents per
 * domain, and the point estimate lies inside its own interval in ≥ 99.5% of
 * cells, summary rows included). Also prints how often each test rejects at
 * 0.05 under the null (about 5% for a calibrated test, less for a
 * conservative one).
 *
 * - A: E = 8, k = 2, 4 layers, 4 domains × 10 documents × 300 tokens, with
 *   router distributions (the issue's shape);
 * - B: E = 16, k = 4, 3 layers, 3 domains × 10 documents of 100–400 tokens
 *   (unequal clusters; k ≥ 3, so sampled shuffle baselines), without.
 */
import type { BenchOptions } from "../bench/measure.ts";
import { TraceReader } from "../trace/mod.ts";
import {
  type CoverageTallies,
  emptyTallies,
  type NullShape,
  tallyNullTrace,
  writeNullTrace,
} from "./coverage.ts";
import { runAnalysis } from "./run.ts";

export const COVERAGE_SHAPES: NullShape[] = [
  {
    name: "A",
    experts: 8,
    topK: 2,
    layers: 4,
    domains: 4,
    docsPerDomain: 10,
    tokens: 300,
    probs: true,
  },
  {
    name: "B",
    experts: 16,
    topK: 4,
    layers: 3,
    domains: 3,
    docsPerDomain: 10,
    tokens: { min: 100, max: 400 },
    probs: false,
  },
];

/**
 * Traces per shape: enough that a summary family (5 rows a trace) has about
 * 1000 cells, so a 95% coverage reads 95 ± 1.4% (2 se) rather than ± 4%.
 */
export const TRACES_PER_SHAPE = 200;

/** Targets of the study. */
export const COVERAGE_TARGET = 0.93;
export const INSIDE_TARGET = 0.995;

/** Analyses `traces` null traces of `shape` (seeds first..first+traces−1) into `tallies`. */
export async function runCoverage(
  shape: NullShape,
  traces: number,
  options: { bootstrap: number; firstSeed?: number },
  tallies: CoverageTallies = emptyTallies(),
): Promise<CoverageTallies> {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-coverage-" });
  try {
    for (let i = 0; i < traces; i++) {
      const seed = (options.firstSeed ?? 1) + i;
      const trace = `${dir}/${shape.name}-${seed}`;
      await writeNullTrace(trace, shape, seed);
      const result = await runAnalysis(await TraceReader.open(trace), {
        bootstrap: options.bootstrap,
        seed,
      });
      tallyNullTrace(tallies, result, shape);
      await Deno.remove(trace, { recursive: true });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  return tallies;
}

export async function benchCoverage(options: BenchOptions): Promise<void> {
  const traces = TRACES_PER_SHAPE;
  const started = performance.now();
  const load = Deno.loadavg()[0];
  const report: Record<string, unknown>[] = [];
  for (const shape of COVERAGE_SHAPES) {
    const t0 = performance.now();
    const tallies = await runCoverage(shape, traces, { bootstrap: 200 });
    const seconds = (performance.now() - t0) / 1000;
    const lines: string[] = [];
    for (const [family, t] of [...tallies.intervals].sort()) {
      const coverage = t.covered / t.cells;
      const inside = 1 - t.outside / t.cells;
      report.push({
        shape: shape.name,
        family,
        cells: t.cells,
        coverage,
        inside,
        missing: t.missing,
      });
      const verdict = coverage >= COVERAGE_TARGET && inside >= INSIDE_TARGET ? "met" : "NOT MET";
      lines.push(
        `  ${family.padEnd(30)} ${String(t.cells).padStart(7)} ${
          (100 * coverage).toFixed(1).padStart(7)
        }% ${(100 * (1 - inside)).toFixed(2).padStart(7)}%  ${verdict}${
          t.missing > 0 ? ` (${t.missing} without interval)` : ""
        }`,
      );
    }
    for (const [family, t] of [...tallies.tests].sort()) {
      report.push({
        shape: shape.name,
        test: family,
        tests: t.tests,
        rejected: t.rejected / t.tests,
      });
      lines.push(
        `  test ${family.padEnd(25)} ${String(t.tests).padStart(7)} ${
          (100 * t.rejected / t.tests).toFixed(1).padStart(7)
        }% below 0.05`,
      );
    }
    if (!options.json) {
      const docs = typeof shape.tokens === "number"
        ? `${shape.tokens} tokens`
        : `${shape.tokens.min}–${shape.tokens.max} tokens`;
      console.log(
        `\nbench coverage, shape ${shape.name}: E = ${shape.experts}, k = ${shape.topK}, ${shape.layers} layers, ${shape.domains} domains × ${shape.docsPerDomain} documents × ${docs}${
          shape.probs ? ", probs" : ""
        }; ${traces} null traces, --bootstrap 200 (${seconds.toFixed(0)} s)`,
      );
      console.log(
        `  ${"statistic".padEnd(30)} ${"cells".padStart(7)} ${"covers".padStart(8)} ${
          "outside".padStart(8)
        }  target ≥ ${100 * COVERAGE_TARGET}% covers, ≤ ${
          (100 * (1 - INSIDE_TARGET)).toFixed(1)
        }% outside`,
      );
      for (const line of lines) console.log(line);
    }
  }
  const seconds = (performance.now() - started) / 1000;
  if (options.json) {
    console.log(JSON.stringify({ benchmark: "bench coverage", seconds, load, rows: report }));
  } else {
    console.log(`\n${seconds.toFixed(0)} s in all; load average at the start ${load?.toFixed(2)}`);
  }
}
