/**
 * The report answers questions (issue 21): key findings first, each equal to
 * the CSV row the test picks itself; a definition beside every summary
 * statistic; the simulation results table; figures of load balance, router
 * confidence, vocabulary specialisation and prefetch accuracy whose captions
 * name their baselines; --layers and --capacity redraw the figures that pick
 * a layer or a capacity; --compare shows `moetrace compare`'s output.
 */
import assert from "node:assert/strict";
import { parse } from "csv-parse/sync";
import { writeSyntheticTrace } from "../trace/synthetic.ts";
import { runCli } from "../tests/cli_helpers.ts";
import { STATISTIC_DEFINITIONS } from "./definitions.ts";

type Row = Record<string, string>;

async function csv(path: string): Promise<Row[]> {
  return parse(await Deno.readTextFile(path), { columns: true }) as Row[];
}

/** Text of HTML with tags dropped and character references decoded. */
function textOf(html: string): string {
  return html.replace(/<[^>]*>/g, "").replace(/&#(\d+);/g, (_, c) => String.fromCharCode(+c));
}

/** The element carrying `attribute` (its opening tag up to the matching close of `tag`). */
function element(html: string, tag: string, attribute: string): string {
  const start = html.indexOf(`<${tag} ${attribute}`);
  assert.ok(start >= 0, `no <${tag} ${attribute}>`);
  const end = html.indexOf(`</${tag}>`, start);
  return html.slice(start, end);
}

const pct = (v: string | number) => `${(100 * Number(v)).toFixed(1)}%`;

async function run(args: string[]): Promise<void> {
  const result = await runCli(args);
  assert.equal(result.code, 0, `${args[0]}: ${result.stderr}`);
}

async function pipeline(dir: string, stickiness: number, seed: number): Promise<void> {
  await writeSyntheticTrace(`${dir}/trace`, {
    numLayers: 3,
    domains: [{ name: "A", docs: 5 }, { name: "B", docs: 5 }, { name: "C", docs: 5 }],
    tokensPerDoc: 50,
    stickiness,
    probs: true,
    lookahead: 1,
    seed,
    vocabSize: 20, // token ids recur often enough for vocabulary specialisation
  });
  await run(["analyze", `${dir}/trace`, "--out", `${dir}/analysis`, "--bootstrap", "30"]);
  await run([
    "simulate",
    `${dir}/trace`,
    "--out",
    `${dir}/simulation`,
    "--policy",
    "lru,fifo,belady",
    "--capacity",
    "2,4,6",
    "--prefetch",
    "none,speculative,oracle",
  ]);
}

Deno.test("key findings, definitions, results table and the new figures come from the CSVs", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-report-findings-" });
  try {
    await pipeline(dir, 0.4, 3);
    const layers = [
      ...new Set((await csv(`${dir}/analysis/expert_shares.csv`)).map((r) => r.layer!)),
    ];
    const chosenLayer = layers[1]!;
    await run([
      "report",
      "--analysis",
      `${dir}/analysis`,
      "--simulation",
      `${dir}/simulation`,
      "--out",
      `${dir}/report.html`,
      "--layers",
      chosenLayer,
      "--capacity",
      "4",
    ]);
    const html = await Deno.readTextFile(`${dir}/report.html`);
    const sections = [...html.matchAll(/<section id="([a-z]+)"/g)].map((m) => m[1]);
    assert.equal(sections[0], "findings", "key findings come first");

    // The most specialised domain and layer: the largest one-against-the-rest JSD.
    const divergence = (await csv(`${dir}/analysis/domain_divergence.csv`))
      .filter((r) => r.comparison === "one_vs_rest");
    const top = divergence.reduce((a, b) => Number(b.jsd) > Number(a.jsd) ? b : a);
    const specialisation = element(html, "li", 'data-finding="specialisation"');
    assert.match(
      specialisation,
      new RegExp(`data-layer="${top.layer}" data-domain="${top.domain_a}"`),
    );
    assert.ok(
      textOf(specialisation).includes(`${Number(top.jsd).toPrecision(3)} bits`),
      textOf(specialisation),
    );

    // Repetition against both baselines: summary.csv's corpus row.
    const summary = await csv(`${dir}/analysis/summary.csv`);
    for (const statistic of ["first_choice_repeat", "set_overlap"]) {
      const row = summary.find((r) =>
        r.statistic === statistic && r.domain === "all" && r.layer === "all"
      )!;
      const text = textOf(element(html, "li", `data-finding="${statistic}"`));
      for (const column of ["value", "ci_low", "ci_high", "baseline", "baseline_marginal"]) {
        assert.ok(
          text.includes(pct(row[column]!)),
          `${statistic} ${column} ${pct(row[column]!)}: ${text}`,
        );
      }
      const points = ((Number(row.value) - Number(row.baseline_marginal)) * 100).toFixed(1);
      assert.ok(text.includes(`${points} points of locality`), text);
    }

    // Vocabulary specialisation at the layer furthest above its shuffle baseline.
    const vocabulary = (await csv(`${dir}/analysis/vocabulary_specialisation.csv`))
      .filter((r) => r.domain === "all");
    const excess = (r: Row) => Number(r.mean_specialisation) - Number(r.baseline_marginal);
    const best = vocabulary.reduce((a, b) => excess(b) > excess(a) ? b : a);
    const vocab = element(html, "li", 'data-finding="vocabulary"');
    assert.match(vocab, new RegExp(`data-layer="${best.layer}"`));
    assert.ok(textOf(vocab).includes(pct(best.mean_specialisation!)));

    // The best online policy per capacity: least ms/token among rows that do not know the future.
    const simulation = (await csv(`${dir}/simulation/simulation.csv`)).filter((r) =>
      r.layer === "all"
    );
    assert.ok("ms_per_token_ci_low" in simulation[0]!, "simulate wrote intervals");
    const policy = element(html, "li", 'data-finding="policy"');
    for (const capacity of ["2", "4", "6"]) {
      const online = simulation.filter((r) =>
        r.capacity === capacity && r.policy !== "belady" && r.prefetch !== "oracle"
      );
      const cheapest = online.reduce((a, b) =>
        Number(b.ms_per_token) < Number(a.ms_per_token) ? b : a
      );
      const row = /<tr data-capacity="(\d+)">(.*?)<\/tr>/g;
      const cells = [...policy.matchAll(row)].find((m) => m[1] === capacity)?.[2];
      assert.ok(cells, `capacity ${capacity} has a row`);
      const values = [...cells.matchAll(/<td>([^<]*)<\/td>/g)].map((m) => m[1]);
      assert.equal(values[1], `${cheapest.policy} + ${cheapest.prefetch}`, `capacity ${capacity}`);
      assert.equal(values[2], Number(cheapest.ms_per_token).toPrecision(4));
      assert.equal(values[4], pct(cheapest.hit_rate!));
      // simulate's bootstrap interval of ms/token, when it wrote one.
      const interval = cheapest.ms_per_token_ci_low
        ? `[${Number(cheapest.ms_per_token_ci_low).toPrecision(4)}, ${
          Number(cheapest.ms_per_token_ci_high).toPrecision(4)
        }]`
        : "–";
      assert.equal(values[3], interval);
    }

    // Every summary statistic is defined where the summary is shown.
    const facts = element(html, "section", 'id="facts"');
    for (const statistic of new Set(summary.map((r) => r.statistic!))) {
      assert.ok(STATISTIC_DEFINITIONS[statistic], `${statistic} has a definition`);
      assert.ok(facts.includes(`<dt>${statistic}</dt>`), `${statistic} is defined in the report`);
    }

    // The results table: every whole-model row at the chosen capacity.
    const cache = element(html, "section", 'id="cache"');
    const results = cache.slice(cache.indexOf("Simulation results"));
    const resultRows = results.slice(0, results.indexOf("</table>")).match(/<tr><td>/g) ?? [];
    assert.equal(resultRows.length, simulation.filter((r) => r.capacity === "4").length);

    // The report's own figures, with their baselines named; --layers and --capacity redraw.
    const captions = new Map(
      [...html.matchAll(/<figcaption><strong>([^<]*)\.<\/strong>(.*?)<\/figcaption>/gs)]
        .map((m) => [textOf(m[1]!), textOf(m[2]!)]),
    );
    for (
      const title of [
        "Load balance per layer",
        "Router confidence per layer",
        "Vocabulary specialisation per layer",
        "Prefetch accuracy per layer",
        `Expert shares per domain at layer ${chosenLayer}`,
        `Expert co-activation at layer ${chosenLayer}`,
        "Hit rate per layer at capacity 4",
      ]
    ) {
      assert.ok(captions.has(title), `figure "${title}" in ${[...captions.keys()].join(" | ")}`);
      assert.match(captions.get(title)!, /baseline/, `${title} names its baseline`);
    }
    assert.ok(!captions.has("Expert shares per domain"), "the figure --layers replaces is gone");
    assert.equal([...captions.keys()].filter((t) => t.startsWith("Hit rate per layer")).length, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--layers and --capacity that the CSVs do not hold are one sentence", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-report-findings-" });
  try {
    await pipeline(dir, 0.2, 4);
    const base = [
      "report",
      "--analysis",
      `${dir}/analysis`,
      "--simulation",
      `${dir}/simulation`,
      "--out",
      `${dir}/r.html`,
    ];
    for (
      const [flag, value, message] of [
        [
          "--layers",
          "99",
          /--layers of report: layer "99" is not in .*expert_shares\.csv; it has layers 0, 1, 2\./,
        ],
        [
          "--capacity",
          "5",
          /--capacity of report: "5" is not in .*simulation\.csv; it has capacities 2, 4, 6\./,
        ],
      ] as const
    ) {
      const result = await runCli([...base, flag, value]);
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, message);
      assert.equal(result.stderr.trim().split("\n").length, 1);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("report --compare shows compare's summary side by side as compare wrote it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-report-compare-" });
  try {
    await pipeline(`${dir}/a`, 0.1, 5);
    await writeSyntheticTrace(`${dir}/b/trace`, {
      numLayers: 3,
      domains: [{ name: "A", docs: 5 }, { name: "B", docs: 5 }, { name: "C", docs: 5 }],
      tokensPerDoc: 50,
      stickiness: 0.6,
      probs: true,
      seed: 6,
    });
    await run([
      "compare",
      `${dir}/a/analysis`,
      `${dir}/b/trace`,
      "--out",
      `${dir}/compare`,
      "--labels",
      "loose,sticky",
      "--bootstrap",
      "30",
    ]);
    const args = [
      "report",
      "--analysis",
      `${dir}/a/analysis`,
      "--simulation",
      `${dir}/a/simulation`,
      "--out",
      `${dir}/r.html`,
      "--compare",
      `${dir}/compare`,
    ];
    await run(args);
    const html = await Deno.readTextFile(`${dir}/r.html`);
    // Without --capacity, simulate's hit-rate-per-layer figure (its middle capacity, 4 of 2, 4, 6)
    // is redrawn with the uniform-routing baseline in it.
    const hitRate = /<strong>Hit rate per layer at capacity 4\.<\/strong>(.*?)<\/figcaption>/s
      .exec(html)?.[1];
    assert.ok(hitRate && textOf(hitRate).includes("the uniform baseline, C/E = 0.500"), hitRate);
    const section = element(html, "section", 'id="compare"');
    assert.ok(textOf(section).includes("Comparison: loose against sticky"));
    const rows = (await csv(`${dir}/compare/summary.csv`)).filter((r) => r.domain === "all");
    assert.ok(rows.length >= 4);
    for (const row of rows) {
      const cells = new RegExp(`<tr data-statistic="${row.statistic}">(.*?)</tr>`).exec(section)
        ?.[1];
      assert.ok(cells, row.statistic);
      const values = [...cells.matchAll(/<td>([^<]*)<\/td>/g)].map((m) => m[1]);
      const f = (v: string) => v === "" ? "–" : Number(v).toPrecision(4);
      assert.deepEqual(values.slice(2, 5), [f(row.value_a!), f(row.value_b!), f(row.difference!)]);
      assert.equal(values[6], row.interval_excludes_zero || "–");
    }
    // Stickier routing repeats more: compare's own verdict on first-choice repetition is shown.
    const repeat = rows.find((r) => r.statistic === "first_choice_repeat")!;
    assert.equal(repeat.interval_excludes_zero, "true");
    const all = await csv(`${dir}/compare/summary.csv`);
    const differing = all.filter((r) => r.interval_excludes_zero === "true").length;
    assert.ok(
      textOf(element(html, "p", 'data-finding="compare-differences"'))
        .startsWith(`${differing} of ${all.length} summary differences`),
    );
    // A folder that is not compare's output is one sentence.
    await Deno.writeTextFile(`${dir}/compare/compare.json`, '{"format": "other"}');
    const bad = await runCli(args);
    assert.equal(bad.code, 1);
    assert.match(
      bad.stderr,
      /compare\.json must be a JSON object with "format": "moetrace-compare\/1"/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
