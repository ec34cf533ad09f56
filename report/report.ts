/**
 * `moetrace report --analysis DIR --simulation DIR --out FILE.html
 * [--layers L,...] [--capacity C]`: one self-contained HTML file (no
 * network, no scripts: its content security policy forbids both) that puts
 * the analysis and the cache simulation side by side, key findings first.
 *
 * It reads what the two commands promise to write (report/inputs.ts checks
 * each file):
 * - `figures.json` in each folder: `[{file, title, caption, section}]`, SVGs
 *   embedded as data URIs (each SVG keeps its own ids, unlike inline <svg>);
 * - `analysis.json` / `simulation.json`: model, corpus and sweep facts;
 * - `token_colouring.html`: an HTML fragment, shown in a sandboxed frame
 *   where no script runs;
 * - every `*.csv`, linked relative to the report, with the summary, CoSMoEs
 *   and simulation tables rendered from their CSVs, the key findings read
 *   from them (report/findings.ts) and the figures analyze and simulate do
 *   not draw (report/figures.ts).
 *
 * The report is written to `<out>.partial` and renamed: nothing else is
 * written in --out's folder.
 */
import { dirname, relative, resolve } from "node:path";
import { DataError, messageOf, UsageError } from "../common/errors.ts";
import { renderSvg } from "../common/plot.ts";
import {
  COLUMN_DEFINITIONS,
  definitionList,
  SIMULATION_DEFINITIONS,
  STATISTIC_DEFINITIONS,
} from "./definitions.ts";
import { compareSection, type Comparison, readComparison } from "./compare.ts";
import { findingsSection, simulationTable } from "./findings.ts";
import { type FigureChoices, type ReportFigure, reportFigures } from "./figures.ts";
import { CONTENT_SECURITY_POLICY, encodeBase64, escapeHtml, htmlTable, STYLE } from "./html.ts";
import {
  type FigureEntry,
  type Folder,
  isObject,
  objectField,
  readFolder,
  readInput,
  readTable,
  type Table,
} from "./inputs.ts";
import { measuredSection } from "./measured.ts";

/** Sections in reading order, with the heading and a sentence on what they answer. */
const SECTIONS: { key: string; title: string; intro: string }[] = [
  {
    key: "shares",
    title: "Expert shares per domain",
    intro:
      "Which experts each domain's tokens are sent to (Mixtral §5, Figures 7 and 9). Flat bars near the dashed line, the uniform baseline 1/E, mean experts are not specialised by domain.",
  },
  {
    key: "repetition",
    title: "Consecutive-token repetition",
    intro:
      "How often a token is routed like the token before it (Mixtral Table 5, Figure 10), against two baselines: uniform random routing (dashed, the papers' 1/E and 46.4%) and the same documents with their tokens shuffled (dotted, marginal-preserving: it keeps each document's expert counts, so only locality rises above it).",
  },
  {
    key: "cosmoes",
    title: "Expert replacements (CoSMoEs)",
    intro:
      "How many experts change from one token to the next (CoSMoEs Eq. 4–7): the cost an offloading system pays whenever the selected set changes. Dashed: the uniform baseline; dotted: the within-document shuffle baseline. ΔUniform is shown in percent here (fractions in the CSV).",
  },
  {
    key: "coactivation",
    title: "Co-activation",
    intro:
      "Which experts are chosen together for the same token (OLMoE analysis), as lift over the uniform baseline (k−1)/(E−1).",
  },
  {
    key: "flow",
    title: "Cross-layer flow",
    intro:
      "How a token's first choice in one layer predicts its first choice in the next, as bias-corrected mutual information against the uniform baseline of 0 bits.",
  },
  {
    key: "load",
    title: "Load balance and router confidence",
    intro:
      "How evenly the load is spread over the experts, and how sure the router is of its choices.",
  },
  {
    key: "divergence",
    title: "Domain differences",
    intro:
      "Jensen–Shannon divergence between domains' expert distributions (bias-corrected; baseline 0), for every pair and for each domain against the rest, with permutation tests.",
  },
  {
    key: "vocabulary",
    title: "Vocabulary specialisation",
    intro:
      "Whether a token id keeps going to the same expert wherever it appears, against uniform random routing and against the same documents with their token ids shuffled.",
  },
  {
    key: "cache",
    title: "Expert offloading: cache simulation",
    intro:
      "What the routing costs when experts live off the GPU: hit rate and milliseconds per token for each cache policy, capacity and prefetcher, with Belady's optimal policy as the bound.",
  },
];

/** The figures' layers and capacity, and the `moetrace compare` folder to show. */
export interface ReportOptions extends FigureChoices {
  compare?: string;
}

export async function reportCommand(flags: Record<string, unknown>): Promise<void> {
  const out = flags.out as string;
  const choices: ReportOptions = {};
  if (typeof flags.compare === "string") choices.compare = flags.compare;
  if (Array.isArray(flags.layers)) choices.layers = flags.layers.map(String);
  if (typeof flags.capacity === "string") choices.capacity = flags.capacity;
  await writeReport(flags.analysis as string, flags.simulation as string, out, choices);
  console.error(`report: written to ${out}`);
}

/**
 * Refuses an --out that is a folder, or whose folder is missing or a file,
 * before anything is read or written.
 */
export async function checkReportOut(out: string): Promise<void> {
  if (out === "" || out.endsWith("/")) {
    throw new UsageError(`--out of report must name an .html file, got the folder "${out}".`);
  }
  const folder = dirname(out);
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(folder);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new UsageError(
        `--out of report: the folder "${folder}" does not exist; create it first or choose another.`,
      );
    }
    if (error instanceof Deno.errors.NotADirectory) {
      throw new UsageError(`--out of report: a folder above "${folder}" is a file.`);
    }
    throw new DataError(`Cannot check the folder of --out ${out}: ${messageOf(error)}.`);
  }
  if (!info.isDirectory) {
    throw new UsageError(`--out of report: "${folder}" is a file, not a folder.`);
  }
  try {
    if (!(await Deno.stat(out)).isFile) {
      throw new UsageError(`--out of report must name an .html file, got the folder "${out}".`);
    }
  } catch (error) {
    if (error instanceof UsageError) throw error;
    if (!(error instanceof Deno.errors.NotFound)) {
      throw new DataError(`Cannot check --out ${out}: ${messageOf(error)}.`);
    }
  }
}

export async function writeReport(
  analysisDir: string,
  simulationDir: string,
  out: string,
  choices: ReportOptions = {},
): Promise<void> {
  await checkReportOut(out);
  const analysis = await readFolder(analysisDir, "analysis.json", "analyze");
  const simulation = await readFolder(simulationDir, "simulation.json", "simulate");
  const comparison = choices.compare === undefined ? null : await readComparison(choices.compare);
  const html = await renderReport(analysis, simulation, out, choices, comparison);
  // Written beside --out under one fixed name (the launcher grants it and nothing else there).
  const partial = `${out}.partial`;
  try {
    await Deno.writeTextFile(partial, html);
    await Deno.rename(partial, out);
  } catch (error) {
    await Deno.remove(partial).catch(() => {});
    throw new DataError(`Cannot write ${out}: ${messageOf(error)}.`);
  }
}

/** The CSVs the report reads, each checked for the columns it uses. */
async function readTables(analysis: Folder, simulation: Folder) {
  // Required: the columns that pick rows and the value itself. Intervals and baselines an older
  // analysis may lack are shown as "–".
  const stat = ["layer", "domain", "statistic", "value"];
  return {
    summary: await readTable(analysis.dir, "summary.csv", [
      "statistic",
      "layer",
      "domain",
      "value",
    ]),
    repetition: await readTable(analysis.dir, "repetition.csv", stat),
    cosmoes: await readTable(analysis.dir, "cosmoes.csv", ["domain", "statistic"]),
    load: await readTable(analysis.dir, "load_balance.csv", stat),
    divergence: await readTable(analysis.dir, "domain_divergence.csv", [
      "layer",
      "domain",
      "comparison",
      "jsd",
    ]),
    vocabulary: await readTable(analysis.dir, "vocabulary_specialisation.csv", [
      "layer",
      "domain",
      "mean_specialisation",
    ]),
    shares: await readTable(analysis.dir, "expert_shares.csv", [
      "layer",
      "domain",
      "expert",
      "choice",
      "share",
    ]),
    coactivation: await readTable(analysis.dir, "coactivation.csv", [
      "layer",
      "domain",
      "expert_i",
      "expert_j",
      "lift",
    ]),
    simulation: await readTable(simulation.dir, "simulation.csv", [
      "policy",
      "budget",
      "capacity",
      "prefetch",
      "dtype",
      "hardware",
      "layer",
      "hit_rate",
      "ms_per_token",
    ]),
    prefetch: await readTable(simulation.dir, "prefetch_accuracy.csv", [
      "prefetch",
      "layer",
      "lookahead",
      "precision",
      "recall",
    ]),
  };
}

/** E and k from analysis.json's model, else simulation.json's. */
function modelSize(analysis: Folder, simulation: Folder): { experts: number; topK: number } {
  const fromAnalysis = objectField(objectField(analysis.facts, "trace"), "model");
  const model = Object.keys(fromAnalysis).length > 0
    ? fromAnalysis
    : objectField(simulation.facts, "model");
  return { experts: Number(model.num_experts), topK: Number(model.top_k) };
}

type Placed = { folder: Folder; figure: FigureEntry } | { own: ReportFigure };

async function renderReport(
  analysis: Folder,
  simulation: Folder,
  out: string,
  choices: FigureChoices,
  comparison: Comparison | null,
): Promise<string> {
  const tables = await readTables(analysis, simulation);
  const own = reportFigures(tables, modelSize(analysis, simulation), choices);
  const bySection = new Map<string, Placed[]>();
  const place = (section: string, entry: Placed) => {
    const key = SECTIONS.some((s) => s.key === section) ? section : "other";
    bySection.set(key, [...(bySection.get(key) ?? []), entry]);
  };
  // A figure redrawn for --layers or --capacity takes the place of the one it replaces.
  const placed = new Set<ReportFigure>();
  for (const folder of [analysis, simulation]) {
    for (const figure of folder.figures) {
      const replacement = own.find((f) => f.replaces === figure.file);
      if (replacement) placed.add(replacement);
      place(figure.section, replacement ? { own: replacement } : { folder, figure });
    }
  }
  for (const figure of own) if (!placed.has(figure)) place(figure.section, { own: figure });
  const body: string[] = [];
  const toc: string[] = [];
  const findings = findingsSection(tables);
  if (findings) {
    body.push(findings);
    toc.push(`<a href="#findings">Key findings</a>`);
  }
  body.push(factsSection(analysis, simulation, tables.summary));
  toc.push(`<a href="#facts">Model and corpus</a>`);
  if (comparison) {
    body.push(compareSection(comparison));
    toc.push(`<a href="#compare">Comparison</a>`);
  }
  const measured = await measuredSection(simulation);
  if (measured) {
    body.push(measured);
    toc.push(`<a href="#measured">Predicted against measured</a>`);
  }
  const sections = [...SECTIONS, { key: "other", title: "Other figures", intro: "" }];
  for (const section of sections) {
    const entries = bySection.get(section.key) ?? [];
    const extra = section.key === "cosmoes"
      ? statisticTable(tables.cosmoes, 40)
      : section.key === "cache" && tables.simulation
      ? simulationResults(tables.simulation, choices.capacity)
      : "";
    const colouring = section.key === "repetition" ? await tokenColouring(analysis) : "";
    if (entries.length === 0 && !extra && !colouring) continue;
    toc.push(`<a href="#${section.key}">${escapeHtml(section.title)}</a>`);
    const parts = [`<section id="${section.key}"><h2>${escapeHtml(section.title)}</h2>`];
    if (section.intro) parts.push(`<p class="intro">${escapeHtml(section.intro)}</p>`);
    for (const entry of entries) {
      parts.push(
        "own" in entry
          ? figureHtml(entry.own.title, entry.own.caption, await renderSvg(entry.own.spec))
          : await folderFigure(entry.folder, entry.figure),
      );
    }
    parts.push(extra, colouring, "</section>");
    body.push(parts.join("\n"));
  }
  body.push(csvLinks([analysis, simulation, ...(comparison ? [comparison] : [])], out));
  toc.push(`<a href="#data">Data files</a>`);
  const model = objectField(objectField(analysis.facts, "trace"), "model");
  const name = escapeHtml(typeof model.name === "string" ? model.name : "trace");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${CONTENT_SECURITY_POLICY}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>moetrace report: ${name}</title>
<style>${STYLE}</style>
</head>
<body>
<header><h1>moetrace report: ${name}</h1>
<nav>${toc.join(" · ")}</nav></header>
<main>
${body.join("\n")}
</main>
<footer>Made by moetrace on ${
    new Date().toISOString().slice(0, 10)
  }. Every figure is computed from the CSV files linked above.</footer>
</body>
</html>
`;
}

/** A fact for the facts table: a string or number as text, anything else "?". */
function text(value: unknown): string {
  return typeof value === "string" || typeof value === "number" ? String(value) : "?";
}

function factsSection(analysis: Folder, simulation: Folder, summary: Table | null): string {
  const trace = objectField(analysis.facts, "trace");
  const model = objectField(trace, "model");
  const capture = objectField(trace, "capture");
  const totals = objectField(analysis.facts, "totals");
  const domains = Array.isArray(totals.domains)
    ? totals.domains.filter(isObject)
      .map((d) => `${text(d.name)} (${text(d.n_docs)} docs, ${text(d.n_tokens)} tokens)`).join(
        "; ",
      )
    : "?";
  const rows: [string, string][] = [
    ["Model", `${text(model.name)} (${text(model.family)}, ${text(model.dtype)})`],
    [
      "Layers",
      `${text(model.num_layers)}, of which ${
        Array.isArray(model.moe_layers) ? model.moe_layers.length : "?"
      } MoE`,
    ],
    [
      "Experts",
      `${text(model.num_experts)} routed, top-${text(model.top_k)}, ${
        text(model.num_shared_experts ?? 0)
      } shared; ${text(model.expert_params)} parameters per expert`,
    ],
    ["Corpus", `${text(capture.corpus)} (${text(capture.mode)})`],
    ["Documents", text(totals.n_docs)],
    ["Tokens", text(totals.n_tokens)],
    ["Domains", domains],
  ];
  const sweep = simulation.facts.sweep;
  if (sweep !== undefined) rows.push(["Cache sweep", summariseSweep(sweep)]);
  const table = statisticTable(summary, 60);
  return `<section id="facts"><h2>Model and corpus</h2>
<table class="facts">${
    rows.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`).join("")
  }</table>
${table ? `<h3>Summary: each statistic averaged over the MoE layers</h3>${table}` : ""}</section>`;
}

function summariseSweep(sweep: unknown): string {
  if (!isObject(sweep)) return text(sweep);
  const value = (v: unknown): string =>
    Array.isArray(v)
      ? v.map(value).join(", ")
      : isObject(v)
      ? Object.entries(v).map(([k, w]) => `${k} ${value(w)}`).join(", ")
      : typeof v === "boolean"
      ? String(v)
      : v === null
      ? "none"
      : text(v);
  return Object.entries(sweep).map(([k, v]) => `${k}: ${value(v)}`).join("; ");
}

function figureHtml(title: string, caption: string, svg: string | Uint8Array): string {
  const bytes = typeof svg === "string" ? new TextEncoder().encode(svg) : svg;
  return `<figure>
<img alt="${escapeHtml(title)}" src="data:image/svg+xml;base64,${encodeBase64(bytes)}">
<figcaption><strong>${escapeHtml(title)}.</strong> <span class="how">How to read this:</span> ${
    escapeHtml(caption)
  }</figcaption>
</figure>`;
}

async function folderFigure(folder: Folder, figure: FigureEntry): Promise<string> {
  const svg = await readInput(folder.dir, figure.file);
  if (svg === null) {
    throw new DataError(
      `Figure ${folder.dir}/${figure.file} listed in ${folder.dir}/figures.json does not exist.`,
    );
  }
  return figureHtml(figure.title, figure.caption, svg);
}

/**
 * The token colouring, a fragment from the analysis folder: shown in a frame
 * whose sandbox allows nothing (no script runs, no form submits, no
 * navigation of the report), under the report's content security policy.
 */
async function tokenColouring(analysis: Folder): Promise<string> {
  const fragment = await readInput(analysis.dir, "token_colouring.html");
  if (fragment === null) return "";
  const page =
    `<!doctype html><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="${CONTENT_SECURITY_POLICY}"><body style="font-family: Helvetica, Arial, sans-serif; font-size: 12px; line-height: 1.7">${fragment}</body>`;
  return `<h3>Token colouring</h3>
<p class="intro">Each token of sample documents coloured by its first-choice expert (Mixtral Figure 8). Runs of one colour are the repetition measured above.</p>
<iframe class="colouring" title="Token colouring" sandbox="" srcdoc="${
    escapeHtml(page)
  }"></iframe>`;
}

/** Statistics whose values the report shows in percent (ΔUniform: CoSMoEs quotes 9.60%). */
const PERCENT_STATISTICS = new Set(["delta_uniform"]);
const PERCENT_COLUMNS = new Set(["value", "plug_in", "ci_low", "ci_high", "baseline"]);

/**
 * A table of statistics (summary.csv, cosmoes.csv; rows of domain "all" only
 * when there are such rows), followed by the definition of every statistic
 * and column it shows.
 */
function statisticTable(table: Table | null, maxRows: number): string {
  if (!table || table.rows.length === 0) return "";
  const columns = table.columns;
  const shown = columns.includes("domain") && table.rows.some((r) => r.domain === "all")
    ? table.rows.filter((r) => r.domain === "all")
    : table.rows;
  const cell = (v: string, percent: boolean) => {
    const n = Number(v);
    if (v === "" || !Number.isFinite(n)) return v;
    if (percent) return `${(100 * n).toPrecision(3)}%`;
    return !Number.isInteger(n) ? n.toPrecision(4) : v;
  };
  // Statistics the papers quote in percent: shown so here; the CSVs keep fractions.
  const percentOf = (r: Record<string, string>, c: string) =>
    PERCENT_STATISTICS.has(r.statistic ?? "") && PERCENT_COLUMNS.has(c);
  const rows = shown.slice(0, maxRows);
  const name = table.path.slice(table.path.lastIndexOf("/") + 1);
  return `${
    htmlTable(columns, rows.map((r) => columns.map((c) => cell(r[c] ?? "", percentOf(r, c)))))
  }${
    shown.length > maxRows
      ? `<p class="note">First ${maxRows} of ${shown.length} rows; all in ${escapeHtml(name)}.</p>`
      : ""
  }<h3>What the statistics mean</h3>${
    definitionList(rows.map((r) => r.statistic ?? ""), STATISTIC_DEFINITIONS)
  }${definitionList(columns.filter((c) => c in COLUMN_DEFINITIONS), COLUMN_DEFINITIONS)}`;
}

function simulationResults(simulation: Table, capacity: string | undefined): string {
  const table = simulationTable(simulation, capacity);
  if (!table) return "";
  return `<h3>Simulation results${
    capacity === undefined ? "" : ` at capacity ${escapeHtml(capacity)}`
  }</h3>
<p class="intro">Every policy, prefetcher and capacity over the whole model (simulation.csv's rows of layer "all"), cheapest first at each capacity.</p>
<div class="scroll">${table}</div>${
    definitionList(Object.keys(SIMULATION_DEFINITIONS), SIMULATION_DEFINITIONS)
  }`;
}

/**
 * Links to every CSV, relative to the report: each path segment
 * percent-encoded, so a file named "javascript:…csv" is a relative link to
 * that file and never a scheme.
 */
function csvLinks(folders: { dir: string; csvs: string[] }[], out: string): string {
  const outDir = dirname(resolve(out));
  const items = folders.flatMap((folder) =>
    folder.csvs.map((name) => {
      const path = relative(outDir, resolve(folder.dir, name)).split("/");
      const href = `./${path.map(encodeURIComponent).join("/")}`;
      return `<li><a href="${escapeHtml(href)}">${escapeHtml(path.join("/"))}</a></li>`;
    })
  );
  return `<section id="data"><h2>Data files</h2>
<p class="intro">Tidy CSV, one observation per row; each folder's README.md documents every column and formula. They load in pandas and polars with no options.</p>
<ul class="csvs">${items.join("\n")}</ul></section>`;
}
