/**
 * `moetrace analyze --from-counts DIR`: the analysis of a trace from the
 * small per-document tables that the SQL of analysis/sql/ produces (DuckDB,
 * or Spark SQL on a cluster: README "Analysis on DuckDB and Spark"), so the
 * jackknife, permutations and report run on one machine without the trace.
 *
 * DIR holds the trace's manifest.json and one table per SQL file, each as
 * `DIR/<table>.parquet`, `DIR/<table>.csv` (with a header) or a folder
 * `DIR/<table>/` of part files of either kind (as Spark writes them;
 * `_SUCCESS`, `.crc` and other names starting with `_` or `.` are skipped).
 *
 * The tables refill the streaming pass's per-document and per-bucket vectors
 * (accumulate.ts, layout.ts) exactly: counts are integers, the documents are
 * put back in trace order (documents.sql: each document's shard and first
 * row) and dealt into buckets as the pass deals them, and the shuffle
 * baselines are computed from the document's counts with the pass's own
 * arithmetic (shuffle.ts). What the tables cannot give is left out, each
 * with a note: router-distribution statistics (no sums of probs) and token
 * statistics (vocabulary specialisation, token colouring). For k ≥ 3 the
 * within-document shuffle baselines of the top-k overlap come exactly from
 * the optional topk_sets table (the pass estimates them from random token
 * pairs, which counts cannot reproduce), or are left empty without it.
 */
import { parse } from "csv-parse/sync";
import { DataError, messageOf } from "../common/errors.ts";
import { type Manifest, readManifest, rowShape } from "../trace/manifest.ts";
import { parquetWasmToTable } from "../trace/parquet.ts";
import { Accumulator } from "./accumulate.ts";
import type { Dims } from "./layout.ts";
import { addShuffleBaselines, SHUFFLE_PAIRS_PER_PAIR } from "./shuffle.ts";
import { analyseAccumulator, type AnalysisOptions, type AnalysisResult } from "./run.ts";

/** The tables read, with their columns (`domain` and `shard_file` text, the rest integers ≥ 0). */
export const COUNT_INPUTS = {
  documents: ["domain", "doc", "shard_file", "first_row", "tokens"],
  expert_counts: [
    "domain",
    "doc",
    "layer",
    "expert",
    "first_tokens",
    "second_tokens",
    "any_tokens",
  ],
  repetition: ["domain", "doc", "layer", "pairs", "same_first_pairs"],
  overlap: ["domain", "doc", "layer", "shared", "pairs"],
  coactivation: ["domain", "doc", "layer", "expert_i", "expert_j", "tokens"],
  flow: ["domain", "doc", "layer", "next_layer", "expert_from", "expert_to", "tokens"],
  /** Optional, read for top_k ≥ 3 only: `experts` a list of k experts (Parquet list, or CSV text). */
  topk_sets: ["domain", "doc", "layer", "experts", "tokens"],
} as const;

type InputName = keyof typeof COUNT_INPUTS;
const TEXT_COLUMNS = new Set(["domain", "shard_file"]);

/** A table column by column: text columns as strings, the others as numbers. */
type Columns = Record<string, (string | number | number[])[]>;

/** The files of one table in DIR, in name order. */
async function tableFiles(dir: string, name: string): Promise<string[]> {
  const found: string[] = [];
  for (const ext of ["parquet", "csv"]) {
    try {
      if ((await Deno.stat(`${dir}/${name}.${ext}`)).isFile) found.push(`${dir}/${name}.${ext}`);
    } catch { /* absent */ }
  }
  try {
    const parts: string[] = [];
    for await (const entry of Deno.readDir(`${dir}/${name}`)) {
      if (!entry.isFile || /^[_.]/.test(entry.name)) continue;
      if (/\.(parquet|csv)$/.test(entry.name)) parts.push(`${dir}/${name}/${entry.name}`);
    }
    found.push(...parts.sort());
  } catch { /* absent */ }
  if (found.length === 0) {
    throw new DataError(
      `--from-counts ${dir} has no ${name} table: expected ${name}.parquet, ${name}.csv or a folder ${name}/ of part-*.parquet or part-*.csv files (analysis/sql/${name}.sql's output).`,
    );
  }
  return found;
}

function cell(value: unknown, column: string, path: string): string | number | number[] {
  if (column === "experts") {
    // A Parquet list arrives as an Arrow vector; CSV text as "[1, 4, 7]" or "1 4 7".
    const items = typeof value === "string"
      ? (value.match(/-?\d+(\.\d+)?/g) ?? [])
      : value && typeof value === "object" && Symbol.iterator in value
      ? Array.from(value as Iterable<unknown>)
      : null;
    const experts = items?.map((x) => cell(x, "expert", path) as number);
    if (!experts || experts.length === 0) {
      throw new DataError(
        `${path}: column experts holds ${
          JSON.stringify(String(value))
        }; expected a list of experts.`,
      );
    }
    return experts;
  }
  if (TEXT_COLUMNS.has(column)) {
    if (value === null || value === undefined) {
      throw new DataError(`${path}: column ${column} has an empty cell; expected text.`);
    }
    return String(value);
  }
  const n = typeof value === "bigint"
    ? Number(value)
    : typeof value === "string"
    ? Number(value)
    : value;
  if (typeof n !== "number" || !Number.isSafeInteger(n) || n < 0 || value === "") {
    throw new DataError(
      `${path}: column ${column} holds ${JSON.stringify(String(value))}; expected an integer ≥ 0.`,
    );
  }
  return n;
}

/** Whether DIR holds table `name` in any of the accepted forms. */
async function hasTable(dir: string, name: string): Promise<boolean> {
  return await tableFiles(dir, name).then(() => true, () => false);
}

/** Reads one table (all its files) into columns, checking every cell. */
export async function readCountTable(dir: string, name: InputName): Promise<Columns> {
  const out: Columns = Object.fromEntries(COUNT_INPUTS[name].map((c) => [c, []]));
  for (const path of await tableFiles(dir, name)) {
    const part = await readCountPart(path, name);
    for (const column of COUNT_INPUTS[name]) {
      const into = out[column]!;
      for (const value of part[column]!) into.push(value);
    }
  }
  return out;
}

/** Reads one file of a table into columns, checking every cell. */
async function readCountPart(path: string, name: InputName): Promise<Columns> {
  const wanted = COUNT_INPUTS[name];
  const out: Columns = Object.fromEntries(wanted.map((c) => [c, []]));
  {
    if (path.endsWith(".parquet")) {
      let table;
      try {
        table = parquetWasmToTable(await Deno.readFile(path));
      } catch (error) {
        throw new DataError(`Cannot read ${path} as Parquet: ${messageOf(error)}.`);
      }
      for (const column of wanted) {
        const vector = table.getChild(column);
        if (!vector) {
          throw new DataError(`${path} has no column ${column} (columns: ${wanted.join(", ")}).`);
        }
        const into = out[column]!;
        for (const value of vector) into.push(cell(value, column, path));
      }
    } else {
      let rows: Record<string, string>[];
      try {
        rows = parse(await Deno.readTextFile(path), { columns: true, skip_empty_lines: true });
      } catch (error) {
        throw new DataError(`Cannot read ${path} as CSV with a header: ${messageOf(error)}.`);
      }
      for (const column of wanted) {
        if (rows.length > 0 && !(column in rows[0]!)) {
          throw new DataError(`${path} has no column ${column} (columns: ${wanted.join(", ")}).`);
        }
        const into = out[column]!;
        for (const row of rows) into.push(cell(row[column], column, path));
      }
    }
  }
  return out;
}

/** The analysis of the count tables in `dir` (see the header). */
export async function analyseCounts(
  dir: string,
  options: AnalysisOptions,
): Promise<AnalysisResult> {
  const started = performance.now();
  try {
    await Deno.stat(`${dir}/manifest.json`);
  } catch {
    throw new DataError(
      `--from-counts ${dir} has no manifest.json: copy the trace's manifest.json beside the count tables.`,
    );
  }
  const manifest = await readManifest(dir);
  // Every table there before any is read (a missing one is found in a moment, not after the rest).
  for (const name of Object.keys(COUNT_INPUTS)) {
    if (name !== "topk_sets") await tableFiles(dir, name);
  }
  const exactSets = manifest.model.top_k >= 3 && await hasTable(dir, "topk_sets");
  const acc = await accumulatorFromCounts(manifest, dir, exactSets, options);
  const seconds = (performance.now() - started) / 1000;
  return analyseAccumulator(acc, manifest, options, seconds, {
    tokens: false,
    notes: countsNotes(manifest, exactSets),
  });
}

/** What an analysis from count tables leaves out, one line each. */
export function countsNotes(manifest: Manifest, exactSets: boolean): string[] {
  const notes = [
    "Analysed from count tables (--from-counts): they hold no token ids, so vocabulary_specialisation.csv has no rows and token_colouring.html shows no documents.",
  ];
  notes.push(
    manifest.capture.probs
      ? "Analysed from count tables (--from-counts): they hold no sums of the router distribution, so l_norm, bies, router_entropy, topk_mass and topk_margin are absent (analyze TRACE gives them)."
      : "The trace has no router distribution (capture.probs is false): l_norm, bies, router_entropy, topk_mass and topk_margin are absent (CoSMoEs Eq. 6 needs --probs at capture).",
  );
  if (manifest.model.top_k >= 3 && exactSets) {
    notes.push(
      `Analysed from count tables (--from-counts) with top_k = ${manifest.model.top_k}: the within-document shuffle baselines of set_overlap, h_norm, ex_rep and overlap_distribution are exact (from topk_sets, every top-k set's count per document), where analyze TRACE estimates them from ${SHUFFLE_PAIRS_PER_PAIR} random token pairs per consecutive pair of documents longer than 16 tokens, so those columns differ from its by that sampling error.`,
    );
  } else if (manifest.model.top_k >= 3) {
    notes.push(
      `Analysed from count tables (--from-counts) with top_k = ${manifest.model.top_k}: the within-document shuffle baselines of set_overlap, h_norm, ex_rep and overlap_distribution are left empty (there is no topk_sets table, which gives them exactly; analyze TRACE estimates them from random token pairs, which counts cannot reproduce); first_choice_repeat's is exact.`,
    );
  }
  return notes;
}

interface DocumentRow {
  domain: string;
  doc: number;
  shard: number;
  firstRow: number;
  tokens: number;
}

/** The documents in trace order: manifest order of their shards, then first row. */
function traceOrder(manifest: Manifest, docs: Columns, where: string): DocumentRow[] {
  const shardOf = new Map<string, number>();
  const find = (file: string): number => {
    let index = shardOf.get(file);
    if (index !== undefined) return index;
    let path = file;
    try {
      path = decodeURIComponent(file);
    } catch { /* not percent-encoded */ }
    path = path.replaceAll("\\", "/");
    index = manifest.shards.findIndex((s) => path === s.file || path.endsWith(`/${s.file}`));
    if (index < 0) {
      throw new DataError(
        `${where}: documents names shard_file ${
          JSON.stringify(file)
        }, which ends with no shard path of manifest.json.`,
      );
    }
    shardOf.set(file, index);
    return index;
  };
  const rows: DocumentRow[] = docs.doc!.map((doc, i) => ({
    domain: docs.domain![i] as string,
    doc: doc as number,
    shard: find(docs.shard_file![i] as string),
    firstRow: docs.first_row![i] as number,
    tokens: docs.tokens![i] as number,
  }));
  rows.sort((a, b) => a.shard - b.shard || a.firstRow - b.firstRow);
  const rowsInTrace = manifest.shards.reduce((n, s) => n + s.rows, 0);
  const counted = rows.reduce((n, r) => n + r.tokens, 0);
  if (counted !== rowsInTrace) {
    throw new DataError(
      `${where}: documents counts ${counted} tokens but manifest.json's shards hold ${rowsInTrace}; the tables come from another trace or from part of it.`,
    );
  }
  return rows;
}

/**
 * The accumulator the streaming pass would have filled, from the count
 * tables: per-document vectors in trace order and per-bucket sums. Router
 * sums stay out (dims.probs false); k ≥ 3 overlap shuffle baselines are
 * exact from topk_sets (`exactSets`) or NaN.
 */
export async function accumulatorFromCounts(
  manifest: Manifest,
  dir: string,
  exactSets: boolean,
  options: AnalysisOptions,
): Promise<Accumulator> {
  const where = `--from-counts ${dir}`;
  const shape = rowShape(manifest);
  const dims: Dims = {
    layers: shape.layers,
    experts: shape.experts,
    topK: shape.topK,
    probs: false,
  };
  const { layers: M, experts: E, topK: k } = dims;
  const acc = new Accumulator(dims, manifest.capture.domains, options.accumulate ?? {});
  const L = acc.layout;
  const B = acc.bucketLayout;
  const order = traceOrder(manifest, await readCountTable(dir, "documents"), where);
  const docIndex = new Map<number, number>();
  order.forEach((d, i) => {
    if (docIndex.has(d.doc)) {
      throw new DataError(`${where}: documents lists document ${d.doc} twice.`);
    }
    docIndex.set(d.doc, i);
  });
  const layerIndex = new Map(manifest.model.moe_layers.map((layer, l) => [layer, l]));
  const vectors = order.map(() => new Float64Array(L.size));
  // Bucket of each document: its place among its domain's documents in trace order, mod buckets.
  const buckets: Float64Array[] = order.map(() => new Float64Array(0));
  const seen = new Map<string, number>();
  order.forEach((doc, d) => {
    const n = seen.get(doc.domain) ?? 0;
    const at = (n % acc.buckets) * B.size;
    buckets[d] = acc.domain(doc.domain).bucketVectors.subarray(at, at + B.size);
    buckets[d]![B.tokens]! += doc.tokens;
    seen.set(doc.domain, n + 1);
  });
  // k = 2: [M, E(E−1)/2] each document's own co-activation counts (its shuffle baseline's W_2).
  const pairs = k === 2 ? order.map(() => new Float64Array(M * B.pairCount)) : [];
  // Each table a file at a time (Spark's part files), so only one file's columns are held.
  const rowsOf = async (
    name: InputName,
    each: (d: number, l: number, i: number, t: Columns) => void,
  ) => {
    for (const path of await tableFiles(dir, name)) {
      const t = await readCountPart(path, name);
      for (let i = 0; i < t.doc!.length; i++) {
        const d = docIndex.get(t.doc![i] as number);
        if (d === undefined || order[d]!.domain !== t.domain![i]) {
          throw new DataError(
            `${where}: ${name} has a row for document ${t.doc![i]} of ${
              t.domain![i]
            }, which documents does not list.`,
          );
        }
        const l = layerIndex.get(t.layer![i] as number);
        if (l === undefined) {
          throw new DataError(
            `${where}: ${name} has layer ${
              t.layer![i]
            }, which is not in manifest.json's model.moe_layers.`,
          );
        }
        each(d, l, i, t);
      }
    }
  };
  const expert = (name: InputName, t: Columns, column: string, i: number): number => {
    const e = t[column]![i] as number;
    if (e >= E) {
      throw new DataError(`${where}: ${name} has ${column} ${e}; the model has ${E} experts.`);
    }
    return e;
  };
  await rowsOf("expert_counts", (d, l, i, t) => {
    const at = l * E + expert("expert_counts", t, "expert", i);
    const v = vectors[d]!;
    v[L.first + at] = t.first_tokens![i] as number;
    v[L.second + at] = t.second_tokens![i] as number;
    v[L.any + at] = t.any_tokens![i] as number;
    buckets[d]![B.any + at]! += t.any_tokens![i] as number;
  });
  await rowsOf("repetition", (d, l, i, t) => {
    vectors[d]![L.sameFirst + l] = t.same_first_pairs![i] as number;
  });
  await rowsOf("overlap", (d, l, i, t) => {
    const shared = t.shared![i] as number;
    if (shared > k) throw new DataError(`${where}: overlap has shared ${shared}; top_k is ${k}.`);
    vectors[d]![L.overlap + l * (k + 1) + shared] = t.pairs![i] as number;
  });
  await rowsOf("coactivation", (d, l, i, t) => {
    const a = expert("coactivation", t, "expert_i", i);
    const p = B.pairIndex[a * E + expert("coactivation", t, "expert_j", i)]!;
    if (p < 0) throw new DataError(`${where}: coactivation pairs expert ${a} with itself.`);
    const tokens = t.tokens![i] as number;
    buckets[d]![B.coact + l * B.pairCount + p]! += tokens;
    if (k === 2) pairs[d]![l * B.pairCount + p] = tokens;
  });
  await rowsOf("flow", (d, l, i, t) => {
    if (l === M - 1 || manifest.model.moe_layers[l + 1] !== t.next_layer![i]) {
      throw new DataError(
        `${where}: flow has next_layer ${t.next_layer![i]} after layer ${
          t.layer![i]
        }; expected the next MoE layer.`,
      );
    }
    const from = expert("flow", t, "expert_from", i);
    const at = B.flow + (l * E + from) * E + expert("flow", t, "expert_to", i);
    buckets[d]![at]! += t.tokens![i] as number;
  });
  // k ≥ 3 with topk_sets: per document and layer, each distinct top-k set and its tokens.
  const sets: { experts: number[]; tokens: number }[][][] = [];
  if (k >= 3 && exactSets) {
    await rowsOf("topk_sets", (d, l, i, t) => {
      const experts = t.experts![i] as number[];
      if (experts.length !== k || experts.some((e) => e >= E)) {
        throw new DataError(
          `${where}: topk_sets has the set [${experts}]; expected ${k} experts below ${E}.`,
        );
      }
      sets[d] ??= Array.from({ length: M }, () => []);
      sets[d]![l]!.push({ experts, tokens: t.tokens![i] as number });
    });
    order.forEach((doc, d) => {
      for (let l = 0; l < M; l++) {
        const n = (sets[d]?.[l] ?? []).reduce((n, s) => n + s.tokens, 0);
        if (n !== doc.tokens) {
          throw new DataError(
            `${where}: topk_sets counts ${n} tokens of document ${doc.doc} at layer ${
              manifest.model.moe_layers[l]
            }, but documents says it has ${doc.tokens}.`,
          );
        }
      }
    });
  }
  const overlapScratch = new Float64Array(k + 1);
  order.forEach((doc, d) => {
    const v = vectors[d]!;
    v[L.tokens] = doc.tokens;
    v[L.pairs] = doc.tokens - 1;
    // The shuffle baselines of shuffle.ts from the document's counts: k = 2
    // reads its own pair counts, [M, E(E−1)/2]; k ≥ 3 is exact from its top-k
    // sets per layer, or NaN without them.
    const docSets = sets[d];
    addShuffleBaselines(
      v,
      L,
      doc.tokens,
      overlapScratch,
      k === 2 ? { counts: pairs[d]!, at: 0, less: null } : null,
      docSets ? (l, W) => exactOverlaps(docSets[l]!, doc.tokens, W) : null,
    );
    acc.domain(doc.domain).appendDoc(doc.doc, v);
  });
  return acc;
}

/**
 * W_j, the ordered pairs (t, u), t ≠ u, of a document's T tokens whose top-k
 * sets share j experts, exactly, from each distinct set's token count: with
 * N_A the tokens whose set holds A, the binomial moments are
 * B_m = Σ_{t≠u} C(|S_t ∩ S_u|, m) = Σ_{|A|=m} N_A(N_A − 1) (B_0 = T(T − 1)),
 * and W_j = Σ_{m≥j} (−1)^(m−j) C(m, j) B_m. Costs 2^k per distinct set.
 */
export function exactOverlaps(
  sets: readonly { experts: readonly number[]; tokens: number }[],
  T: number,
  W: Float64Array,
): void {
  const k = W.length - 1;
  const containing = new Map<string, number>();
  for (const { experts, tokens } of sets) {
    for (let mask = 1; mask < 1 << k; mask++) {
      let key = "";
      for (let j = 0; j < k; j++) if (mask & (1 << j)) key += `${experts[j]},`;
      containing.set(key, (containing.get(key) ?? 0) + tokens);
    }
  }
  const moments = new Float64Array(k + 1);
  moments[0] = T * (T - 1);
  for (const [key, n] of containing) {
    const m = key.split(",").length - 1;
    moments[m]! += n * (n - 1);
  }
  for (let j = 0; j <= k; j++) {
    let w = 0;
    let choose = 1; // C(m, j), from m = j up
    for (let m = j; m <= k; m++) {
      w += ((m - j) % 2 === 0 ? 1 : -1) * choose * moments[m]!;
      choose = (choose * (m + 1)) / (m + 1 - j);
    }
    W[j] = w;
  }
}
