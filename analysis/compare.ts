/**
 * `moetrace compare A B --out DIR [--labels NAME_A,NAME_B] [--bootstrap N] [--seed S] [--json]`:
 * every statistic of two runs side by side (two models, base vs instruct, two
 * corpora, BIES vs standard training). A and B are traces, analysed here into
 * DIR/a and DIR/b as `analyze` would, or folders `analyze` wrote. For each
 * analysis table DIR gets a CSV of value_a, value_b, their difference and its
 * MOVER interval (compare_tables.ts), and compare.json for the report
 * (format in analysis/README.md).
 */
import { parse } from "csv-parse/sync";
import { basename, relative, resolve } from "node:path";
import { writeFileAtomic } from "../common/atomic_write.ts";
import { type CsvRow, writeCsv } from "../common/csv.ts";
import { DataError, messageOf, UsageError } from "../common/errors.ts";
import { TraceReader } from "../trace/mod.ts";
import type { Accumulator } from "./accumulate.ts";
import { analyseTo } from "./analyze.ts";
import { documentFingerprints, PairedIntervals, pairingProblem } from "./compare_paired.ts";
import {
  cellNumber,
  COMPARE_TABLES,
  COMPARE_VALUE_COLUMNS,
  compareRows,
  type CompareTable,
  type TextRow,
} from "./compare_tables.ts";

export const COMPARE_FORMAT = "moetrace-compare/1";

/** What compare.json says of one side. */
interface Side {
  label: string;
  input: string;
  kind: "trace" | "analysis";
  /** The analysis folder read: relative to DIR when compare wrote it there. */
  analysis: string;
  model: string;
  n_docs: number;
  n_tokens: number;
  domains: string[];
  /** analysis.json's settings.intervals ("none" after --bootstrap 0). */
  intervals: string;
  corpus: unknown;
}

interface AnalysisInfo {
  trace?: {
    model?: { name?: string; num_experts?: number; top_k?: number };
    capture?: { corpus?: unknown };
  };
  totals?: { n_docs?: number; n_tokens?: number; domains?: { name: string }[] };
  settings?: { intervals?: string };
}

const PAIRED_DESCRIPTION =
  "A and B hold the same documents: the difference of each document statistic with a value ± t·se interval (shares, repetition, overlap, H_norm, ExRep, L_norm, BIES, load balance and router statistics, their means over layers) has a paired cluster-jackknife interval (difference_interval = paired jackknife): document j is deleted from both sides at once, stratified by domain, and the interval is the difference ± t_ν · se with Satterthwaite ν. The rest (difference_interval = mover):";

const INTERVAL_DESCRIPTION =
  "MOVER (Newcombe 1998; Zou & Donner 2008) from each side's own 95% interval, for independent samples: low = d − √((v_b − l_b)² + (u_a − v_a)²), high = d + √((u_b − v_b)² + (v_a − l_a)²), d = v_b − v_a. Conservative when A and B are paired (two models on the same documents).";

export async function compareCommand(
  inputs: string[],
  flags: Record<string, unknown>,
): Promise<void> {
  if (inputs.length !== 2) {
    throw new UsageError(
      `compare needs exactly two inputs (traces or analysis folders), got ${inputs.length}.`,
    );
  }
  const out = flags.out;
  if (typeof out !== "string" || out === "") {
    throw new UsageError(
      `--out of compare must name an output directory, got ${JSON.stringify(out)}.`,
    );
  }
  const labels = (flags.labels as string[] | undefined) ?? defaultLabels(inputs);
  if (labels.length !== 2 || labels[0] === labels[1]) {
    throw new UsageError(
      `--labels of compare must be two different names, got ${JSON.stringify(labels.join(","))}.`,
    );
  }
  const bootstrap = (flags.bootstrap as number | undefined) ?? 1000;
  const seed = (flags.seed as number | undefined) ?? 0;
  await checkOutput(out);
  const kinds = await Promise.all(inputs.map(inputKind));
  // Analysis folders are read before any trace is analysed, so that a bad one fails fast.
  const tables = await Promise.all(
    inputs.map((input, i) => kinds[i] === "analysis" ? readTables(input) : null),
  );
  await Deno.mkdir(out, { recursive: true });
  const sides: Side[] = [];
  const accumulators: (Accumulator | null)[] = [null, null];
  for (const [i, input] of inputs.entries()) {
    const sub = i === 0 ? "a" : "b";
    let folder = input;
    if (kinds[i] === "trace") {
      const reader = await TraceReader.open(input);
      if (reader.rows === 0) {
        throw new DataError(
          `The trace in ${input} holds no tokens, so there is nothing to compare.`,
        );
      }
      folder = `${out}/${sub}`;
      const result = await analyseTo(reader, folder, { bootstrap, seed, routerTemperature: 1 });
      accumulators[i] = result.accumulator;
    }
    sides.push(
      await describeSide(folder, {
        label: labels[i]!,
        input,
        kind: kinds[i]!,
        analysis: kinds[i] === "trace" ? sub : relative(resolve(out), resolve(input)),
      }),
    );
  }
  const files = [];
  let summary: CsvRow[] = [];
  const [tablesA, tablesB] = [
    tables[0] ?? await readTables(`${out}/a`),
    tables[1] ?? await readTables(`${out}/b`),
  ];
  const pairing = await pairSides(inputs, sides, accumulators, {
    wanted: flags.pairing !== "none",
    intervals: bootstrap > 0,
  });
  for (const spec of COMPARE_TABLES) {
    const paired = pairing.intervals
      ? (row: CsvRow, quantity: string, difference: number) =>
        pairing.intervals!.interval(spec.table, row, quantity, difference)
      : undefined;
    const rows = compareRows(spec, tablesA.get(spec.table)!, tablesB.get(spec.table)!, paired);
    await writeCsv(`${out}/${spec.table}.csv`, rows, [...spec.keys, ...COMPARE_VALUE_COLUMNS]);
    files.push({
      file: `${spec.table}.csv`,
      table: spec.table,
      rows: rows.length,
      keys: spec.keys,
      quantities: spec.quantities.map((q) => q.column),
    });
    if (spec.table === "summary") summary = rows;
  }
  const notes = compareNotes(sides[0]!, sides[1]!, pairing);
  const info = {
    format: COMPARE_FORMAT,
    a: sides[0],
    b: sides[1],
    difference: "value_b - value_a",
    interval: {
      method: pairing.intervals ? "paired jackknife and mover" : "mover",
      level: 0.95,
      description: pairing.intervals
        ? `${PAIRED_DESCRIPTION} ${INTERVAL_DESCRIPTION}`
        : INTERVAL_DESCRIPTION,
      paired: pairing.intervals !== null,
      pairing: pairing.reason,
    },
    files,
    summary: summary.map(jsonRow),
    notes,
  };
  await writeFileAtomic(
    `${out}/README.md`,
    compareReadme(sides[0]!, sides[1]!, { notes, paired: pairing.intervals !== null }),
  );
  // Written last: its presence marks a finished comparison.
  await writeFileAtomic(`${out}/compare.json`, JSON.stringify(info, null, 2) + "\n");
  const excluding = summary.filter((r) => r.interval_excludes_zero === true).length;
  const withInterval = summary.filter((r) => r.interval_excludes_zero !== "").length;
  if (flags.json === true) {
    console.log(JSON.stringify({
      out,
      a: sides[0],
      b: sides[1],
      tables: files.map((f) => ({ file: f.file, rows: f.rows })),
      summary_differences: withInterval,
      summary_differences_excluding_zero: excluding,
      notes,
    }));
    return;
  }
  console.log(
    `Compared ${sides[0]!.label} (${sides[0]!.n_tokens} tokens) with ${sides[1]!.label} (${
      sides[1]!.n_tokens
    } tokens); wrote ${out}/ (${files.length} tables; ${excluding} of ${withInterval} summary differences have a 95% interval excluding 0).`,
  );
  for (const note of notes) console.log(`Note: ${note}`);
}

/** The folders' names, or A and B when they are the same. */
function defaultLabels(inputs: string[]): string[] {
  const names = inputs.map((p) => basename(resolve(p)));
  return names[0] === names[1] ? ["A", "B"] : names;
}

/** What compare writes into DIR (and the staging and temporary names of an interrupted run). */
function isCompareOutput(name: string): boolean {
  if (/\.tmp-\d+$/.test(name)) return true;
  if (/^[ab](\.partial)?$/.test(name)) return true;
  if (name === "compare.json" || name === "README.md") return true;
  return COMPARE_TABLES.some((t) => name === `${t.table}.csv`);
}

/** Refuses an output folder that holds anything but an earlier (or interrupted) comparison. */
async function checkOutput(out: string): Promise<void> {
  const foreign: string[] = [];
  try {
    const info = await Deno.stat(out);
    if (!info.isDirectory) {
      throw new UsageError(`--out of compare must be a directory, got the file "${out}".`);
    }
    for await (const entry of Deno.readDir(out)) {
      if (!isCompareOutput(entry.name)) foreign.push(entry.name);
    }
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    throw error;
  }
  if (foreign.length > 0) {
    throw new UsageError(
      `--out of compare names ${out}, which holds files compare does not write (${
        foreign.sort().slice(0, 3).join(", ")
      }${
        foreign.length > 3 ? ", ..." : ""
      }); give an empty or new folder, or an earlier compare's.`,
    );
  }
}

/** Whether `input` is a trace (manifest.json) or an analysis folder (analysis.json). */
async function inputKind(input: string): Promise<"trace" | "analysis"> {
  const exists = async (path: string) => {
    try {
      return (await Deno.stat(path)).isFile;
    } catch (error) {
      if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory) {
        return false;
      }
      throw error;
    }
  };
  if (await exists(`${input}/manifest.json`)) return "trace";
  if (await exists(`${input}/analysis.json`)) return "analysis";
  throw new DataError(
    `${input} is neither a trace (no manifest.json) nor an analyze output folder (no analysis.json).`,
  );
}

async function describeSide(
  folder: string,
  side: Pick<Side, "label" | "input" | "kind" | "analysis">,
): Promise<Side> {
  const path = `${folder}/analysis.json`;
  let info: AnalysisInfo;
  try {
    info = JSON.parse(await Deno.readTextFile(path));
  } catch (error) {
    throw new DataError(`${path} is not readable JSON: ${messageOf(error)}.`);
  }
  return {
    ...side,
    model: info.trace?.model?.name ?? "",
    n_docs: info.totals?.n_docs ?? NaN,
    n_tokens: info.totals?.n_tokens ?? NaN,
    domains: (info.totals?.domains ?? []).map((d) => d.name),
    intervals: info.settings?.intervals ?? "",
    corpus: info.trace?.capture?.corpus ?? null,
  };
}

/** Every compared table of an analysis folder, by name. */
async function readTables(folder: string): Promise<Map<string, TextRow[]>> {
  const tables = new Map<string, TextRow[]>();
  for (const spec of COMPARE_TABLES) tables.set(spec.table, await readTable(folder, spec));
  return tables;
}

/** The rows of one analysis CSV as text, after checking it has the table's key columns. */
async function readTable(folder: string, spec: CompareTable): Promise<TextRow[]> {
  const path = `${folder}/${spec.table}.csv`;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw new DataError(
      `${path} cannot be read (${messageOf(error)}); is ${folder} an analyze output?`,
    );
  }
  const header = (parse(text, { to_line: 1 }) as string[][])[0] ?? [];
  const wanted = [...spec.keys, ...spec.quantities.map((q) => q.column)];
  const missing = wanted.filter((c) => !header.includes(c));
  if (missing.length > 0) {
    throw new DataError(
      `${path} lacks the column${missing.length > 1 ? "s" : ""} ${
        missing.join(", ")
      }; rerun analyze with this version of moetrace.`,
    );
  }
  return parse(text, { columns: true }) as TextRow[];
}

/** A compare row for JSON: numbers as numbers, empty cells as null. */
function jsonRow(row: CsvRow): Record<string, string | number | boolean | null> {
  const out: Record<string, string | number | boolean | null> = {};
  for (const [key, value] of Object.entries(row)) {
    if (typeof value === "boolean") out[key] = value;
    else if (key === "statistic" || key === "domain" || key === "quantity") {
      out[key] = String(value);
    } else if (value === "" || value === undefined || value === null) out[key] = null;
    else {
      const n = typeof value === "number" ? value : cellNumber(value);
      out[key] = Number.isFinite(n) ? n : String(value);
    }
  }
  return out;
}

/** Whether A and B hold the same documents, and if so their paired jackknives. */
interface Pairing {
  intervals: PairedIntervals | null;
  /** Why the intervals are or are not paired, in a few words. */
  reason: string;
}

async function pairSides(
  inputs: string[],
  sides: Side[],
  accumulators: (Accumulator | null)[],
  options: { wanted: boolean; intervals: boolean },
): Promise<Pairing> {
  if (!options.wanted) return { intervals: null, reason: "--pairing none" };
  const [accA, accB] = accumulators;
  if (!accA || !accB) {
    return { intervals: null, reason: "pairing needs both A and B given as traces" };
  }
  if (!options.intervals) return { intervals: null, reason: "--bootstrap 0: no intervals" };
  const problem = pairingProblem(
    { acc: accA, corpus: sides[0]!.corpus },
    { acc: accB, corpus: sides[1]!.corpus },
  );
  if (problem) return { intervals: null, reason: `not paired: ${problem}` };
  const readers = await Promise.all(inputs.map((input) => TraceReader.open(input)));
  if (readers.some((r) => r.manifest.capture.tokens_recorded === false)) {
    return { intervals: null, reason: "not paired: token ids are not recorded" };
  }
  const printsA = await documentFingerprints(readers[0]!);
  const printsB = await documentFingerprints(readers[1]!);
  const differing = printsA.findIndex((p, i) => p !== printsB[i]);
  if (differing >= 0 || printsA.length !== printsB.length) {
    return { intervals: null, reason: "not paired: their documents' token ids differ" };
  }
  return {
    intervals: new PairedIntervals(accA, accB),
    reason: "paired: the same documents (ids, lengths and token ids) in every domain",
  };
}

/** What the reader should know before reading the differences. */
function compareNotes(a: Side, b: Side, pairing: Pairing): string[] {
  const notes: string[] = [];
  if (a.model !== b.model) {
    notes.push(
      `A and B are different models (${a.model} and ${b.model}): expert ids are not matched between them, so compare per-expert rows with care.`,
    );
  }
  const onlyA = a.domains.filter((d) => !b.domains.includes(d));
  const onlyB = b.domains.filter((d) => !a.domains.includes(d));
  if (onlyA.length > 0 || onlyB.length > 0) {
    notes.push(
      `Domains in only one side (A: ${onlyA.join(", ") || "none"}; B: ${
        onlyB.join(", ") || "none"
      }) have their rows with the other side empty.`,
    );
  }
  for (const side of [a, b]) {
    if (side.intervals === "none") {
      notes.push(
        `${side.label} was analysed without intervals (--bootstrap 0): no difference intervals.`,
      );
    }
  }
  if (pairing.intervals) {
    notes.push(
      "A and B hold the same documents: the document statistics' difference intervals are paired (difference_interval = paired jackknife); the others are MOVER intervals for independent samples, conservative here.",
    );
  } else if (JSON.stringify(a.corpus) === JSON.stringify(b.corpus) && a.n_docs === b.n_docs) {
    notes.push(
      "A and B come from the same corpus with as many documents: if they hold the same documents the samples are paired, and the intervals (made for independent samples) are conservative.",
    );
  }
  return notes;
}

function compareReadme(
  a: Side,
  b: Side,
  facts: { notes: string[]; paired: boolean },
): string {
  const { notes } = facts;
  const tables = COMPARE_TABLES.map((t) =>
    `- \`${t.table}.csv\`: keys ${t.keys.map((k) => `\`${k}\``).join(", ")}; quantities ${
      t.quantities.map((q) => `\`${q.column}\``).join(", ")
    }.`
  ).join("\n");
  return `# moetrace compare

A = ${a.label} (${a.input}, model \`${a.model}\`, ${a.n_docs} documents, ${a.n_tokens} tokens);
B = ${b.label} (${b.input}, model \`${b.model}\`, ${b.n_docs} documents, ${b.n_tokens} tokens).
${
    a.kind === "trace" || b.kind === "trace"
      ? "\nThe traces were analysed into `a/` and `b/` as `analyze` would.\n"
      : ""
  }
${notes.length > 0 ? `## Notes\n\n${notes.map((n) => `- ${n}`).join("\n")}\n` : ""}
## Files

One CSV per analysis table (same name), one row per key and quantity; \`compare.json\` holds both
sides' facts, the file list and the summary rows.

${tables}

## Columns

- The key columns: as in the analysis CSVs (\`layer\` the model's layer index, \`moe_layer\` the
  index among MoE layers; \`layer_next\`, \`moe_layer_next\` the next MoE layer).
- \`quantity\`: the analysis column compared.
- \`value_a\`, \`value_b\`: the values in A's and B's analysis, exactly as written there; empty where
  that side has no such row.
- \`difference\`: value_b − value_a.
- \`difference_ci_low\`, \`difference_ci_high\`: the 95% interval of the difference by MOVER
  (Newcombe 1998; Zou & Donner 2008) from each side's own interval [l, u] around its value v:
  low = d − √((v_b − l_b)² + (u_a − v_a)²), high = d + √((u_b − v_b)² + (v_a − l_a)²). It treats A
  and B as independent samples of documents; for two models on the same documents (paired) it is
  conservative. Empty where either side has no interval.
- \`difference_interval\`: how that interval was made: \`mover\` (above), or \`paired jackknife\`
  when A and B hold the same documents (${
    facts.paired ? "they do here" : "they do not here"
  }): for the document statistics with value ± t·se intervals (shares, repetition, overlap, H_norm,
  ExRep, L_norm, BIES, load balance and router statistics, and their means over layers) the
  difference θ_B − θ_A is jackknifed deleting each document from both sides at once, stratified by
  domain: difference ± t_ν · se with Satterthwaite ν. Empty where there is no interval.
- \`interval_excludes_zero\`: true when the interval lies wholly above or below 0 (one comparison at
  the 5% level; no correction for the many rows).
- \`ci_low_a\`, \`ci_high_a\`, \`ci_low_b\`, \`ci_high_b\`: each side's interval as analysed.
- \`baseline_a\`, \`baseline_b\`: each side's uniform-routing baseline (1 for a lift).
- \`n_docs_a\`, \`n_docs_b\`, \`n_tokens_a\`, \`n_tokens_b\`: documents and tokens behind each side's row.
`;
}
