/**
 * `analyze --from-counts DIR` against `analyze TRACE`: DuckDB (embedded)
 * runs the SQL of analysis/sql/ on a synthetic Parquet trace and writes the
 * per-document tables into a folder as Spark would (DIR/<table>/part-*
 * files beside _SUCCESS and .crc files, Parquet, and CSV split into two
 * parts); the analysis of those tables must write the same CSVs as the
 * streaming analysis of the trace, byte for byte, except what the count
 * tables cannot hold, which is named here column by column.
 */
import assert from "node:assert/strict";
import { runCli } from "../tests/cli_helpers.ts";
import { syntheticCapture, syntheticDocs, syntheticModel } from "../trace/synthetic.ts";
import { TraceReader, TraceWriter } from "../trace/mod.ts";
import { parse } from "csv-parse/sync";
import { exportCountTables, EXPORTED_TABLES } from "./sql/duckdb.ts";
import { exactOverlaps } from "./from_counts.ts";
import { Rng } from "../common/random.ts";

/**
 * A trace whose documents interleave two domains and differ in length (one
 * has a single token, the others 5 to 4 + `spread`).
 */
async function writeTrace(dir: string, topK: number, spread = 20, probs = false): Promise<void> {
  const options = {
    numExperts: 6,
    topK,
    numLayers: 3,
    tokensPerDoc: 24,
    stickiness: 0.5,
    probs,
    // More documents per domain than buckets (20), so the trace order decides the buckets.
    domains: [{ name: "ArXiv", docs: 27 }, { name: "Github", docs: 25 }],
    seed: 7,
  };
  const model = { ...syntheticModel(options), moe_layers: [1, 2, 4], num_layers: 5 };
  const writer = await TraceWriter.open(dir, { model, capture: syntheticCapture(options) }, {
    rowsPerShard: 200,
  });
  const docs = [...syntheticDocs(options)];
  docs.sort((a, b) => (a.doc % 7) - (b.doc % 7) || b.doc - a.doc);
  const mk = options.numLayers * topK;
  for (const [i, doc] of docs.entries()) {
    const T = i === 3 ? 1 : 5 + (i * 7) % spread; // the top-2 test adds these up
    await writer.add({
      ...doc,
      tokens: doc.tokens.subarray(0, T),
      pieces: doc.pieces.slice(0, T),
      experts: doc.experts.subarray(0, T * mk),
      weights: doc.weights.subarray(0, T * mk),
      ...(doc.probs ? { probs: doc.probs.subarray(0, T * options.numLayers * 6) } : {}),
    });
  }
  await writer.close();
}

/** Makes DIR look as Spark leaves it: part files with long names, _SUCCESS and .crc files. */
async function sparkLike(dir: string, format: "parquet" | "csv"): Promise<void> {
  for (const name of EXPORTED_TABLES) {
    const from = `${dir}/${name}/part-00000.${format}`;
    if (format === "csv" && name === "expert_counts") {
      // Two parts, each with its header, as Spark writes a table of two partitions.
      const lines = (await Deno.readTextFile(from)).trimEnd().split("\n");
      const half = Math.floor(lines.length / 2);
      await Deno.writeTextFile(
        `${dir}/${name}/part-00000-5e1f-c000.csv`,
        lines.slice(0, half).join("\n") + "\n",
      );
      await Deno.writeTextFile(
        `${dir}/${name}/part-00001-5e1f-c000.csv`,
        [lines[0], ...lines.slice(half)].join("\n") + "\n",
      );
      await Deno.remove(from);
    } else {
      await Deno.rename(from, `${dir}/${name}/part-00000-5e1f-c000.snappy.${format}`);
    }
    await Deno.writeTextFile(`${dir}/${name}/_SUCCESS`, "");
    await Deno.writeTextFile(`${dir}/${name}/.part-00000-5e1f-c000.snappy.${format}.crc`, "junk");
  }
}

async function analyse(args: string[]): Promise<string> {
  const result = await runCli(["analyze", ...args, "--bootstrap", "30"]);
  assert.equal(result.code, 0, result.stderr);
  return result.stdout;
}

async function csvFiles(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.name.endsWith(".csv")) names.push(entry.name);
  }
  return names.sort();
}

/**
 * The (file, column) pairs whose cells differ between two analysis folders,
 * as "file:statistic:column" (statistic empty in tables without one); cells are compared in row order (the rows' keys must agree).
 */
async function differences(a: string, b: string): Promise<string[]> {
  const files = await csvFiles(a);
  assert.deepEqual(await csvFiles(b), files);
  const out = new Set<string>();
  for (const file of files) {
    const x = await Deno.readTextFile(`${a}/${file}`);
    const y = await Deno.readTextFile(`${b}/${file}`);
    if (x === y) continue;
    let rx: Record<string, string>[] = parse(x, { columns: true });
    const ry: Record<string, string>[] = parse(y, { columns: true });
    // Statistics whose rows b leaves out ("file:statistic:absent"); the other rows are compared.
    if (rx.length > 0 && "statistic" in rx[0]!) {
      const kept = new Set(ry.map((r) => r.statistic));
      for (const statistic of new Set(rx.map((r) => r.statistic))) {
        if (!kept.has(statistic)) out.add(`${file}:${statistic}:absent`);
      }
      rx = rx.filter((r) => kept.has(r.statistic));
    }
    if (rx.length !== ry.length) {
      out.add(`${file}::rows`);
      continue;
    }
    for (let i = 0; i < rx.length; i++) {
      for (const column of Object.keys(rx[i]!)) {
        if (rx[i]![column] !== ry[i]![column]) {
          out.add(`${file}:${rx[i]!.statistic ?? ""}:${column}`);
        }
      }
    }
  }
  return [...out].sort();
}

Deno.test("analyze --from-counts on Spark-like Parquet and CSV count tables writes analyze's CSVs (top-2)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-from-counts-" });
  await writeTrace(`${dir}/trace`, 2);
  const reader = await TraceReader.open(`${dir}/trace`);
  assert.ok(reader.manifest.shards.length >= 3);
  await exportCountTables(reader, `${dir}/parquet`, { threads: 2 });
  await sparkLike(`${dir}/parquet`, "parquet");
  await exportCountTables(reader, `${dir}/csv`, { threads: 2, format: "csv" });
  await sparkLike(`${dir}/csv`, "csv");
  await analyse([`${dir}/trace`, "--out", `${dir}/stream`]);
  const said = await analyse(["--from-counts", `${dir}/parquet`, "--out", `${dir}/parquet-out`]);
  assert.match(said, /no token ids, so vocabulary_specialisation\.csv has no rows/);
  // writeTrace's lengths: 1 token for the fourth document, 5 + (7i mod 20) for the others.
  const tokens = Array.from({ length: 52 }, (_, i) => i === 3 ? 1 : 5 + (i * 7) % 20)
    .reduce((a, b) => a + b);
  assert.match(
    said,
    new RegExp(`^Analysed ${tokens} tokens in 52 documents \\(2 domains\\) from `, "m"),
  );
  await analyse(["--from-counts", `${dir}/csv`, "--out", `${dir}/csv-out`]);
  // Every CSV byte-identical but vocabulary specialisation (token ids are not in the counts).
  assert.deepEqual(await differences(`${dir}/stream`, `${dir}/parquet-out`), [
    "vocabulary_specialisation.csv::rows",
  ]);
  for (const file of await csvFiles(`${dir}/stream`)) {
    const a = await Deno.readTextFile(`${dir}/parquet-out/${file}`);
    assert.ok(a === await Deno.readTextFile(`${dir}/csv-out/${file}`), file);
    if (file === "vocabulary_specialisation.csv") {
      assert.equal(a.trim().split("\n").length, 1, "header only");
      continue;
    }
    assert.ok(a === await Deno.readTextFile(`${dir}/stream/${file}`), `${file} differs`);
  }
  // The tables are not trivial: the bucket statistics have rows for both domains and all.
  const coactivation = await Deno.readTextFile(`${dir}/parquet-out/coactivation.csv`);
  for (const domain of ["ArXiv", "Github", "all"]) assert.ok(coactivation.includes(`,${domain},`));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("analyze --from-counts without topk_sets leaves out only the sampled shuffle baselines at top-3", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-from-counts-" });
  await writeTrace(`${dir}/trace`, 3);
  await exportCountTables(await TraceReader.open(`${dir}/trace`), `${dir}/counts`, {
    threads: 2,
    topkSets: false,
  });
  await analyse([`${dir}/trace`, "--out", `${dir}/stream`]);
  const said = await analyse(["--from-counts", `${dir}/counts`, "--out", `${dir}/counts-out`]);
  assert.match(said, /with top_k = 3: the within-document shuffle baselines of set_overlap.*empty/);
  // The pass samples token pairs for these baselines at k ≥ 3; the counts leave them empty,
  // and with them the tests against them (BH families are per statistic: no other q moves).
  assert.deepEqual(await differences(`${dir}/stream`, `${dir}/counts-out`), [
    "cosmoes.csv:ex_rep:baseline_marginal",
    "cosmoes.csv:ex_rep:p_value",
    "cosmoes.csv:ex_rep:q_value",
    "cosmoes.csv:h_norm:baseline_marginal",
    "cosmoes.csv:h_norm:p_value",
    "cosmoes.csv:h_norm:q_value",
    "overlap_distribution.csv::baseline_marginal",
    "repetition.csv:set_overlap:baseline_marginal",
    "repetition.csv:set_overlap:p_value",
    "repetition.csv:set_overlap:q_value",
    "summary.csv:ex_rep:baseline_marginal",
    "summary.csv:h_norm:baseline_marginal",
    "summary.csv:set_overlap:baseline_marginal",
    "vocabulary_specialisation.csv::rows",
  ]);
  const rows: Record<string, string>[] = parse(
    await Deno.readTextFile(`${dir}/counts-out/repetition.csv`),
    { columns: true },
  );
  for (const row of rows) {
    const left = row.statistic === "set_overlap";
    assert.equal(row.baseline_marginal === "" && row.p_value === "" && row.q_value === "", left);
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("analyze --from-counts refuses bad input in one sentence", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-from-counts-" });
  await writeTrace(`${dir}/trace`, 2);
  const counts = `${dir}/counts`;
  await exportCountTables(await TraceReader.open(`${dir}/trace`), counts, { format: "csv" });
  const run = (args: string[]) => runCli(["analyze", ...args, "--out", `${dir}/out`, "--force"]);
  const neither = await run([]);
  assert.equal(neither.code, 2);
  assert.match(
    neither.stderr,
    /^moetrace: analyze needs a TRACE argument or --from-counts DIR/,
  );
  const both = await run([`${dir}/trace`, "--from-counts", counts]);
  assert.equal(both.code, 2);
  assert.match(
    both.stderr,
    /^moetrace: analyze takes a TRACE argument or --from-counts DIR, not both\.$/,
  );
  // A cell that is not a count names its file and column.
  const repetition = `${counts}/repetition/part-00000.csv`;
  const text = await Deno.readTextFile(repetition);
  const lines = text.split("\n");
  const cells = lines[1]!.split(",");
  cells[4] = "-3";
  await Deno.writeTextFile(repetition, [lines[0], cells.join(","), ...lines.slice(2)].join("\n"));
  const negative = await run(["--from-counts", counts]);
  assert.equal(negative.code, 1);
  assert.equal(
    negative.stderr,
    `moetrace: ${repetition}: column same_first_pairs holds "-3"; expected an integer ≥ 0.`,
  );
  await Deno.writeTextFile(repetition, text);
  // The tables of part of the trace: its documents do not add up to the manifest's rows.
  const documents = `${counts}/documents/part-00000.csv`;
  const documentsText = await Deno.readTextFile(documents);
  const docs = documentsText.trimEnd().split("\n");
  await Deno.writeTextFile(documents, docs.slice(0, -1).join("\n") + "\n");
  const part = await run(["--from-counts", counts]);
  assert.equal(part.code, 1);
  assert.match(
    part.stderr,
    /^moetrace: --from-counts .*: documents counts \d+ tokens but manifest\.json's shards hold \d+; the tables come from another trace or from part of it\.$/,
  );
  await Deno.writeTextFile(documents, documentsText);
  await Deno.remove(`${counts}/manifest.json`);
  assert.equal(
    (await run(["--from-counts", counts])).stderr,
    `moetrace: --from-counts ${counts} has no manifest.json: copy the trace's manifest.json beside the count tables.`,
  );
  await Deno.copyFile(`${dir}/trace/manifest.json`, `${counts}/manifest.json`);
  await Deno.remove(`${counts}/flow`, { recursive: true });
  const missing = await run(["--from-counts", counts]);
  assert.equal(missing.code, 1);
  assert.match(
    missing.stderr,
    /has no flow table: expected flow\.parquet, flow\.csv or a folder flow\//,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("analyze --from-counts with topk_sets gives analyze's exact top-3 baselines of short documents", async () => {
  // Documents of at most 16 tokens: the streaming pass counts every token pair (no sampling).
  const dir = await Deno.makeTempDir({ prefix: "moetrace-from-counts-" });
  await writeTrace(`${dir}/trace`, 3, 12);
  await exportCountTables(await TraceReader.open(`${dir}/trace`), `${dir}/counts`, { threads: 2 });
  await sparkLike(`${dir}/counts`, "parquet");
  await Deno.rename(
    `${dir}/counts/topk_sets/part-00000.parquet`,
    `${dir}/counts/topk_sets/part-00000-5e1f-c000.snappy.parquet`,
  );
  await analyse([`${dir}/trace`, "--out", `${dir}/stream`]);
  const said = await analyse(["--from-counts", `${dir}/counts`, "--out", `${dir}/counts-out`]);
  assert.match(said, /are exact \(from topk_sets/);
  assert.deepEqual(await differences(`${dir}/stream`, `${dir}/counts-out`), [
    "vocabulary_specialisation.csv::rows",
  ]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("exactOverlaps counts the ordered token pairs by shared experts as a double loop does", () => {
  const rng = new Rng(3);
  for (const k of [3, 4, 6]) {
    // 40 tokens, top-k of 8: many repeated sets and every overlap size.
    const tokens = Array.from({ length: 40 }, () => {
      const set = new Set<number>();
      while (set.size < k) set.add(rng.int(8));
      return [...set].sort((a, b) => a - b);
    });
    const expected = new Float64Array(k + 1);
    for (let t = 0; t < tokens.length; t++) {
      for (let u = 0; u < tokens.length; u++) {
        if (t !== u) expected[tokens[t]!.filter((e) => tokens[u]!.includes(e)).length]!++;
      }
    }
    const counts = new Map<string, number>();
    for (const set of tokens) counts.set(set.join(" "), (counts.get(set.join(" ")) ?? 0) + 1);
    const sets = [...counts].map(([key, n]) => ({
      experts: key.split(" ").map(Number),
      tokens: n,
    }));
    const W = new Float64Array(k + 1);
    exactOverlaps(sets, tokens.length, W);
    assert.deepEqual([...W], [...expected], `k = ${k}`);
  }
});

Deno.test("analyze --from-counts with topk_sets on long documents and probs: the columns that differ", async () => {
  // Documents of up to 44 tokens: the pass samples token pairs for the top-3 shuffle baselines.
  const dir = await Deno.makeTempDir({ prefix: "moetrace-from-counts-" });
  await writeTrace(`${dir}/trace`, 3, 40, true);
  await exportCountTables(await TraceReader.open(`${dir}/trace`), `${dir}/counts`, { threads: 2 });
  await analyse([`${dir}/trace`, "--out", `${dir}/stream`]);
  const said = await analyse(["--from-counts", `${dir}/counts`, "--out", `${dir}/counts-out`]);
  assert.match(said, /they hold no sums of the router distribution, so l_norm, bies/);
  assert.match(said, /are exact \(from topk_sets/);
  const router = ["bies", "l_norm", "router_entropy", "topk_margin", "topk_mass"];
  const summaryColumns = [
    "baseline",
    "ci_high",
    "ci_low",
    "n_clusters",
    "note",
    "plug_in",
    "value",
  ];
  assert.deepEqual(
    await differences(`${dir}/stream`, `${dir}/counts-out`),
    [
      // Router statistics: no rows of their own, and "absent" in the summary.
      "cosmoes.csv:bies:absent",
      "cosmoes.csv:l_norm:absent",
      "load_balance.csv:router_entropy:absent",
      "load_balance.csv:topk_margin:absent",
      "load_balance.csv:topk_mass:absent",
      ...router.flatMap((name) => summaryColumns.map((c) => `summary.csv:${name}:${c}`)),
      // The top-3 shuffle baselines: exact from the counts, sampled by the pass.
      ...["ex_rep", "h_norm"].flatMap((name) =>
        ["baseline_marginal", "p_value", "q_value"].map((c) => `cosmoes.csv:${name}:${c}`)
      ),
      "overlap_distribution.csv::baseline_marginal",
      "repetition.csv:set_overlap:baseline_marginal",
      "repetition.csv:set_overlap:p_value",
      "repetition.csv:set_overlap:q_value",
      "summary.csv:ex_rep:baseline_marginal",
      "summary.csv:h_norm:baseline_marginal",
      "summary.csv:set_overlap:baseline_marginal",
      "vocabulary_specialisation.csv::rows",
    ].sort(),
  );
  // The exact baselines and the pass's estimates agree to within its sampling error.
  const read = async (folder: string): Promise<Record<string, string>[]> =>
    parse(await Deno.readTextFile(`${folder}/repetition.csv`), { columns: true });
  const sampled = await read(`${dir}/stream`);
  const exact = await read(`${dir}/counts-out`);
  for (const [i, row] of exact.entries()) {
    if (row.statistic !== "set_overlap") continue;
    const gap = Math.abs(Number(row.baseline_marginal) - Number(sampled[i]!.baseline_marginal));
    assert.ok(gap > 0 && gap < 0.02, `set_overlap baseline at ${row.layer} ${row.domain}: ${gap}`);
  }
  await Deno.remove(dir, { recursive: true });
});
