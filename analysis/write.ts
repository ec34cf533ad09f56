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

const INTERVAL = ["ci_low", "ci_high"];
/** Columns of the per-layer statistics (repetition, CoSMoEs, load balance). */
const LAYER_COLUMNS = [
  "layer",
  "moe_layer",
  "domain",
  "statistic",
  "value",
  "plug_in",
  ...INTERVAL,
  "baseline",
  "baseline_marginal",
  "p_value",
  "q_value",
  "n_docs",
  "n_tokens",
  "n_pairs",
  "n_clusters",
];

/** The columns of every CSV, in order. */
export const COLUMNS: Record<string, readonly string[]> = {
  expert_shares: [
    "layer",
    "moe_layer",
    "domain",
    "expert",
    "choice",
    "share",
    ...INTERVAL,
    "baseline",
    "n_docs",
    "n_tokens",
    "n_clusters",
  ],
  repetition: LAYER_COLUMNS,
  overlap_distribution: [
    "layer",
    "moe_layer",
    "domain",
    "overlap",
    "proportion",
    ...INTERVAL,
    "baseline",
    "baseline_marginal",
    "n_docs",
    "n_tokens",
    "n_pairs",
    "n_clusters",
  ],
  cosmoes: LAYER_COLUMNS,
  load_balance: LAYER_COLUMNS,
  coactivation: [
    "layer",
    "moe_layer",
    "domain",
    "expert_i",
    "expert_j",
    "n_i",
    "n_ij",
    "coactivation",
    ...INTERVAL,
    "baseline",
    "baseline_marginal",
    "lift",
    "lift_ci_low",
    "lift_ci_high",
    "lift_marginal",
    "n_docs",
    "n_tokens",
    "n_clusters",
  ],
  vocabulary_specialisation: [
    "layer",
    "moe_layer",
    "domain",
    "n_token_ids",
    "min_count",
    "mean_specialisation",
    "median_specialisation",
    "p90_specialisation",
    ...INTERVAL,
    "baseline",
    "baseline_marginal",
    "n_docs",
    "n_tokens",
  ],
  layer_flow: [
    "layer",
    "moe_layer",
    "layer_next",
    "moe_layer_next",
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
    "moe_layer",
    "layer_next",
    "moe_layer_next",
    "domain",
    "mutual_information",
    "plug_in",
    ...INTERVAL,
    "baseline",
    "p_value",
    "q_value",
    "n_docs",
    "n_tokens",
    "n_clusters",
  ],
  domain_divergence: [
    "layer",
    "moe_layer",
    "domain",
    "comparison",
    "domain_a",
    "domain_b",
    "jsd",
    "plug_in",
    ...INTERVAL,
    "baseline",
    "p_value",
    "q_value",
    "n_permutations",
    "n_docs",
    "n_tokens",
    "n_clusters",
  ],
  summary: [
    "statistic",
    "layer",
    "moe_layer",
    "domain",
    "value",
    "plug_in",
    ...INTERVAL,
    "baseline",
    "baseline_marginal",
    "p_value",
    "q_value",
    "n_docs",
    "n_tokens",
    "n_clusters",
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
      intervals: result.settings.intervals ? "cluster jackknife, t quantiles" : "none",
      jackknife_documents: result.settings.clusters.documents,
      jackknife_buckets: result.settings.clusters.buckets,
      buckets_per_domain: result.buckets,
      permutations: result.settings.permutations,
      router_temperature: result.settings.routerTemperature,
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
