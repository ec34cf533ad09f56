/**
 * `report --compare DIR`: the output of `moetrace compare` (format
 * moetrace-compare/1, analysis/README.md) as a section: the two runs, the
 * summary statistics side by side with B − A and its 95% MOVER interval, the
 * differences whose interval excludes 0, and compare's notes. Every number is
 * read from DIR/summary.csv as compare wrote it.
 */
import { DataError, messageOf } from "../common/errors.ts";
import { STATISTIC_DEFINITIONS } from "./definitions.ts";
import { escapeHtml, htmlTable, interval, significant } from "./html.ts";
import {
  isObject,
  numberIn,
  parseJson,
  readInput,
  readTable,
  type Row,
  type Table,
} from "./inputs.ts";

const SUMMARY_COLUMNS = [
  "statistic",
  "domain",
  "quantity",
  "value_a",
  "value_b",
  "difference",
  "difference_ci_low",
  "difference_ci_high",
  "interval_excludes_zero",
];

export interface Comparison {
  dir: string;
  labels: [string, string];
  facts: Record<string, unknown>;
  summary: Table;
  /** The folder's regular `*.csv` files, sorted (linked with the others). */
  csvs: string[];
}

/** Reads and checks a compare output folder. */
export async function readComparison(dir: string): Promise<Comparison> {
  const path = `${dir}/compare.json`;
  let text: string | null;
  try {
    text = await readInput(dir, "compare.json");
  } catch (error) {
    if (error instanceof DataError) throw error;
    throw new DataError(`Cannot read ${path}: ${messageOf(error)}.`);
  }
  if (text === null) {
    throw new DataError(`${path} does not exist; give the folder \`moetrace compare\` wrote.`);
  }
  const facts = parseJson(path, text);
  if (!isObject(facts) || facts.format !== "moetrace-compare/1") {
    throw new DataError(
      `${path} must be a JSON object with "format": "moetrace-compare/1", as \`moetrace compare\` writes.`,
    );
  }
  const summary = await readTable(dir, "summary.csv", SUMMARY_COLUMNS);
  if (!summary) {
    throw new DataError(
      `${dir}/summary.csv does not exist; give the folder \`moetrace compare\` wrote.`,
    );
  }
  const label = (side: unknown, fallback: string) =>
    isObject(side) && typeof side.label === "string" && side.label !== "" ? side.label : fallback;
  const csvs: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isFile && entry.name.endsWith(".csv")) csvs.push(entry.name);
  }
  csvs.sort();
  return { dir, labels: [label(facts.a, "A"), label(facts.b, "B")], facts, summary, csvs };
}

function side(value: unknown, label: string): string[] {
  const s = isObject(value) ? value : {};
  const text = (v: unknown) => typeof v === "string" || typeof v === "number" ? String(v) : "?";
  return [label, text(s.model), text(s.input), text(s.kind), text(s.n_docs), text(s.n_tokens)];
}

/** The comparison section: the two runs, the corpus-wide summary side by side, notes. */
export function compareSection(comparison: Comparison): string {
  const { summary, labels: [a, b] } = comparison;
  const rows = summary.rows.filter((r) => r.domain === "all");
  const shown = rows.length > 0 ? rows : summary.rows;
  const fmt = (r: Row, c: string) => significant(numberIn(summary, r, c));
  const table = htmlTable(
    [
      "statistic",
      "domain",
      `${a}`,
      `${b}`,
      `difference ${b} − ${a}`,
      "95% interval",
      "interval excludes 0",
    ],
    shown.map((r) => [
      r.statistic ?? "",
      r.domain ?? "",
      fmt(r, "value_a"),
      fmt(r, "value_b"),
      fmt(r, "difference"),
      interval(
        numberIn(summary, r, "difference_ci_low"),
        numberIn(summary, r, "difference_ci_high"),
        (v) => significant(v),
      ) || "–",
      r.interval_excludes_zero || "–",
    ]),
  ).replace(/<tr><td>([^<]*)<\/td>/g, (_, s) => `<tr data-statistic="${s}"><td>${s}</td>`);
  const differing = summary.rows.filter((r) => r.interval_excludes_zero === "true");
  const notes = Array.isArray(comparison.facts.notes)
    ? comparison.facts.notes.filter((n): n is string => typeof n === "string")
    : [];
  const listed = differing.slice(0, 12).map((r) =>
    `<li>${
      escapeHtml(`${r.statistic} (${r.domain}): ${fmt(r, "value_a")} → ${fmt(r, "value_b")}`)
    }</li>`
  );
  return `<section id="compare"><h2>Comparison: ${escapeHtml(a)} against ${escapeHtml(b)}</h2>
<p class="intro">${
    escapeHtml(
      `From moetrace compare (${comparison.dir}): every statistic of the two runs side by side with the difference ${b} − ${a} and its 95% interval (MOVER, from each run's own interval; conservative when the two runs share documents). The difference's baseline is 0, no change; an interval that excludes 0 is a difference beyond sampling noise. Each statistic's uniform-routing baseline is in the compare CSVs (baseline_a, baseline_b).`,
    )
  }</p>
${
    htmlTable(["run", "model", "input", "kind", "documents", "tokens"], [
      side(comparison.facts.a, a),
      side(comparison.facts.b, b),
    ])
  }
<h3>Summary statistics (mean over layers, whole corpus)</h3>
${table}
<p data-finding="compare-differences">${differing.length} of ${summary.rows.length} summary differences (every domain) have a 95% interval that excludes 0${
    differing.length > 0 ? ":" : "."
  }</p>${listed.length > 0 ? `<ul>${listed.join("")}</ul>` : ""}${
    differing.length > listed.length
      ? `<p class="note">The first ${listed.length}; all in summary.csv.</p>`
      : ""
  }${notes.length > 0 ? `<p class="note">${escapeHtml(notes.join(" "))}</p>` : ""}
<p class="note">${
    escapeHtml(
      Object.keys(STATISTIC_DEFINITIONS).filter((s) => shown.some((r) => r.statistic === s))
          .length > 0
        ? "The statistics are defined under the summary table above."
        : "",
    )
  }</p></section>`;
}
