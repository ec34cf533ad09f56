/**
 * The analysis on synthetic traces with known answers: uniform routing agrees
 * with the analytic baselines within the bootstrap intervals, sticky routing
 * raises repetition, results do not depend on sharding, the permutation test
 * finds a planted domain difference and nothing under the null, a trace
 * without probs still analyses, and user mistakes get one-sentence errors.
 */
import assert from "node:assert/strict";
import type { CsvRow } from "../common/csv.ts";
import { DataError, UsageError } from "../common/errors.ts";
import { type SyntheticOptions, writeSyntheticTrace } from "../trace/synthetic.ts";
import { type TraceDoc, TraceReader, TraceWriter } from "../trace/mod.ts";
import { Rng } from "../common/random.ts";
import { analyzeCommand } from "./analyze.ts";
import { type AnalysisResult, runAnalysis } from "./run.ts";
import { ALL } from "./tables.ts";
import { COLUMNS, writeAnalysis } from "./write.ts";

async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-analysis-test-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function analyseSynthetic(
  dir: string,
  options: SyntheticOptions,
  bootstrap: number,
  rowsPerShard?: number,
): Promise<AnalysisResult> {
  await writeSyntheticTrace(`${dir}/trace`, options, rowsPerShard ? { rowsPerShard } : {});
  return await runAnalysis(await TraceReader.open(`${dir}/trace`), { bootstrap, seed: 7 });
}

const covers = (r: CsvRow) =>
  (r.ci_low as number) <= (r.baseline as number) && (r.baseline as number) <= (r.ci_high as number);

/** Rows of an unbiased estimate: its interval should cover the baseline about 95% of the time. */
function checkCoverage(name: string, rows: CsvRow[], min = 0.88): void {
  assert.ok(rows.length > 0, `${name} has rows`);
  for (const r of rows) {
    assert.ok(Number.isFinite(r.ci_low) && Number.isFinite(r.ci_high), `${name} has intervals`);
  }
  const coverage = rows.filter(covers).length / rows.length;
  assert.ok(
    coverage >= min,
    `${name}: ${(100 * coverage).toFixed(1)}% of ${rows.length} intervals cover the baseline`,
  );
  // Intervals that always cover would be too wide to mean anything.
  if (rows.length >= 100) {
    assert.ok(coverage < 0.995, `${name}: coverage ${coverage} is suspiciously perfect`);
  }
}

function checkUniform(result: AnalysisResult, perDomainCoactivation: boolean): void {
  const t = result.tables;
  checkCoverage("expert_shares", t.expert_shares!);
  checkCoverage("repetition", t.repetition!, 0.8);
  // Percentile intervals of outcomes too rare to be seen (expected count < 10) collapse to
  // [0, 0]; those rows are judged by their count instead.
  const expected = (r: CsvRow) => (r.baseline as number) * (r.n_pairs as number);
  checkCoverage(
    "overlap_distribution",
    t.overlap_distribution!.filter((r) => expected(r) >= 10),
    0.8,
  );
  for (const r of t.overlap_distribution!.filter((r) => expected(r) < 10)) {
    const seen = (r.proportion as number) * (r.n_pairs as number);
    assert.ok(
      seen <= expected(r) + 5 * Math.sqrt(expected(r)) + 2,
      `rare overlap ${r.overlap}: ${seen} pairs`,
    );
  }
  // l_norm's baseline is the uniform router's 0, not what this generator's random router
  // distributions give, so the replacement ratios are the ones with a known null value.
  checkCoverage(
    "cosmoes",
    t.cosmoes!.filter((r) => ["h_norm", "ex_rep"].includes(r.statistic as string)),
    0.8,
  );
  checkCoverage("coactivation", t.coactivation!);
  assert.equal(t.coactivation!.some((r) => r.domain !== ALL), perDomainCoactivation);
  // The corpus-wide layer means, one by one.
  for (const statistic of ["first_choice_repeat", "set_overlap", "h_norm", "ex_rep"]) {
    const row = t.summary!.find((r) => r.domain === ALL && r.statistic === statistic)!;
    // Four single estimates checked together: each at the 99% level (the 95% half-width
    // × 2.576/1.96), so that correct code passes all four with about 96% probability.
    const half = ((row.ci_high as number) - (row.ci_low as number)) / 2;
    const centre = ((row.ci_high as number) + (row.ci_low as number)) / 2;
    assert.ok(
      Math.abs((row.baseline as number) - centre) <= half * (2.576 / 1.96),
      `summary ${statistic}: ${row.value} [${row.ci_low}, ${row.ci_high}] vs ${row.baseline}`,
    );
    assert.ok(
      (row.ci_high as number) - (row.ci_low as number) < 0.02,
      `summary ${statistic} interval is tight`,
    );
  }
  // Statistics at the edge of their range under the null (ΔUniform, MaxVio: 0; share
  // entropy: log2 E; mutual information: 0): bias-corrected values whose intervals cover it.
  checkCoverage("delta_uniform", t.cosmoes!.filter((r) => r.statistic === "delta_uniform"), 0.8);
  checkCoverage(
    "load balance",
    t.load_balance!.filter((r) => r.statistic === "share_entropy" || r.statistic === "max_vio"),
    0.8,
  );
  checkCoverage("flow information", t.flow_information!, 0.8);
  // Uniform routing has no locality: shuffling tokens within documents changes nothing.
  for (const r of t.repetition!) {
    const width = (r.ci_high as number) - (r.ci_low as number);
    assert.ok(
      Math.abs((r.baseline_marginal as number) - (r.baseline as number)) < width,
      `${r.statistic} ${r.domain} layer ${r.layer}: shuffle ${r.baseline_marginal} vs ${r.baseline}`,
    );
  }
  for (const r of t.vocabulary_specialisation!) {
    assert.ok(
      Math.abs((r.mean_specialisation as number) - (r.baseline as number)) < 0.01,
      `vocabulary ${r.domain} ${r.layer}: ${r.mean_specialisation} vs ${r.baseline}`,
    );
    assert.ok(
      Math.abs((r.baseline_marginal as number) - (r.baseline as number)) < 0.01,
      `vocabulary ${r.domain} ${r.layer}: shuffled ${r.baseline_marginal} vs ${r.baseline}`,
    );
  }
  // No domain difference under the null.
  for (const r of t.domain_divergence!) {
    assert.ok((r.q_value as number) > 0.05, `null divergence q = ${r.q_value} at layer ${r.layer}`);
  }
}

Deno.test("uniform E = 8, k = 2, 200,000 tokens: every estimate agrees with its baseline", async () => {
  await withTemp(async (dir) => {
    const result = await analyseSynthetic(dir, {
      numExperts: 8,
      topK: 2,
      numLayers: 2,
      domains: [{ name: "A", docs: 200 }, { name: "B", docs: 200 }],
      tokensPerDoc: 500,
      probs: true,
      seed: 11,
    }, 200);
    assert.equal(result.totals.n_tokens, 200_000);
    checkUniform(result, true);
    const overlap = result.tables.summary!.find((r) =>
      r.domain === ALL && r.statistic === "set_overlap"
    )!;
    assert.equal((100 * (overlap.baseline as number)).toFixed(1), "46.4");
  });
});

/**
 * Uniform routing without a router distribution, drawn directly (a partial
 * Fisher–Yates shuffle gives a uniform k-subset in random order): the engine's
 * generator spends most of its time building router distributions, which
 * this test does not need.
 */
async function writeUniformTrace(
  dir: string,
  E: number,
  k: number,
  M: number,
  domains: { name: string; docs: number }[],
  T: number,
  seed: number,
): Promise<void> {
  const writer = await TraceWriter.open(dir, {
    model: {
      name: `uniform-E${E}-k${k}`,
      family: "synthetic",
      num_layers: M,
      moe_layers: Array.from({ length: M }, (_, i) => i),
      num_experts: E,
      top_k: k,
      num_shared_experts: 0,
      hidden_size: 8,
      expert_params: 10,
      dtype: "float32",
    },
    capture: {
      corpus: "uniform",
      domains: domains.map((d) => d.name),
      mode: "teacher-forced",
      lookahead: 0,
      probs: false,
      seed,
      tool_version: "test",
    },
  });
  const rng = new Rng(seed);
  const order = Uint16Array.from({ length: E }, (_, i) => i);
  let id = 0;
  for (const domain of domains) {
    for (let d = 0; d < domain.docs; d++) {
      const experts = new Uint16Array(T * M * k);
      for (let r = 0; r < T * M; r++) {
        for (let j = 0; j < k; j++) {
          const pick = j + rng.int(E - j);
          const x = order[j]!;
          order[j] = order[pick]!;
          order[pick] = x;
          experts[r * k + j] = order[j]!;
        }
      }
      const tokens = Uint32Array.from({ length: T }, () => rng.int(1000));
      await writer.add({
        doc: id++,
        domain: domain.name,
        tokens,
        pieces: Array.from(tokens, (x) => `t${x}`),
        experts,
        weights: new Float32Array(T * M * k).fill(1 / k),
      });
    }
  }
  await writer.close();
}

Deno.test("uniform E = 64, k = 8, 200,000 tokens: every estimate agrees with its baseline", async () => {
  await withTemp(async (dir) => {
    const domains = [{ name: "A", docs: 200 }, { name: "B", docs: 200 }];
    await writeUniformTrace(`${dir}/trace`, 64, 8, 2, domains, 500, 12);
    const result = await runAnalysis(await TraceReader.open(`${dir}/trace`), {
      bootstrap: 200,
      seed: 7,
    });
    assert.equal(result.totals.n_tokens, 200_000);
    checkUniform(result, false);
  });
});

Deno.test("sticky traces: repetition rises as set, beyond its interval", async () => {
  await withTemp(async (dir) => {
    const values: number[] = [];
    for (const stickiness of [0, 0.3, 0.6]) {
      const result = await analyseSynthetic(`${dir}/${stickiness}`, {
        numExperts: 8,
        topK: 2,
        numLayers: 2,
        domains: [{ name: "A", docs: 40 }],
        tokensPerDoc: 250,
        stickiness,
        seed: 3,
      }, 100);
      const row = (statistic: string) =>
        result.tables.summary!.find((r) => r.domain === ALL && r.statistic === statistic)!;
      const repeat = row("first_choice_repeat");
      values.push(repeat.value as number);
      if (stickiness > 0) {
        assert.ok(
          (repeat.ci_low as number) > (repeat.baseline as number),
          `repeat above 1/E at ${stickiness}`,
        );
        assert.ok(
          (row("ex_rep").ci_high as number) < (row("ex_rep").baseline as number),
          "fewer replacements",
        );
        // Locality, not popularity: above the within-document shuffle, with a tiny p.
        for (const r of result.tables.repetition!) {
          assert.ok((r.value as number) > (r.baseline_marginal as number), `above shuffle`);
          assert.ok((r.q_value as number) < 0.01, `locality q = ${r.q_value} at ${stickiness}`);
        }
      } else {
        const small = result.tables.repetition!.filter((r) => (r.p_value as number) < 0.01);
        assert.ok(small.length <= 1, `uniform routing shows no locality: ${small.length} p < 0.01`);
      }
      // The generator keeps each slot with probability s, then redraws the others uniformly
      // from the experts not taken; the previous first choice is never taken by a kept second
      // slot, so P(same first) = s + (1 − s)·(s/(E − 1) + (1 − s)/E) (0.39125 at s = 0.3, E = 8).
      const E = 8;
      const expected = stickiness +
        (1 - stickiness) * (stickiness / (E - 1) + (1 - stickiness) / E);
      const half = ((repeat.ci_high as number) - (repeat.ci_low as number)) / 2;
      const centre = ((repeat.ci_high as number) + (repeat.ci_low as number)) / 2;
      assert.ok(
        Math.abs(centre - expected) <= half * (2.576 / 1.96),
        `repeat ${repeat.value} [${repeat.ci_low}, ${repeat.ci_high}] vs ${expected} at ${stickiness}`,
      );
    }
    assert.ok(values[0]! < values[1]! && values[1]! < values[2]!, `rising: ${values}`);
  });
});

Deno.test("results do not depend on shard boundaries or batching: byte-identical outputs", async () => {
  await withTemp(async (dir) => {
    const options: SyntheticOptions = {
      numExperts: 8,
      topK: 2,
      numLayers: 3,
      domains: [{ name: "A", docs: 15 }, { name: "B", docs: 15 }],
      tokensPerDoc: 60,
      stickiness: 0.2,
      probs: true,
      seed: 5,
    };
    const outputs: Record<string, string>[] = [];
    for (const rowsPerShard of [50, 100_000]) {
      const result = await analyseSynthetic(`${dir}/${rowsPerShard}`, options, 50, rowsPerShard);
      await writeAnalysis(result, `${dir}/${rowsPerShard}/out`, {
        bootstrap: 50,
        seed: 7,
        figures: false,
      });
      const files: Record<string, string> = {};
      for (
        const name of [
          ...Object.keys(COLUMNS).map((c) => `${c}.csv`),
          "README.md",
          "token_colouring.html",
        ]
      ) {
        files[name] = await Deno.readTextFile(`${dir}/${rowsPerShard}/out/${name}`);
      }
      outputs.push(files);
    }
    const shards =
      JSON.parse(await Deno.readTextFile(`${dir}/50/trace/manifest.json`)).shards.length;
    assert.ok(shards > 10, `the small-shard trace has many shards (${shards})`);
    for (const name of Object.keys(outputs[0]!)) {
      assert.ok(outputs[0]![name] === outputs[1]![name], `${name} is identical`);
    }
  });
});

/** Documents whose layer-1 routing prefers experts 0..3 when `biased`, uniform otherwise. */
function plantedDocs(): TraceDoc[] {
  const rng = new Rng(99);
  const E = 8;
  const M = 2;
  const T = 120;
  const docs: TraceDoc[] = [];
  for (let d = 0; d < 60; d++) {
    const biased = d % 2 === 1;
    const experts = new Uint16Array(T * M * 2);
    for (let t = 0; t < T; t++) {
      for (let l = 0; l < M; l++) {
        const draw = () => (biased && l === 1 && rng.next() < 0.6 ? rng.int(4) : rng.int(E));
        const a = draw();
        let b = draw();
        while (b === a) b = draw();
        experts[(t * M + l) * 2] = a;
        experts[(t * M + l) * 2 + 1] = b;
      }
    }
    const tokens = Uint32Array.from({ length: T }, () => rng.int(50));
    docs.push({
      doc: d,
      domain: biased ? "Biased" : "Plain",
      tokens,
      pieces: Array.from(tokens, (x) => `w${x} `),
      experts,
      weights: new Float32Array(T * M * 2).fill(0.5),
    });
  }
  return docs;
}

Deno.test("permutation test: a planted domain difference is found, its absence is not", async () => {
  await withTemp(async (dir) => {
    const writer = await TraceWriter.open(`${dir}/trace`, {
      model: {
        name: "planted",
        family: "synthetic",
        num_layers: 2,
        moe_layers: [0, 1],
        num_experts: 8,
        top_k: 2,
        num_shared_experts: 0,
        hidden_size: 8,
        expert_params: 10,
        dtype: "float32",
      },
      capture: {
        corpus: "planted",
        domains: [],
        mode: "teacher-forced",
        lookahead: 0,
        probs: false,
        seed: 0,
        tool_version: "test",
      },
    }, { rowsPerShard: 1000 });
    for (const doc of plantedDocs()) await writer.add(doc);
    await writer.close();
    const result = await runAnalysis(await TraceReader.open(`${dir}/trace`), {
      bootstrap: 200,
      seed: 1,
    });
    const rows = result.tables.domain_divergence!;
    assert.equal(rows.length, 2);
    const [layer0, layer1] = rows;
    assert.ok((layer1!.p_value as number) <= 0.01, `planted layer p = ${layer1!.p_value}`);
    assert.ok((layer1!.q_value as number) <= 0.02, `planted layer q = ${layer1!.q_value}`);
    assert.ok((layer1!.jsd as number) > (layer1!.ci_low as number), "JSD interval brackets it");
    assert.ok(
      (layer1!.ci_low as number) > (layer1!.baseline as number),
      "JSD interval above the null mean",
    );
    assert.ok((layer0!.p_value as number) > 0.05, `null layer p = ${layer0!.p_value}`);
    // The biased domain's top-k share of experts 0..3 at layer 1 is well above 4/8.
    const low = result.tables.expert_shares!.filter((r) =>
      r.domain === "Biased" && r.layer === 1 && r.choice === "top_k" && (r.expert as number) < 4
    ).reduce((s, r) => s + (r.share as number), 0);
    assert.ok(low > 0.65, `biased share of experts 0..3: ${low}`);
  });
});

Deno.test("a trace without probs analyses: probs-only statistics absent, with a note; every output written", async () => {
  await withTemp(async (dir) => {
    await writeSyntheticTrace(`${dir}/trace`, {
      numLayers: 3,
      domains: [{ name: "ArXiv", docs: 6 }, { name: "Github", docs: 6 }],
      tokensPerDoc: 40,
      stickiness: 0.4,
    });
    await analyzeCommand(`${dir}/trace`, { out: `${dir}/out`, bootstrap: 30, seed: 2 });
    const result = await runAnalysis(await TraceReader.open(`${dir}/trace`), {
      bootstrap: 0,
      seed: 0,
    });
    assert.ok(
      !result.tables.cosmoes!.some((r) => r.statistic === "l_norm" || r.statistic === "bies"),
    );
    assert.ok(!result.tables.load_balance!.some((r) => r.statistic === "router_entropy"));
    const note = result.tables.summary!.find((r) => r.statistic === "l_norm")!;
    assert.match(note.note as string, /no router distribution/);
    assert.ok(
      result.tables.expert_shares!.every((r) => Number.isNaN(r.ci_low)),
      "no bootstrap, no intervals",
    );

    const files = new Set<string>();
    for await (const entry of Deno.readDir(`${dir}/out`)) files.add(entry.name);
    for (const name of Object.keys(COLUMNS)) assert.ok(files.has(`${name}.csv`), `${name}.csv`);
    for (const name of ["README.md", "figures.json", "token_colouring.html", "analysis.json"]) {
      assert.ok(files.has(name), name);
    }
    assert.ok(![...files].some((f) => f.includes(".tmp-")), "no temporaries left");
    const figures = JSON.parse(await Deno.readTextFile(`${dir}/out/figures.json`));
    assert.ok(figures.length >= 5);
    for (const f of figures) {
      assert.ok(files.has(f.file), `${f.file} exists`);
      assert.ok(f.title && f.caption && f.section, `${f.file} has title, caption, section`);
      assert.match(await Deno.readTextFile(`${dir}/out/${f.file}`), /^<svg/);
    }
    const html = await Deno.readTextFile(`${dir}/out/token_colouring.html`);
    assert.doesNotMatch(html, /<(script|html|head|style)\b/i);
    assert.match(html, /expert 0/);
    assert.match(html, /ArXiv/);
    const readme = await Deno.readTextFile(`${dir}/out/README.md`);
    for (const [name, columns] of Object.entries(COLUMNS)) {
      assert.match(readme, new RegExp(`### ${name}\\.csv`), `README documents ${name}.csv`);
      for (const c of columns) assert.ok(readme.includes(c), `README mentions ${c}`);
    }
    const info = JSON.parse(await Deno.readTextFile(`${dir}/out/analysis.json`));
    assert.equal(info.totals.n_tokens, 480);
    assert.equal(info.totals.n_docs, 12);
    assert.deepEqual(info.totals.domains.map((d: { name: string }) => d.name), ["ArXiv", "Github"]);
    assert.equal(info.trace.model.top_k, 2);
    // Every CSV header is exactly its documented columns.
    for (const [name, columns] of Object.entries(COLUMNS)) {
      const header = (await Deno.readTextFile(`${dir}/out/${name}.csv`)).split("\n")[0];
      assert.equal(header, columns.join(","), `${name}.csv header`);
    }
  });
});

Deno.test("user mistakes get one-sentence errors naming the path", async () => {
  await withTemp(async (dir) => {
    await assert.rejects(
      analyzeCommand(`${dir}/missing`, { out: `${dir}/out`, bootstrap: 10, seed: 0 }),
      (error: unknown) =>
        error instanceof DataError &&
        error.message ===
          `${dir}/missing is not a trace: ${dir}/missing/manifest.json does not exist.`,
    );
    await Deno.writeTextFile(`${dir}/file`, "x");
    await assert.rejects(
      analyzeCommand(`${dir}/missing`, { out: `${dir}/file`, bootstrap: 10, seed: 0 }),
      (error: unknown) =>
        error instanceof UsageError &&
        error.message === `--out of analyze must be a folder, got the file "${dir}/file".`,
    );
    await writeSyntheticTrace(`${dir}/empty`, { domains: [] });
    await assert.rejects(
      analyzeCommand(`${dir}/empty`, { out: `${dir}/out`, bootstrap: 10, seed: 0 }),
      (error: unknown) =>
        error instanceof DataError &&
        error.message ===
          `The trace in ${dir}/empty holds no tokens, so there is nothing to analyse.`,
    );
    await assert.rejects(
      analyzeCommand(`${dir}/missing`, { out: `${dir}/out`, bootstrap: -1, seed: 0 }),
      (error: unknown) =>
        error instanceof UsageError &&
        error.message === "--bootstrap of analyze must be an integer ≥ 0, got -1.",
    );
    await assert.rejects(
      analyzeCommand(`${dir}/missing`, {
        out: `${dir}/out`,
        bootstrap: 10,
        seed: 0,
        "router-temperature": 0,
      }),
      (error: unknown) =>
        error instanceof UsageError &&
        error.message === "--router-temperature of analyze must be a number > 0, got 0.",
    );
  });
});

Deno.test("token-id tables past their memory budget fall back to corpus rows, same values", async () => {
  await withTemp(async (dir) => {
    const M = 2;
    const E = 8;
    await writeSyntheticTrace(`${dir}/trace`, {
      numLayers: M,
      numExperts: E,
      domains: [{ name: "A", docs: 10 }, { name: "B", docs: 10 }],
      tokensPerDoc: 100,
      vocabSize: 50,
    });
    const run = async (vocabularyCells?: number) =>
      await runAnalysis(await TraceReader.open(`${dir}/trace`), {
        bootstrap: 0,
        seed: 0,
        accumulate: vocabularyCells ? { vocabularyCells } : {},
      });
    const full = await run();
    // Each domain sees all 50 ids (100 tables of 2·M·E: counts and shuffled counts); the
    // corpus needs 50: a budget of 70 merges.
    const merged = await run(70 * 2 * M * E);
    const rows = (r: AnalysisResult) => r.tables.vocabulary_specialisation!;
    assert.deepEqual(rows(merged), rows(full).filter((r) => r.domain === ALL));
    assert.ok(merged.notes.some((n) => /corpus only/.test(n)));
    // A budget of 20 ids keeps counting those and drops the others' occurrences.
    const tight = await run(20 * 2 * M * E);
    assert.equal(rows(tight).filter((r) => r.domain === ALL)[0]!.n_token_ids, 20);
    assert.ok(tight.notes.some((n) => /leaves out \d+ occurrences/.test(n)));
  });
});
