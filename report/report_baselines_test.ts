/**
 * The report says which baseline each line is: every analysis figure's
 * caption names its baselines (uniform, and marginal-preserving where the
 * figure draws one), the domain divergence is a per-layer heatmap, and the
 * report carries those captions and shows ΔUniform in percent while the CSV
 * keeps a fraction.
 */
import assert from "node:assert/strict";
import { parse } from "csv-parse/sync";
import { writeSyntheticTrace } from "../trace/synthetic.ts";
import { TraceReader } from "../trace/mod.ts";
import { runAnalysis } from "../analysis/run.ts";
import { buildFigures } from "../analysis/plots.ts";
import { writeAnalysis } from "../analysis/write.ts";
import { writeReport } from "./report.ts";

Deno.test("every figure names its baselines; the report keeps the captions and shows ΔUniform in percent", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-report-baselines-" });
  try {
    await writeSyntheticTrace(`${dir}/trace`, {
      numLayers: 3,
      domains: [{ name: "A", docs: 6 }, { name: "B", docs: 6 }, { name: "C", docs: 6 }],
      tokensPerDoc: 40,
      stickiness: 0.3,
      probs: true,
    });
    const result = await runAnalysis(await TraceReader.open(`${dir}/trace`), {
      bootstrap: 50,
      seed: 1,
    });
    const figures = buildFigures(result);
    const byFile = new Map(figures.map((f) => [f.file, f]));
    for (const f of figures) assert.match(f.caption, /baseline/, `${f.file} names its baseline`);
    for (const file of ["repetition.svg", "replacement_ratio.svg"]) {
      const caption = byFile.get(file)!.caption;
      assert.match(caption, /Dashed black line: the uniform baseline/, file);
      assert.match(
        caption,
        /Dotted line in each domain's colour: the marginal-preserving baseline/,
      );
    }
    // The divergence figure: one rect panel per layer, rows and columns the domains and "rest".
    const divergence = byFile.get("domain_divergence.svg")!.spec as Record<string, unknown>;
    assert.deepEqual(divergence.facet, { field: "layer", type: "ordinal", title: "MoE layer" });
    const cells = (divergence.data as { values: Record<string, unknown>[] }).values;
    assert.equal(cells.length, 3 * (3 * 2 + 3), "both orders of 3 pairs and 3 against the rest");
    assert.ok(cells.some((c) => c.column === "rest"));

    await writeAnalysis(result, `${dir}/analysis`, { bootstrap: 50, seed: 1 });
    await Deno.mkdir(`${dir}/simulation`);
    await Deno.writeTextFile(`${dir}/simulation/figures.json`, "[]");
    await Deno.writeTextFile(`${dir}/simulation/simulation.json`, "{}");
    await writeReport(`${dir}/analysis`, `${dir}/simulation`, `${dir}/report.html`);
    const html = await Deno.readTextFile(`${dir}/report.html`);
    const unescape = (s: string) =>
      s.replace(/&#(\d+);/g, (_, c) => String.fromCharCode(Number(c)));
    assert.ok(
      unescape(html).includes(byFile.get("repetition.svg")!.caption),
      "the report carries the caption",
    );
    // ΔUniform of all, layer 0: a fraction in the CSV, the same number in percent in the report.
    const rows = parse(await Deno.readTextFile(`${dir}/analysis/cosmoes.csv`), {
      columns: true,
    }) as Record<string, string>[];
    const delta = rows.find((r) =>
      r.domain === "all" && r.layer === "0" && r.statistic === "delta_uniform"
    )!;
    const fraction = Number(delta.value);
    assert.ok(fraction > 0 && fraction < 1, `a fraction in the CSV: ${delta.value}`);
    assert.ok(html.includes(`${(100 * fraction).toPrecision(3)}%`), "percent in the report");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
