/**
 * `moetrace report --analysis DIR --simulation DIR --out FILE.html`: one
 * self-contained HTML file (no network, no scripts, no external fonts) that
 * puts the analysis and the cache simulation side by side.
 *
 * It reads what the two commands promise to write:
 * - `figures.json` in each folder: `[{file, title, caption, section}]`, SVGs
 *   embedded as data URIs (each SVG keeps its own ids, unlike inline <svg>);
 * - `analysis.json` / `simulation.json`: model, corpus and sweep facts;
 * - `token_colouring.html`: an HTML fragment, embedded as is;
 * - every `*.csv`, linked relative to the report, with CoSMoEs and summary
 *   tables rendered from their CSVs.
 */
import { parse } from "csv-parse/sync";
import { DataError, messageOf } from "../common/errors.ts";
import { writeFileAtomic } from "../common/atomic_write.ts";

interface FigureEntry {
  file: string;
  title: string;
  caption: string;
  section: string;
}

interface Folder {
  dir: string;
  figures: FigureEntry[];
  facts: Record<string, unknown>;
  csvs: string[];
}

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
    intro: "How evenly the load is spread, and how sure the router is.",
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

export async function reportCommand(flags: Record<string, unknown>): Promise<void> {
  const out = flags.out as string;
  await writeReport(flags.analysis as string, flags.simulation as string, out);
  console.error(`report: written to ${out}`);
}

export async function writeReport(
  analysisDir: string,
  simulationDir: string,
  out: string,
): Promise<void> {
  const analysis = await readFolder(analysisDir, "analysis.json", "analyze");
  const simulation = await readFolder(simulationDir, "simulation.json", "simulate");
  const html = await renderReport(analysis, simulation, out);
  await writeFileAtomic(out, html);
}

async function readFolder(dir: string, factsFile: string, command: string): Promise<Folder> {
  const readJson = async (name: string) => {
    const path = `${dir}/${name}`;
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) {
        throw new DataError(
          `${path} does not exist; is ${dir} the output of \`moetrace ${command}\`?`,
        );
      }
      throw new DataError(`Cannot read ${path}: ${messageOf(error)}.`);
    }
    try {
      return JSON.parse(text);
    } catch (error) {
      throw new DataError(`${path} is not valid JSON: ${messageOf(error)}.`);
    }
  };
  const figures = await readJson("figures.json");
  if (
    !Array.isArray(figures) ||
    !figures.every((f) => typeof f?.file === "string" && typeof f?.title === "string")
  ) {
    throw new DataError(`${dir}/figures.json must be a list of {file, title, caption, section}.`);
  }
  const csvs: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isFile && entry.name.endsWith(".csv")) csvs.push(entry.name);
  }
  csvs.sort();
  return { dir, figures, facts: await readJson(factsFile), csvs };
}

async function renderReport(analysis: Folder, simulation: Folder, out: string): Promise<string> {
  const outDir = out.includes("/") ? out.slice(0, out.lastIndexOf("/")) : ".";
  const figuresBySection = new Map<string, { folder: Folder; figure: FigureEntry }[]>();
  for (const folder of [analysis, simulation]) {
    for (const figure of folder.figures) {
      const key = SECTIONS.some((s) => s.key === figure.section) ? figure.section : "other";
      const list = figuresBySection.get(key) ?? [];
      list.push({ folder, figure });
      figuresBySection.set(key, list);
    }
  }
  const body: string[] = [];
  const toc: string[] = [];
  body.push(await factsSection(analysis, simulation));
  toc.push(`<a href="#facts">Model and corpus</a>`);
  const measured = await measuredSection(simulation);
  if (measured) {
    body.push(measured);
    toc.push(`<a href="#measured">Predicted against measured</a>`);
  }
  const sections = [...SECTIONS, { key: "other", title: "Other figures", intro: "" }];
  for (const section of sections) {
    const entries = figuresBySection.get(section.key) ?? [];
    const extra = section.key === "cosmoes" ? await csvTable(analysis, "cosmoes.csv", 40) : "";
    const colouring = section.key === "repetition" ? await tokenColouring(analysis) : "";
    if (entries.length === 0 && !extra && !colouring) continue;
    toc.push(`<a href="#${section.key}">${escapeHtml(section.title)}</a>`);
    const parts = [`<section id="${section.key}"><h2>${escapeHtml(section.title)}</h2>`];
    if (section.intro) parts.push(`<p class="intro">${escapeHtml(section.intro)}</p>`);
    for (const { folder, figure } of entries) parts.push(await figureHtml(folder, figure));
    parts.push(extra, colouring, "</section>");
    body.push(parts.join("\n"));
  }
  body.push(csvLinks([analysis, simulation], outDir));
  toc.push(`<a href="#data">Data files</a>`);
  const model = ((analysis.facts.trace as Record<string, unknown> | undefined)?.model ??
    {}) as Record<string, unknown>;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>moetrace report: ${escapeHtml(String(model.name ?? "trace"))}</title>
<style>${STYLE}</style>
</head>
<body>
<header><h1>moetrace report: ${escapeHtml(String(model.name ?? "trace"))}</h1>
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

async function factsSection(analysis: Folder, simulation: Folder): Promise<string> {
  const trace = (analysis.facts.trace ?? {}) as Record<string, unknown>;
  const model = (trace.model ?? {}) as Record<string, unknown>;
  const capture = (trace.capture ?? {}) as Record<string, unknown>;
  const totals = (analysis.facts.totals ?? {}) as Record<string, unknown>;
  const domains = Array.isArray(totals.domains)
    ? (totals.domains as { name: string; n_docs: number; n_tokens: number }[])
      .map((d) => `${d.name} (${d.n_docs} docs, ${d.n_tokens} tokens)`).join("; ")
    : "?";
  const rows: [string, unknown][] = [
    ["Model", `${model.name ?? "?"} (${model.family ?? "?"}, ${model.dtype ?? "?"})`],
    [
      "Layers",
      `${model.num_layers ?? "?"}, of which ${
        Array.isArray(model.moe_layers) ? model.moe_layers.length : "?"
      } MoE`,
    ],
    [
      "Experts",
      `${model.num_experts ?? "?"} routed, top-${model.top_k ?? "?"}, ${
        model.num_shared_experts ?? 0
      } shared; ${model.expert_params ?? "?"} parameters per expert`,
    ],
    ["Corpus", `${capture.corpus ?? "?"} (${capture.mode ?? "?"})`],
    ["Documents", totals.n_docs ?? "?"],
    ["Tokens", totals.n_tokens ?? "?"],
    ["Domains", domains],
  ];
  const sweep = simulation.facts.sweep;
  if (sweep) rows.push(["Cache sweep", summariseSweep(sweep)]);
  const summary = await csvTable(analysis, "summary.csv", 60);
  return `<section id="facts"><h2>Model and corpus</h2>
<table class="facts">${
    rows.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(String(v))}</td></tr>`)
      .join("")
  }</table>
${summary ? `<h3>Summary</h3>${summary}` : ""}</section>`;
}

function summariseSweep(sweep: unknown): string {
  if (typeof sweep !== "object" || sweep === null) return String(sweep);
  return Object.entries(sweep as Record<string, unknown>)
    .map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(", ") : String(v)}`)
    .join("; ");
}

async function figureHtml(folder: Folder, figure: FigureEntry): Promise<string> {
  const path = `${folder.dir}/${figure.file}`;
  let svg: Uint8Array;
  try {
    svg = await Deno.readFile(path);
  } catch (error) {
    throw new DataError(
      `Figure ${path} listed in ${folder.dir}/figures.json cannot be read: ${messageOf(error)}.`,
    );
  }
  return `<figure>
<img alt="${escapeHtml(figure.title)}" src="data:image/svg+xml;base64,${encodeBase64(svg)}">
<figcaption><strong>${
    escapeHtml(figure.title)
  }.</strong> <span class="how">How to read this:</span> ${
    escapeHtml(figure.caption ?? "")
  }</figcaption>
</figure>`;
}

async function tokenColouring(analysis: Folder): Promise<string> {
  try {
    const fragment = await Deno.readTextFile(`${analysis.dir}/token_colouring.html`);
    return `<h3>Token colouring</h3>
<p class="intro">Each token of sample documents coloured by its first-choice expert (Mixtral Figure 8). Runs of one colour are the repetition measured above.</p>
<div class="colouring">${fragment}</div>`;
  } catch {
    return "";
  }
}

/** A CSV of `folder` as an HTML table (rows with domain "all" only, when there is such a column). */
/**
 * When the simulated trace came from `generate --offload` (a measured.csv
 * beside its manifest), the simulation's prediction for that run's policy,
 * capacity and prefetch against the measured decode steps.
 */
async function measuredSection(simulation: Folder): Promise<string> {
  const trace = simulation.facts.trace;
  if (typeof trace !== "string") return "";
  let measuredText: string, simText: string;
  try {
    measuredText = await Deno.readTextFile(`${trace}/measured.csv`);
    simText = await Deno.readTextFile(`${simulation.dir}/simulation.csv`);
  } catch {
    return "";
  }
  const measured = parse(measuredText, { columns: true }) as Record<string, string>[];
  const generated = measured.filter((r) => r.phase === "1").map((r) => Number(r.ms));
  if (generated.length === 0) return "";
  const { policy, capacity, prefetch } = measured[0]!;
  const budget = measured[0]!.budget ?? "per-layer"; // measured.csv before the global pool had no budget column
  const uploads = measured.reduce((a, r) => a + Number(r.uploads), 0);
  const sorted = [...generated].sort((a, b) => a - b);
  const n = sorted.length;
  const median = n % 2 === 1 ? sorted[(n - 1) / 2]! : (sorted[n / 2 - 1]! + sorted[n / 2]!) / 2;
  const mean = generated.reduce((a, b) => a + b, 0) / n;
  const sims = (parse(simText, { columns: true }) as Record<string, string>[]).filter((r) =>
    r.layer === "all" && r.policy === policy && r.capacity === capacity &&
    r.prefetch === prefetch && r.budget === budget
  );
  if (sims.length === 0) return "";
  const f = (v: number) => v.toPrecision(4);
  const rows = sims.map((r) => {
    const predicted = Number(r.ms_per_token);
    const loads = Number(r.misses) + Number(r.prefetch_issued);
    return `<tr><td>${escapeHtml(r.hardware!)}</td><td>${escapeHtml(r.dtype!)}</td><td>${
      f(predicted)
    }</td><td>${f(median)}</td><td>${f(mean)}</td><td>${
      f(100 * (predicted - median) / median)
    }%</td><td>${loads}</td><td>${uploads}</td></tr>`;
  });
  return `<section id="measured"><h2>Predicted against measured</h2>
<p class="intro">${
    escapeHtml(
      `The trace comes from generate --offload ${policy}:${capacity} --prefetch ${prefetch} --budget ${budget}; its measured.csv holds ${n} timed decode steps. Predicted: the simulation's mean ms/token over every trace row; measured: median and mean wall ms of the decode steps. Loads: simulated misses + prefetches against the engine's uploads (prompt and generated rows).`,
    )
  }</p>
<div class="table-wrap"><table class="data"><thead><tr><th>hardware</th><th>dtype</th><th>predicted ms/token</th><th>measured median</th><th>measured mean</th><th>error (of median)</th><th>simulated loads</th><th>uploads</th></tr></thead><tbody>
${rows.join("\n")}
</tbody></table></div></section>`;
}

/** Statistics whose values the report shows in percent (ΔUniform: CoSMoEs quotes 9.60%). */
const PERCENT_STATISTICS = new Set(["delta_uniform"]);
const PERCENT_COLUMNS = new Set(["value", "plug_in", "ci_low", "ci_high", "baseline"]);

async function csvTable(folder: Folder, name: string, maxRows: number): Promise<string> {
  let text: string;
  try {
    text = await Deno.readTextFile(`${folder.dir}/${name}`);
  } catch {
    return "";
  }
  const rows = parse(text, { columns: true }) as Record<string, string>[];
  if (rows.length === 0) return "";
  const columns = Object.keys(rows[0]!);
  const shown = columns.includes("domain") && rows.some((r) => r.domain === "all")
    ? rows.filter((r) => r.domain === "all")
    : rows;
  const cell = (v: string, percent: boolean) => {
    const n = Number(v);
    if (v === "" || !Number.isFinite(n)) return v;
    if (percent) return `${(100 * n).toPrecision(3)}%`;
    return !Number.isInteger(n) ? n.toPrecision(4) : v;
  };
  // Statistics the papers quote in percent: shown so here; the CSVs keep fractions.
  const percentOf = (r: Record<string, string>, c: string) =>
    PERCENT_STATISTICS.has(r.statistic ?? "") && PERCENT_COLUMNS.has(c);
  return `<div class="table-wrap"><table class="data"><thead><tr>${
    columns.map((c) => `<th>${escapeHtml(c)}</th>`).join("")
  }</tr></thead><tbody>${
    shown.slice(0, maxRows).map((r) =>
      `<tr>${
        columns.map((c) => `<td>${escapeHtml(cell(r[c] ?? "", percentOf(r, c)))}</td>`).join("")
      }</tr>`
    ).join("")
  }</tbody></table>${
    shown.length > maxRows
      ? `<p class="note">First ${maxRows} of ${shown.length} rows; all in ${escapeHtml(name)}.</p>`
      : ""
  }</div>`;
}

function csvLinks(folders: Folder[], outDir: string): string {
  const items = folders.flatMap((folder) =>
    folder.csvs.map((name) => {
      const href = relativePath(outDir, `${folder.dir}/${name}`);
      return `<li><a href="${escapeHtml(href)}">${escapeHtml(href)}</a></li>`;
    })
  );
  return `<section id="data"><h2>Data files</h2>
<p class="intro">Tidy CSV, one observation per row; each folder's README.md documents every column and formula. They load in pandas and polars with no options.</p>
<ul class="csvs">${items.join("\n")}</ul></section>`;
}

/** `to` relative to directory `from` (both relative to the working directory, or both absolute). */
export function relativePath(from: string, to: string): string {
  const split = (p: string) => p.split("/").filter((s) => s !== "" && s !== ".");
  const a = split(from);
  const b = split(to);
  let common = 0;
  while (common < a.length && common < b.length - 1 && a[common] === b[common]) common++;
  return [...Array(a.length - common).fill(".."), ...b.slice(common)].join("/");
}

/** Base64 of bytes (btoa takes a binary string; built in chunks to bound the argument count). */
function encodeBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const STYLE = `
body { font-family: Helvetica, Arial, sans-serif; margin: 0; color: #222; background: #fafafa; }
header { background: #1f2d3d; color: #fff; padding: 16px 32px; }
header h1 { margin: 0 0 8px; font-size: 22px; }
nav a { color: #cfe3ff; text-decoration: none; font-size: 13px; }
main { max-width: 1200px; margin: 0 auto; padding: 8px 32px 32px; }
section { background: #fff; border: 1px solid #e3e3e3; border-radius: 6px; padding: 12px 20px; margin: 18px 0; }
h2 { font-size: 19px; margin: 6px 0 8px; }
h3 { font-size: 15px; }
p.intro { color: #444; margin-top: 0; }
figure { margin: 16px 0; display: inline-block; vertical-align: top; max-width: 100%; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 13px; color: #333; max-width: 720px; margin-top: 4px; }
span.how { color: #666; font-style: italic; }
table { border-collapse: collapse; font-size: 12px; }
table.facts th { text-align: left; padding: 3px 14px 3px 0; color: #555; }
table.data th, table.data td { border: 1px solid #ddd; padding: 3px 6px; text-align: right; }
table.data th { background: #f0f3f7; }
.table-wrap { overflow-x: auto; }
.colouring { font-size: 12px; line-height: 1.7; max-height: 640px; overflow-y: auto; border: 1px solid #eee; padding: 4px 8px; }
ul.csvs { columns: 2; font-size: 13px; }
footer { text-align: center; font-size: 12px; color: #777; padding: 16px; }
p.note { font-size: 12px; color: #666; }
`;
