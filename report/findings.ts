/**
 * "Key findings", the report's first section: the answers a reader came for,
 * each read from one CSV row (nothing is recomputed) and tagged with
 * `data-finding` so a test can compare it with the CSV.
 *
 * - the most specialised domain and layer (domain_divergence.csv: the
 *   largest one-against-the-rest JSD, or pair JSD with two domains);
 * - vocabulary specialisation at its most specialised layer;
 * - repetition against both baselines (summary.csv's mean over layers, and
 *   the layer of repetition.csv with the most locality);
 * - the best online policy per capacity with its ms/token (simulation.csv).
 *
 * Also the table of simulation results shown in the cache section.
 */
import { escapeHtml, htmlTable, interval, percent, significant } from "./html.ts";
import { numberIn, type Row, type Table } from "./inputs.ts";

export interface FindingTables {
  summary: Table | null;
  repetition: Table | null;
  divergence: Table | null;
  vocabulary: Table | null;
  simulation: Table | null;
}

/** The "all"-domain row of `statistic` in summary.csv. */
function summaryRow(summary: Table, statistic: string): Row | undefined {
  return summary.rows.find((r) =>
    r.statistic === statistic && r.domain === "all" && r.layer === "all"
  );
}

/** The row of `table` with the largest finite `score`, first of ties. */
function argmax(rows: Row[], score: (r: Row) => number): Row | undefined {
  let best: Row | undefined;
  let bestScore = -Infinity;
  for (const row of rows) {
    const s = score(row);
    if (Number.isFinite(s) && s > bestScore) [best, bestScore] = [row, s];
  }
  return best;
}

function specialisationFinding(divergence: Table): string {
  const oneVsRest = divergence.rows.filter((r) => r.comparison === "one_vs_rest");
  const rows = oneVsRest.length > 0
    ? oneVsRest
    : divergence.rows.filter((r) => r.comparison === "pair");
  const best = argmax(rows, (r) => numberIn(divergence, r, "jsd"));
  if (!best) return "";
  const jsd = numberIn(divergence, best, "jsd");
  const ci = interval(
    numberIn(divergence, best, "ci_low"),
    numberIn(divergence, best, "ci_high"),
    (v) => significant(v, 3),
  );
  const q = numberIn(divergence, best, "q_value");
  const who = oneVsRest.length > 0
    ? `<strong>${escapeHtml(best.domain_a ?? "")}</strong> at layer ${
      escapeHtml(best.layer ?? "")
    }: the Jensen–Shannon divergence of its expert distribution from the other domains pooled`
    : `<strong>${escapeHtml(best.domain ?? "")}</strong> at layer ${
      escapeHtml(best.layer ?? "")
    }: the Jensen–Shannon divergence between the two domains' expert distributions`;
  return `<li data-finding="specialisation" data-layer="${
    escapeHtml(best.layer ?? "")
  }" data-domain="${
    escapeHtml(oneVsRest.length > 0 ? best.domain_a ?? "" : best.domain ?? "")
  }">Most specialised domain and layer: ${who} is <span class="value">${
    significant(jsd, 3)
  }</span> bits ${ci} (baseline 0, no difference between domains${
    Number.isFinite(q) ? `; permutation test q = ${significant(q, 2)}` : ""
  }).</li>`;
}

function vocabularyFinding(vocabulary: Table): string {
  const rows = vocabulary.rows.filter((r) => r.domain === "all");
  const best = argmax(rows, (r) =>
    numberIn(vocabulary, r, "mean_specialisation") -
    numberIn(vocabulary, r, "baseline_marginal"));
  if (!best) return "";
  const value = numberIn(vocabulary, best, "mean_specialisation");
  return `<li data-finding="vocabulary" data-layer="${
    escapeHtml(best.layer ?? "")
  }">Vocabulary specialisation is strongest at layer ${
    escapeHtml(best.layer ?? "")
  }: a token id sends on average <span class="value">${
    percent(value)
  }</span> of its occurrences to one first-choice expert, against ${
    percent(numberIn(vocabulary, best, "baseline"))
  } under uniform random routing and ${
    percent(numberIn(vocabulary, best, "baseline_marginal"))
  } with the token ids shuffled within each document (over ${
    escapeHtml(best.n_token_ids ?? "?")
  } ids seen at least ${escapeHtml(best.min_count ?? "?")} times).</li>`;
}

function repetitionFinding(summary: Table, repetition: Table | null): string {
  const parts: string[] = [];
  for (
    const [statistic, what] of [
      ["first_choice_repeat", "share their first-choice expert"],
      ["set_overlap", "share at least one of their top-k experts"],
    ] as const
  ) {
    const row = summaryRow(summary, statistic);
    if (!row) continue;
    const value = numberIn(summary, row, "value");
    if (!Number.isFinite(value)) continue;
    const marginal = numberIn(summary, row, "baseline_marginal");
    const ci = interval(
      numberIn(summary, row, "ci_low"),
      numberIn(summary, row, "ci_high"),
      percent,
    );
    let locality = "";
    if (repetition) {
      const best = argmax(
        repetition.rows.filter((r) => r.statistic === statistic && r.domain === "all"),
        (r) => numberIn(repetition, r, "value") - numberIn(repetition, r, "baseline_marginal"),
      );
      if (best) {
        locality = `; the most locality is at layer ${escapeHtml(best.layer ?? "")} (${
          percent(numberIn(repetition, best, "value"))
        } against ${percent(numberIn(repetition, best, "baseline_marginal"))} shuffled)`;
      }
    }
    parts.push(
      `<li data-finding="${statistic}">Consecutive tokens ${what} <span class="value">${
        percent(value)
      }</span> of the time ${ci} (mean over MoE layers), against ${
        percent(numberIn(summary, row, "baseline"))
      } under uniform random routing and ${
        percent(marginal)
      } with each document's tokens shuffled (which keeps its expert counts): ${
        Number.isFinite(marginal)
          ? `${((value - marginal) * 100).toFixed(1)} points of locality${locality}`
          : "no shuffle baseline in summary.csv"
      }.</li>`,
    );
  }
  return parts.join("\n");
}

/** Policies and prefetchers that know the future: bounds, not choices. */
const OFFLINE_POLICIES = new Set(["belady"]);
const OFFLINE_PREFETCHERS = new Set(["oracle"]);

/** simulation.csv's whole-model rows (layer "all") of one hardware, dtype and budget. */
export function wholeModelRows(simulation: Table): Row[] {
  return simulation.rows.filter((r) => r.layer === "all");
}

/** The first hardware, dtype and budget of the sweep: the setting the findings are quoted for. */
function firstSetting(rows: Row[]): Row | undefined {
  return rows[0];
}

/** ms/token's interval when simulation.csv carries one (ms_per_token_ci_low/high). */
function msInterval(simulation: Table, row: Row): string {
  if (!simulation.columns.includes("ms_per_token_ci_low")) return "";
  return interval(
    numberIn(simulation, row, "ms_per_token_ci_low"),
    numberIn(simulation, row, "ms_per_token_ci_high"),
    (v) => significant(v, 4),
  );
}

function policyFinding(simulation: Table): string {
  const all = wholeModelRows(simulation);
  const first = firstSetting(all);
  if (!first) return "";
  const rows = all.filter((r) =>
    r.hardware === first.hardware && r.dtype === first.dtype && r.budget === first.budget
  );
  const timed = rows.some((r) => Number.isFinite(numberIn(simulation, r, "ms_per_token")));
  // Lower ms/token is better; without expert sizes (an imported log), a higher hit rate.
  const cost = (r: Row) =>
    timed ? numberIn(simulation, r, "ms_per_token") : -numberIn(simulation, r, "hit_rate");
  const capacities = [...new Set(rows.map((r) => r.capacity ?? ""))]
    .filter((c) => rows.some((r) => r.capacity === c && r.policy !== "swap"))
    .sort((a, b) => Number(a) - Number(b));
  const lines: string[][] = [];
  for (const capacity of capacities) {
    const here = rows.filter((r) => r.capacity === capacity);
    const pick = (candidates: Row[]) => {
      let best: Row | undefined;
      for (const r of candidates) {
        if (!Number.isFinite(cost(r))) continue;
        if (!best || cost(r) < cost(best)) best = r;
      }
      return best;
    };
    const online = pick(
      here.filter((r) =>
        !OFFLINE_POLICIES.has(r.policy ?? "") && !OFFLINE_PREFETCHERS.has(r.prefetch ?? "")
      ),
    );
    const bound = pick(here.filter((r) => r.policy === "belady" && r.prefetch === "none"));
    if (!online) continue;
    lines.push([
      capacity,
      `${online.policy} + ${online.prefetch}`,
      significant(numberIn(simulation, online, "ms_per_token")),
      msInterval(simulation, online) || "–",
      percent(numberIn(simulation, online, "hit_rate")),
      bound ? significant(numberIn(simulation, bound, "ms_per_token")) : "–",
    ]);
  }
  if (lines.length === 0) return "";
  const intervals = simulation.columns.includes("ms_per_token_ci_low")
    ? "The interval is simulate's 95% bootstrap interval of ms/token over documents"
    : "simulation.csv carries no interval for ms/token (simulate --bootstrap 0), so none is shown";
  const table = htmlTable(
    [
      "capacity",
      "best online policy + prefetch",
      "ms/token",
      "95% interval",
      "hit rate",
      "Belady, no prefetch (bound)",
    ],
    lines,
  ).replace(
    /<tr><td>([^<]*)<\/td>/g,
    (_, capacity) => `<tr data-capacity="${capacity}"><td>${capacity}</td>`,
  );
  return `<li data-finding="policy">The best online cache policy and prefetcher at each capacity (${
    escapeHtml(first.budget ?? "")
  } budget, ${escapeHtml(first.dtype ?? "")} experts on ${escapeHtml(first.hardware ?? "")}), ${
    timed ? "by predicted ms/token" : "by hit rate (the trace has no expert sizes, so no ms/token)"
  }; Belady's optimal policy, which knows the future, is the bound. ${intervals}.${table}</li>`;
}

/** The key-findings section, or "" when none of its tables is present. */
export function findingsSection(tables: FindingTables): string {
  const items = [
    tables.divergence ? specialisationFinding(tables.divergence) : "",
    tables.vocabulary ? vocabularyFinding(tables.vocabulary) : "",
    tables.summary ? repetitionFinding(tables.summary, tables.repetition) : "",
    tables.simulation ? policyFinding(tables.simulation) : "",
  ].filter((s) => s !== "");
  if (items.length === 0) return "";
  return `<section id="findings"><h2>Key findings</h2>
<p class="intro">Read from the CSV files linked at the end; the sections below show each in full.</p>
<ul>
${items.join("\n")}
</ul></section>`;
}

/** Columns of the simulation results table, in order. */
const RESULT_COLUMNS = [
  "policy",
  "prefetch",
  "budget",
  "capacity",
  "dtype",
  "hardware",
  "hit_rate",
  "loads_per_token",
  "prefetch_precision",
  "prefetch_recall",
  "stall_ms_per_token",
  "ms_per_token",
];

/**
 * Every whole-model row of simulation.csv (of one capacity when `capacity` is
 * given), sorted by capacity and then ms/token.
 */
export function simulationTable(simulation: Table, capacity: string | undefined): string {
  const rows = wholeModelRows(simulation).filter((r) =>
    capacity === undefined || r.capacity === capacity || r.capacity_spec === capacity
  );
  if (rows.length === 0) return "";
  const columns = RESULT_COLUMNS.filter((c) => simulation.columns.includes(c));
  const ms = (r: Row) => numberIn(simulation, r, "ms_per_token");
  rows.sort((a, b) =>
    Number(a.capacity) - Number(b.capacity) || (ms(a) - ms(b)) ||
    (a.policy ?? "").localeCompare(b.policy ?? "")
  );
  const cell = (r: Row, c: string) => {
    const text = r[c] ?? "";
    if (c === "hit_rate" || c.startsWith("prefetch_")) return percent(numberIn(simulation, r, c));
    if (/^-?[\d.]+$/.test(text) && !Number.isInteger(Number(text))) {
      return significant(Number(text));
    }
    return text;
  };
  return htmlTable(columns, rows.map((r) => columns.map((c) => cell(r, c))));
}
