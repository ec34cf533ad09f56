/**
 * Writes an analysis to its output directory: tidy CSVs, README.md,
 * figures (SVG + figures.json), token_colouring.html and analysis.json, each
 * file atomically (a killed run never leaves a half-written file under its
 * final name).
 */
import { writeCsv } from "../common/csv.ts";
import { writeFileAtomic } from "../common/atomic_write.ts";
import { renderSvg } from "../common/plot.ts";
import { tokenColouringHtml } from "./colouring.ts";
import { buildFigures } from "./plots.ts";
import { readme } from "./readme.ts";
import type { AnalysisResult } from "./run.ts";

const ESTIMATE = ["ci_low", "ci_high", "baseline"];

/** The columns of every CSV, in order. */
export const COLUMNS: Record<string, readonly string[]> = {
  expert_shares: [
    "layer",
    "domain",
    "expert",
    "choice",
    "share",
    ...ESTIMATE,
    "n_docs",
    "n_tokens",
    "n_boot",
  ],
  repetition: [
    "layer",
    "domain",
    "statistic",
    "value",
    ...ESTIMATE,
    "n_docs",
    "n_tokens",
    "n_pairs",
    "n_boot",
  ],
  overlap_distribution: [
    "layer",
    "domain",
    "overlap",
    "proportion",
    ...ESTIMATE,
    "n_docs",
    "n_tokens",
    "n_pairs",
    "n_boot",
  ],
  cosmoes: [
    "layer",
    "domain",
    "statistic",
    "value",
    ...ESTIMATE,
    "n_docs",
    "n_tokens",
    "n_pairs",
    "n_boot",
  ],
  load_balance: [
    "layer",
    "domain",
    "statistic",
    "value",
    ...ESTIMATE,
    "n_docs",
    "n_tokens",
    "n_pairs",
    "n_boot",
  ],
  coactivation: [
    "layer",
    "domain",
    "expert_i",
    "expert_j",
    "n_i",
    "n_ij",
    "coactivation",
    ...ESTIMATE,
    "lift",
    "lift_ci_low",
    "lift_ci_high",
    "n_docs",
    "n_tokens",
    "n_boot",
  ],
  vocabulary_specialisation: [
    "layer",
    "domain",
    "n_token_ids",
    "min_count",
    "mean_specialisation",
    "median_specialisation",
    "p90_specialisation",
    ...ESTIMATE,
    "n_docs",
    "n_tokens",
  ],
  layer_flow: [
    "layer",
    "layer_next",
    "domain",
    "expert_from",
    "expert_to",
    "count",
    "probability",
    "baseline",
    "n_docs",
    "n_tokens",
  ],
  flow_information: [
    "layer",
    "layer_next",
    "domain",
    "mutual_information",
    ...ESTIMATE,
    "n_docs",
    "n_tokens",
    "n_boot",
  ],
  domain_divergence: [
    "layer",
    "domain",
    "domain_a",
    "domain_b",
    "jsd",
    ...ESTIMATE,
    "p_value",
    "q_value",
    "n_permutations",
    "n_docs",
    "n_tokens",
    "n_boot",
  ],
  summary: [
    "statistic",
    "layer",
    "domain",
    "value",
    ...ESTIMATE,
    "n_docs",
    "n_tokens",
    "n_boot",
    "note",
  ],
};

export interface WriteOptions {
  /** Render the SVG figures (default true; tests of the numbers skip them). */
  figures?: boolean;
  bootstrap: number;
  seed: number;
}

/** Writes every output file of `result` into `dir` (created if needed). */
export async function writeAnalysis(
  result: AnalysisResult,
  dir: string,
  options: WriteOptions,
): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  for (const [name, columns] of Object.entries(COLUMNS)) {
    await writeCsv(`${dir}/${name}.csv`, result.tables[name] ?? [], columns);
  }
  const figures = options.figures === false ? [] : buildFigures(result);
  for (const figure of figures) {
    await writeFileAtomic(`${dir}/${figure.file}`, await renderSvg(figure.spec));
  }
  await writeFileAtomic(
    `${dir}/figures.json`,
    JSON.stringify(
      figures.map(({ file, title, caption, section }) => ({ file, title, caption, section })),
      null,
      2,
    ) + "\n",
  );
  await writeFileAtomic(`${dir}/token_colouring.html`, tokenColouringHtml(result));
  await writeFileAtomic(`${dir}/README.md`, readme(result));
  const { manifest } = result;
  const info = {
    format: "moetrace-analysis/1",
    trace: { model: manifest.model, capture: manifest.capture },
    totals: {
      n_docs: result.totals.n_docs,
      n_tokens: result.totals.n_tokens,
      domains: result.domains,
    },
    settings: {
      bootstrap: options.bootstrap,
      seed: options.seed,
      resamples_documents: result.resamples.documents,
      resamples_buckets: result.resamples.buckets,
      buckets_per_domain: result.buckets,
      permutations: result.resamples.permutations,
    },
    notes: result.notes,
    files: [
      ...Object.keys(COLUMNS).map((n) => `${n}.csv`),
      ...figures.map((f) => f.file),
      "figures.json",
      "token_colouring.html",
      "README.md",
    ],
  };
  await writeFileAtomic(`${dir}/analysis.json`, JSON.stringify(info, null, 2) + "\n");
}
