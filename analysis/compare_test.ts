/**
 * `moetrace compare` against `analyze` run on each side alone: the values are
 * the analyses' own cells, the difference is B − A, and the interval is the
 * MOVER interval recomputed here from the two analyses' intervals. Routing
 * that differs by construction (uniform A, sticky B) shows up as a repetition
 * difference whose interval excludes 0, while expert shares (1/E on both
 * sides) mostly do not differ.
 */
import assert from "node:assert/strict";
import { parse } from "csv-parse/sync";
import { runCli } from "../tests/cli_helpers.ts";
import { Rng } from "../common/random.ts";
import { TraceWriter } from "../trace/mod.ts";
import {
  syntheticCapture,
  syntheticDocs,
  syntheticModel,
  type SyntheticOptions,
  writeSyntheticTrace,
} from "../trace/synthetic.ts";

type Row = Record<string, string>;

const TABLES = [
  "expert_shares",
  "repetition",
  "overlap_distribution",
  "cosmoes",
  "load_balance",
  "coactivation",
  "vocabulary_specialisation",
  "layer_flow",
  "flow_information",
  "domain_divergence",
  "summary",
];

const SMALL: SyntheticOptions = { numExperts: 4, topK: 2, numLayers: 3, tokensPerDoc: 40 };

async function readCsv(path: string): Promise<Row[]> {
  return parse(await Deno.readTextFile(path), { columns: true }) as Row[];
}

async function cli(args: string[]): Promise<string> {
  const result = await runCli(args);
  assert.equal(result.code, 0, `${args.join(" ")}: ${result.stderr}`);
  return result.stdout;
}

const num = (text: string | undefined) => (text === undefined || text === "" ? NaN : Number(text));
const near = (x: number, y: number) => Math.abs(x - y) <= 1e-9 * Math.max(1, Math.abs(y));

Deno.test("compare of two traces: each side is its analyze output, difference B − A, MOVER interval", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-compare-test-" });
  try {
    await writeSyntheticTrace(`${dir}/uniform`, {
      ...SMALL,
      seed: 1,
      domains: [{ name: "ArXiv", docs: 10 }, { name: "Github", docs: 10 }],
    });
    await writeSyntheticTrace(`${dir}/sticky`, {
      ...SMALL,
      seed: 2,
      stickiness: 0.6,
      domains: [{ name: "ArXiv", docs: 10 }, { name: "PubMed", docs: 12 }],
    });
    const bootstrap = ["--bootstrap", "200", "--seed", "3"];
    await cli(["analyze", `${dir}/uniform`, "--out", `${dir}/analysis_a`, ...bootstrap]);
    await cli(["analyze", `${dir}/sticky`, "--out", `${dir}/analysis_b`, ...bootstrap]);
    const printed = await cli([
      "compare",
      `${dir}/uniform`,
      `${dir}/sticky`,
      "--out",
      `${dir}/compare`,
      ...bootstrap,
    ]);
    assert.match(printed, /Compared uniform \(800 tokens\) with sticky \(880 tokens\)/);

    for (const table of TABLES) {
      const rows = await readCsv(`${dir}/compare/${table}.csv`);
      const sides = {
        a: await readCsv(`${dir}/analysis_a/${table}.csv`),
        b: await readCsv(`${dir}/analysis_b/${table}.csv`),
      };
      // The compare analyses of the traces are the analyses made alone.
      for (const side of ["a", "b"] as const) {
        assert.equal(
          await Deno.readTextFile(`${dir}/compare/${side}/${table}.csv`),
          await Deno.readTextFile(`${dir}/analysis_${side}/${table}.csv`),
          `${side}/${table}.csv`,
        );
      }
      if (sides.a.length + sides.b.length === 0) continue;
      const header = Object.keys(rows[0] ?? {});
      const keys = header.slice(0, header.indexOf("quantity"));
      assert.ok(keys.includes("layer") || table === "summary", `${table} keys ${keys}`);
      const keyOf = (r: Row) => keys.map((k) => r[k]).join("|");
      const quantities = [...new Set(rows.map((r) => r.quantity!))];
      const byKey = new Map(rows.map((r) => [`${keyOf(r)}|${r.quantity}`, r]));
      // Every cell of every compared column of both analyses appears as value_a or value_b.
      for (const side of ["a", "b"] as const) {
        for (const source of sides[side]) {
          for (const q of quantities) {
            const row = byKey.get(`${keyOf(source)}|${q}`);
            assert.ok(row, `${table}: no compare row for ${keyOf(source)} ${q}`);
            assert.equal(row[`value_${side}`], source[q], `${table} ${keyOf(source)} ${q}`);
            assert.equal(row[`n_tokens_${side}`], source.n_tokens);
          }
        }
      }
      // No invented rows: each key is a row of A or of B.
      const sourceKeys = new Set([...sides.a, ...sides.b].map(keyOf));
      for (const r of rows) assert.ok(sourceKeys.has(keyOf(r)), `${table}: extra row ${keyOf(r)}`);
      for (const r of rows) {
        const a = num(r.value_a);
        const b = num(r.value_b);
        if (!Number.isFinite(a) || !Number.isFinite(b)) {
          assert.equal(r.difference, "", `${table}: difference without both sides`);
          continue;
        }
        assert.ok(near(num(r.difference), b - a), `${table}: ${r.difference} vs ${b - a}`);
        // MOVER: the lower half-width of B − A joins B's lower and A's upper half-widths.
        const [la, ua, lb, ub] = [r.ci_low_a, r.ci_high_a, r.ci_low_b, r.ci_high_b].map(num);
        if (![la, ua, lb, ub].every(Number.isFinite)) {
          assert.equal(r.difference_ci_low, "", `${table}: interval without both intervals`);
          continue;
        }
        const down = Math.sqrt((b - lb!) ** 2 + (ua! - a) ** 2);
        const up = Math.sqrt((ub! - b) ** 2 + (a - la!) ** 2);
        assert.ok(near(num(r.difference_ci_low), b - a - down), `${table} low`);
        assert.ok(near(num(r.difference_ci_high), b - a + up), `${table} high`);
        const excludes = b - a - down > 0 || b - a + up < 0;
        assert.equal(r.interval_excludes_zero, String(excludes));
      }
    }

    // Known differences: sticky B repeats its first choice far more; shares stay 1/E on both sides.
    const summary = await readCsv(`${dir}/compare/summary.csv`);
    const repeat = summary.find((r) =>
      r.statistic === "first_choice_repeat" && r.domain === "all"
    )!;
    assert.ok(num(repeat.value_a) < 0.4 && num(repeat.value_b) > 0.6, JSON.stringify(repeat));
    assert.ok(num(repeat.difference_ci_low) > 0.3, JSON.stringify(repeat));
    const shares = (await readCsv(`${dir}/compare/expert_shares.csv`)).filter((r) =>
      r.domain === "ArXiv"
    );
    const differing = shares.filter((r) => r.interval_excludes_zero === "true").length;
    assert.ok(differing <= 0.2 * shares.length, `${differing} of ${shares.length} shares differ`);
    // A domain in one side only has the other side empty.
    const github = summary.filter((r) => r.domain === "Github");
    assert.ok(github.every((r) => r.value_b === "" && r.n_docs_b === "" && r.n_docs_a === "10"));
    assert.ok(github.some((r) => r.value_a !== ""));

    const info = JSON.parse(await Deno.readTextFile(`${dir}/compare/compare.json`));
    assert.equal(info.format, "moetrace-compare/1");
    assert.equal(info.a.label, "uniform");
    assert.equal(info.b.kind, "trace");
    assert.equal(info.a.analysis, "a");
    assert.equal(info.interval.method, "mover");
    assert.equal(info.files.length, TABLES.length);
    assert.equal(info.summary.length, summary.length);
    const jsonRepeat = info.summary.find((r: Row) =>
      r.statistic === "first_choice_repeat" && r.domain === "all"
    );
    assert.equal(jsonRepeat.value_b, num(repeat.value_b));

    // The analysis folders compare to the same CSVs as the traces they came from.
    await cli([
      "compare",
      `${dir}/analysis_a`,
      `${dir}/analysis_b`,
      "--out",
      `${dir}/compare_folders`,
      "--labels",
      "uniform,sticky",
    ]);
    for (const table of TABLES) {
      assert.equal(
        await Deno.readTextFile(`${dir}/compare_folders/${table}.csv`),
        await Deno.readTextFile(`${dir}/compare/${table}.csv`),
        table,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const ROOT = new URL("..", import.meta.url).pathname;

/**
 * Two traces of the same documents: A is sticky synthetic routing; B is A
 * with, at every MoE layer, each token's experts replaced by the previous
 * token's with probability 0.3 (more repetition, strongly tied to A's
 * documents). Returns A's and B's first choices at MoE layer 0 per ArXiv document.
 */
async function writePairedTraces(dir: string): Promise<{ a: number[][]; b: number[][] }> {
  const options: SyntheticOptions = {
    ...SMALL,
    stickiness: 0.3,
    seed: 5,
    domains: [{ name: "ArXiv", docs: 10 }, { name: "Github", docs: 8 }],
  };
  const { M, k } = { M: SMALL.numLayers!, k: SMALL.topK! };
  const firsts = { a: [] as number[][], b: [] as number[][] };
  const writers = {
    a: await TraceWriter.open(`${dir}/base`, {
      model: syntheticModel(options),
      capture: syntheticCapture(options),
    }),
    b: await TraceWriter.open(`${dir}/tuned`, {
      model: syntheticModel(options),
      capture: syntheticCapture(options),
    }),
    // B's routing over documents that differ in one token id only: ids and lengths match.
    other: await TraceWriter.open(`${dir}/other`, {
      model: syntheticModel(options),
      capture: syntheticCapture(options),
    }),
  };
  const rng = new Rng(11);
  for (const doc of syntheticDocs(options)) {
    const experts = doc.experts.slice();
    const T = doc.tokens.length;
    for (let t = 1; t < T; t++) {
      for (let l = 0; l < M; l++) {
        if (rng.next() >= 0.3) continue;
        const at = (t * M + l) * k;
        experts.copyWithin(at, at - M * k, at - M * k + k);
      }
    }
    await writers.a.add(doc);
    await writers.b.add({ ...doc, experts });
    const tokens = doc.tokens.slice();
    if (doc.doc === 3) tokens[5] = tokens[5]! + 1;
    await writers.other.add({ ...doc, tokens, experts });
    if (doc.domain === "ArXiv") {
      firsts.a.push(Array.from({ length: T }, (_, t) => doc.experts[t * M * k]!));
      firsts.b.push(Array.from({ length: T }, (_, t) => experts[t * M * k]!));
    }
  }
  for (const writer of Object.values(writers)) await writer.close();
  return firsts;
}

Deno.test("compare of two traces of the same documents: paired jackknife intervals, checked by hand", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-compare-test-" });
  try {
    const firsts = await writePairedTraces(dir);
    await cli(["compare", `${dir}/base`, `${dir}/tuned`, "--out", `${dir}/paired`]);
    await cli([
      "compare",
      `${dir}/base`,
      `${dir}/tuned`,
      "--out",
      `${dir}/independent`,
      "--pairing",
      "none",
    ]);
    const info = JSON.parse(await Deno.readTextFile(`${dir}/paired/compare.json`));
    assert.equal(info.interval.paired, true, info.interval.pairing);
    const row = (rows: Row[]) =>
      rows.find((r) =>
        r.statistic === "first_choice_repeat" && r.moe_layer === "0" && r.domain === "ArXiv"
      )!;
    const paired = row(await readCsv(`${dir}/paired/repetition.csv`));
    const independent = row(await readCsv(`${dir}/independent/repetition.csv`));
    assert.equal(paired.difference_interval, "paired jackknife");
    assert.equal(independent.difference_interval, "mover");
    assert.equal(paired.difference, independent.difference);

    // The delete-one-document jackknife of θ_B − θ_A, by hand, over ArXiv's 10 documents.
    const same = (first: number[]) => first.slice(1).filter((e, t) => e === first[t]).length;
    const pairs = firsts.a.map((f) => f.length - 1);
    const [sameA, sameB] = [firsts.a.map(same), firsts.b.map(same)];
    const total = (xs: number[]) => xs.reduce((x, y) => x + y, 0);
    const d = total(sameB) / total(pairs) - total(sameA) / total(pairs);
    assert.ok(near(num(paired.difference), d));
    const G = pairs.length;
    const deleted = pairs.map((_, j) => {
      const n = total(pairs) - pairs[j]!;
      return (total(sameB) - sameB[j]!) / n - (total(sameA) - sameA[j]!) / n;
    });
    const mean = total(deleted) / G;
    const se = Math.sqrt(((G - 1) / G) * total(deleted.map((x) => (x - mean) ** 2)));
    const t9 = 2.2621571627982053; // Student's t, 0.975 quantile, 9 degrees of freedom
    assert.ok(near(num(paired.difference_ci_low), d - t9 * se), `${paired.difference_ci_low}`);
    assert.ok(near(num(paired.difference_ci_high), d + t9 * se), `${paired.difference_ci_high}`);
    // Shared documents make the paired interval the narrower one.
    const width = (r: Row) => num(r.difference_ci_high) - num(r.difference_ci_low);
    assert.ok(
      width(paired) < 0.8 * width(independent),
      `${width(paired)} vs ${width(independent)}`,
    );

    // Documents with the same ids and lengths but another token are not the same documents.
    const other = JSON.parse(
      await cli(["compare", `${dir}/base`, `${dir}/other`, "--out", `${dir}/o`, "--json"]),
    );
    assert.ok(other.notes.every((n: string) => !/difference intervals are paired/.test(n)));
    const otherInfo = JSON.parse(await Deno.readTextFile(`${dir}/o/compare.json`));
    assert.equal(otherInfo.interval.pairing, "not paired: their documents' token ids differ");

    // Rows the paired method does not cover keep MOVER.
    const cosmoes = await readCsv(`${dir}/paired/cosmoes.csv`);
    assert.ok(
      cosmoes.some((r) => r.statistic === "delta_uniform" && r.difference_interval === "mover"),
    );
    assert.ok(
      cosmoes.some((r) => r.statistic === "ex_rep" && r.difference_interval === "paired jackknife"),
    );
    const coactivation = await readCsv(`${dir}/paired/coactivation.csv`);
    assert.ok(coactivation.every((r) => r.difference_interval !== "paired jackknife"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("compare of two tiny-moe captures with different document samples: both values and B − A", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-compare-test-" });
  try {
    for (const seed of [1, 2]) {
      await cli([
        "capture",
        "--model",
        `${ROOT}fixtures/models/tiny-moe`,
        "--corpus",
        `${ROOT}fixtures/corpus/fixture.jsonl`,
        "--out",
        `${dir}/seed${seed}`,
        "--max-tokens",
        "24",
        "--docs-per-domain",
        "3",
        "--seed",
        String(seed),
      ]);
    }
    const printed = await cli([
      "compare",
      `${dir}/seed1`,
      `${dir}/seed2`,
      "--out",
      `${dir}/compare`,
      "--json",
    ]);
    const summaryJson = JSON.parse(printed);
    assert.equal(summaryJson.a.label, "seed1");
    assert.equal(summaryJson.tables.length, 11);
    const summary = await readCsv(`${dir}/compare/summary.csv`);
    const all = summary.filter((r) => r.domain === "all" && r.value_a !== "");
    assert.ok(all.length >= 5, `${all.length} summary rows of all`);
    for (const r of all) {
      assert.ok(Number.isFinite(num(r.value_b)), JSON.stringify(r));
      assert.ok(near(num(r.difference), num(r.value_b) - num(r.value_a)), JSON.stringify(r));
      assert.ok(num(r.difference_ci_low) <= num(r.difference), JSON.stringify(r));
      assert.ok(num(r.difference) <= num(r.difference_ci_high), JSON.stringify(r));
      assert.equal(r.n_docs_a, "24");
      assert.equal(r.n_docs_b, "24");
    }
    // Different documents give different values somewhere.
    assert.ok(all.some((r) => r.value_a !== r.value_b));
    const info = JSON.parse(await Deno.readTextFile(`${dir}/compare/compare.json`));
    assert.equal(info.a.model, info.b.model);
    assert.ok(info.notes.some((n: string) => /paired/.test(n)), info.notes.join(" | "));
    // Same corpus and options, but other documents: not paired.
    assert.equal(info.interval.paired, false);
    assert.match(info.interval.pairing, /^not paired: document \d+ of /);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("compare refuses a wrong number of inputs, an input that is neither, and a busy folder", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-compare-test-" });
  try {
    await writeSyntheticTrace(`${dir}/trace`, { ...SMALL, domains: [{ name: "ArXiv", docs: 3 }] });
    const one = await runCli(["compare", `${dir}/trace`, "--out", `${dir}/out`]);
    assert.equal(one.code, 2);
    assert.match(one.stderr, /compare needs exactly two inputs .*got 1\./);
    await Deno.mkdir(`${dir}/empty`);
    const neither = await runCli(["compare", `${dir}/trace`, `${dir}/empty`, "--out", `${dir}/o`]);
    assert.equal(neither.code, 1);
    assert.match(neither.stderr, /empty is neither a trace \(no manifest\.json\) nor an analyze/);
    // An analysis from before moe_layer existed cannot be joined on it: say so, and what to do.
    await cli(["analyze", `${dir}/trace`, "--out", `${dir}/old`, "--bootstrap", "0"]);
    const shares = await Deno.readTextFile(`${dir}/old/expert_shares.csv`);
    await Deno.writeTextFile(
      `${dir}/old/expert_shares.csv`,
      shares.split("\n").map((line) => line.split(",").toSpliced(1, 1).join(",")).join("\n"),
    );
    const old = await runCli(["compare", `${dir}/old`, `${dir}/trace`, "--out", `${dir}/o2`]);
    assert.equal(old.code, 1);
    // Refused before B's trace was analysed: nothing was written.
    assert.equal(await Deno.stat(`${dir}/o2`).then(() => true, () => false), false);
    assert.match(
      old.stderr,
      /old\/expert_shares\.csv lacks the column moe_layer; rerun analyze with this version of moetrace\./,
    );
    await Deno.writeTextFile(`${dir}/busy.txt`, "x");
    const busy = await runCli(["compare", `${dir}/trace`, `${dir}/trace`, "--out", dir]);
    assert.equal(busy.code, 2);
    assert.match(busy.stderr, /holds files compare does not write \(busy\.txt, empty, old/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
