/**
 * The side-by-side tables of `moetrace compare` (analysis/README.md, "compare
 * output"): for each analysis table, which columns say which row it is (the
 * keys) and which columns are compared (the quantities, with their interval
 * and baseline columns), and the join of two sides' rows into one row per key
 * and quantity with the difference B − A and its MOVER interval.
 *
 * The numbers are read from the two analyses' CSV text, so `value_a` and
 * `value_b` are written back exactly as `analyze` wrote them.
 */
import type { CsvRow } from "../common/csv.ts";

/** A compared column of an analysis table and the columns of its interval and baseline. */
export interface Quantity {
  /** The analysis column (`share`, `value`, `lift`, ...): the compare CSV's `quantity`. */
  column: string;
  /** Columns of its 95% interval, absent where the table gives none. */
  low?: string;
  high?: string;
  /** Column of its baseline under uniform routing, or a constant (a lift's 1). */
  baseline?: string | number;
}

/** Which analysis table's rows are compared, and how. */
export interface CompareTable {
  /** The analysis CSV (without .csv), also the compare CSV's name. */
  table: string;
  /** Columns that together name a row of the table. */
  keys: readonly string[];
  quantities: readonly Quantity[];
}

const LAYER = ["layer", "moe_layer"];
const LAYER_PAIR = ["layer", "moe_layer", "layer_next", "moe_layer_next"];
const INTERVAL = { low: "ci_low", high: "ci_high", baseline: "baseline" };
const STATISTIC_VALUE: Quantity[] = [{ column: "value", ...INTERVAL }];

/** Every analysis table and what of it is compared (analysis/write.ts COLUMNS). */
export const COMPARE_TABLES: readonly CompareTable[] = [
  {
    table: "expert_shares",
    keys: [...LAYER, "domain", "expert", "choice"],
    quantities: [{ column: "share", ...INTERVAL }],
  },
  { table: "repetition", keys: [...LAYER, "domain", "statistic"], quantities: STATISTIC_VALUE },
  {
    table: "overlap_distribution",
    keys: [...LAYER, "domain", "overlap"],
    quantities: [{ column: "proportion", ...INTERVAL }],
  },
  { table: "cosmoes", keys: [...LAYER, "domain", "statistic"], quantities: STATISTIC_VALUE },
  { table: "load_balance", keys: [...LAYER, "domain", "statistic"], quantities: STATISTIC_VALUE },
  {
    table: "coactivation",
    keys: [...LAYER, "domain", "expert_i", "expert_j"],
    quantities: [
      { column: "coactivation", ...INTERVAL },
      { column: "lift", low: "lift_ci_low", high: "lift_ci_high", baseline: 1 },
    ],
  },
  {
    table: "vocabulary_specialisation",
    keys: [...LAYER, "domain"],
    quantities: [
      { column: "mean_specialisation", ...INTERVAL },
      { column: "median_specialisation" },
      { column: "p90_specialisation" },
    ],
  },
  {
    table: "layer_flow",
    keys: [...LAYER_PAIR, "domain", "expert_from", "expert_to"],
    quantities: [{ column: "probability", baseline: "baseline" }],
  },
  {
    table: "flow_information",
    keys: [...LAYER_PAIR, "domain"],
    quantities: [{ column: "mutual_information", ...INTERVAL }],
  },
  {
    table: "domain_divergence",
    keys: [...LAYER, "domain", "comparison", "domain_a", "domain_b"],
    quantities: [{ column: "jsd", ...INTERVAL }],
  },
  {
    table: "summary",
    keys: ["statistic", "layer", "moe_layer", "domain"],
    quantities: STATISTIC_VALUE,
  },
];

/** The columns after the keys, in order, of every compare CSV. */
export const COMPARE_VALUE_COLUMNS = [
  "quantity",
  "value_a",
  "value_b",
  "difference",
  "difference_ci_low",
  "difference_ci_high",
  "difference_interval",
  "interval_excludes_zero",
  "ci_low_a",
  "ci_high_a",
  "ci_low_b",
  "ci_high_b",
  "baseline_a",
  "baseline_b",
  "n_docs_a",
  "n_docs_b",
  "n_tokens_a",
  "n_tokens_b",
] as const;

/** One analysis CSV as read: its rows, every cell the text `analyze` wrote. */
export type TextRow = Record<string, string>;

/** A number from a CSV cell: empty (not defined) is NaN. */
export function cellNumber(text: string | undefined): number {
  if (text === undefined || text.trim() === "") return NaN;
  return Number(text);
}

/**
 * The 95% interval of v_b − v_a by MOVER (Newcombe 1998; Zou & Donner 2008)
 * from each side's estimate v and interval [l, u], for independent samples:
 * the difference minus √((v_b − l_b)² + (u_a − v_a)²), plus
 * √((u_b − v_b)² + (v_a − l_a)²). NaN where either side lacks an interval.
 */
export function moverInterval(
  a: { value: number; low: number; high: number },
  b: { value: number; low: number; high: number },
): { low: number; high: number } {
  const difference = b.value - a.value;
  const finite = [a.value, a.low, a.high, b.value, b.low, b.high].every(Number.isFinite);
  if (!finite) return { low: NaN, high: NaN };
  return {
    low: difference - Math.hypot(b.value - b.low, a.high - a.value),
    high: difference + Math.hypot(b.high - b.value, a.value - a.low),
  };
}

/**
 * The compare rows of one table: the union of both sides' rows by key (A's
 * order, then rows only B has), one row per key and quantity.
 */
/**
 * A paired interval of a row's difference (its key cells and quantity), or
 * null where there is none: then MOVER is used.
 */
export type PairedInterval = (
  row: CsvRow,
  quantity: string,
  difference: number,
) => { low: number; high: number } | null;

export function compareRows(
  spec: CompareTable,
  rowsA: readonly TextRow[],
  rowsB: readonly TextRow[],
  paired?: PairedInterval,
): CsvRow[] {
  const keyOf = (row: TextRow) => spec.keys.map((k) => row[k] ?? "").join("\u0000");
  const byKeyB = new Map<string, TextRow>();
  for (const row of rowsB) byKeyB.set(keyOf(row), row);
  const keysA = new Set<string>();
  const pairs: [TextRow | undefined, TextRow | undefined][] = [];
  for (const row of rowsA) {
    const key = keyOf(row);
    keysA.add(key);
    pairs.push([row, byKeyB.get(key)]);
  }
  for (const row of rowsB) if (!keysA.has(keyOf(row))) pairs.push([undefined, row]);
  const out: CsvRow[] = [];
  for (const [a, b] of pairs) {
    const keyRow = (a ?? b)!;
    for (const q of spec.quantities) {
      const row: CsvRow = {};
      for (const k of spec.keys) row[k] = keyRow[k] ?? "";
      const side = (r: TextRow | undefined) => ({
        text: r?.[q.column] ?? "",
        value: cellNumber(r?.[q.column]),
        low: q.low && r ? cellNumber(r[q.low]) : NaN,
        high: q.high && r ? cellNumber(r[q.high]) : NaN,
        lowText: q.low ? r?.[q.low] ?? "" : "",
        highText: q.high ? r?.[q.high] ?? "" : "",
        baseline: !r
          ? ""
          : typeof q.baseline === "number"
          ? q.baseline
          : q.baseline
          ? r[q.baseline] ?? ""
          : "",
      });
      const sa = side(a);
      const sb = side(b);
      const difference = sb.value - sa.value;
      const pairedInterval = paired && Number.isFinite(difference)
        ? paired(row, q.column, difference)
        : null;
      const interval = pairedInterval ?? moverInterval(sa, sb);
      row.quantity = q.column;
      row.value_a = sa.text;
      row.value_b = sb.text;
      row.difference = difference;
      row.difference_ci_low = interval.low;
      row.difference_ci_high = interval.high;
      row.difference_interval = pairedInterval
        ? "paired jackknife"
        : Number.isFinite(interval.low)
        ? "mover"
        : "";
      row.interval_excludes_zero = Number.isFinite(interval.low)
        ? interval.low > 0 || interval.high < 0
        : "";
      row.ci_low_a = sa.lowText;
      row.ci_high_a = sa.highText;
      row.ci_low_b = sb.lowText;
      row.ci_high_b = sb.highText;
      row.baseline_a = sa.baseline;
      row.baseline_b = sb.baseline;
      row.n_docs_a = a?.n_docs ?? "";
      row.n_docs_b = b?.n_docs ?? "";
      row.n_tokens_a = a?.n_tokens ?? "";
      row.n_tokens_b = b?.n_tokens ?? "";
      out.push(row);
    }
  }
  return out;
}
