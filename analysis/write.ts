/**
 * Writes an analysis to its output directory: tidy CSVs, README.md,
 * figures (SVG + figures.json), token_colouring.html and analysis.json.
 * Everything is written into a staging folder `<out>.partial/new` and moved
 * into place by renames only when complete, as `import` does: a killed run
 * over an existing folder leaves the previous analysis whole, never a mix of
 * old and new files.
 */
import { resolve } from "node:path";
import { pathExists } from "../common/fs.ts";
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

/**
 * Writes every output file of `result` into `out` (created if needed),
 * staged in `<out>.partial` and renamed into place. Files in an existing
 * `out` that an analysis does not write (anything but its CSVs, figures,
 * README, token colouring, analysis.json and counts/) are kept.
 */
export async function writeAnalysis(
  result: AnalysisResult,
  out: string,
  options: WriteOptions,
): Promise<void> {
  const target = resolve(out);
  const staging = `${target}.partial`;
  await recoverStaging(staging, target);
  const dir = `${staging}/new`;
  await Deno.mkdir(dir, { recursive: true });
  await writeFiles(result, dir, options);
  await publish(staging, target);
}

/** Names an analysis folder's own outputs: the files its analysis.json lists, and the fixed names. */
async function analysisOutputs(dir: string): Promise<Set<string>> {
  const names = new Set([
    ...Object.keys(COLUMNS).map((n) => `${n}.csv`),
    "figures.json",
    "token_colouring.html",
    "README.md",
    "analysis.json",
    "counts",
  ]);
  try {
    const files = JSON.parse(await Deno.readTextFile(`${dir}/analysis.json`)).files;
    if (Array.isArray(files)) { for (const f of files) if (typeof f === "string") names.add(f); }
  } catch {
    // No readable analysis.json: only the fixed names are the analysis's own.
  }
  return names;
}

/**
 * Swaps the complete `<staging>/new` in for `target`: the previous folder
 * goes to `<staging>/old`, the new one takes its name, the previous folder's
 * files that are not analysis outputs move across, and the staging folder
 * is removed. Each step is a rename, so a kill between two of them leaves a
 * state that `recoverStaging` completes or undoes.
 */
async function publish(staging: string, target: string): Promise<void> {
  const old = `${staging}/old`;
  if (await pathExists(target)) await Deno.rename(target, old);
  await Deno.rename(`${staging}/new`, target);
  await carryOver(old, target);
  await Deno.remove(staging, { recursive: true });
}

/** Moves what the user kept in the previous folder `old` (not analysis outputs) into `target`. */
async function carryOver(old: string, target: string): Promise<void> {
  if (!(await pathExists(old))) return;
  const own = await analysisOutputs(old);
  for await (const entry of Deno.readDir(old)) {
    if (own.has(entry.name)) continue;
    if (!(await pathExists(`${target}/${entry.name}`))) {
      await Deno.rename(`${old}/${entry.name}`, `${target}/${entry.name}`);
    }
  }
}

/**
 * Finishes or undoes a run killed while publishing: killed between the two
 * renames, the previous folder is put back; killed after them, the user's
 * files still in `old` are carried over. A staging folder with only `new`
 * (killed while writing) is discarded.
 */
async function recoverStaging(staging: string, target: string): Promise<void> {
  if (!(await pathExists(staging))) return;
  const old = `${staging}/old`;
  if (await pathExists(old)) {
    if (await pathExists(target)) await carryOver(old, target);
    else await Deno.rename(old, target);
  }
  await Deno.remove(staging, { recursive: true });
}

async function writeFiles(
  result: AnalysisResult,
  dir: string,
  options: WriteOptions,
): Promise<void> {
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
