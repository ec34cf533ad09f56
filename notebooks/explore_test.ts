/**
 * notebooks/explore.ipynb runs top to bottom with nbclient on a small
 * synthetic trace and its analysis: the figures it redraws come out as PNG
 * files, the numbers it drew them from are the analysis CSVs' (read here
 * independently), and its DuckDB recount of the trace matches
 * expert_shares.csv. Jupyter comes from pip's local wheel mirror; where it
 * cannot be installed the test is ignored with the reason printed.
 */
import assert from "node:assert/strict";
import { parse } from "csv-parse/sync";
import { runCli } from "../tests/cli_helpers.ts";
import { pythonEnv, runPython } from "../tests/python_env.ts";
import { writeSyntheticTrace } from "../trace/synthetic.ts";

const NOTEBOOK = new URL("./explore.ipynb", import.meta.url).pathname;
const PACKAGES = [
  "nbclient",
  "nbformat",
  "ipykernel",
  "pandas",
  "polars",
  "duckdb",
  "pyarrow",
  "matplotlib",
];

// Executes the notebook in a kernel of this venv's python, with the paths in its environment.
const RUNNER = `
import os, sys
import nbformat
from nbclient import NotebookClient
os.environ["MOETRACE_ANALYSIS"], os.environ["MOETRACE_TRACE"], os.environ["MOETRACE_FIGURES"] = sys.argv[2:5]
notebook = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
print("executed", len(notebook.cells), "cells")
`;

// Probed once at load so that a machine without the packages shows the test as ignored, with why.
const env = await pythonEnv("notebook-env", PACKAGES, PACKAGES.join(", "));
if ("reason" in env) console.log(`ignored: ${env.reason}`);

Deno.test({
  name:
    "notebooks/explore.ipynb runs on a small trace and redraws two report figures from its CSVs",
  ignore: "reason" in env,
  fn: async () => {
    if ("reason" in env) throw new Error(env.reason);
    const dir = await Deno.makeTempDir({ prefix: "moetrace-notebook-" });
    try {
      await writeSyntheticTrace(`${dir}/trace`, {
        numExperts: 4,
        topK: 2,
        numLayers: 3,
        tokensPerDoc: 40,
        stickiness: 0.4,
        domains: [{ name: "ArXiv", docs: 6 }, { name: "Github", docs: 6 }],
      });
      const analysed = await runCli([
        "analyze",
        `${dir}/trace`,
        "--out",
        `${dir}/analysis`,
        "--bootstrap",
        "50",
      ]);
      assert.equal(analysed.code, 0, analysed.stderr);
      const printed = await runPython(env.python, RUNNER, [
        NOTEBOOK,
        `${dir}/analysis`,
        `${dir}/trace`,
        `${dir}/figures`,
      ]);
      assert.match(printed, /executed \d+ cells/);
      for (const figure of ["expert_shares.png", "repetition.png"]) {
        const bytes = await Deno.readFile(`${dir}/figures/${figure}`);
        assert.deepEqual([...bytes.subarray(1, 4)], [80, 78, 71], `${figure} is a PNG`);
      }
      const checks = JSON.parse(await Deno.readTextFile(`${dir}/figures/checks.json`));
      assert.equal(checks.trace_rows, 12 * 40);
      assert.ok(checks.largest_gap < 1e-9);
      assert.deepEqual(checks.shares_layers, [0, 1, 2]);
      // Each layer's top-k shares over all experts add up to 1.
      for (const sum of checks.shares_sum_per_layer) assert.ok(Math.abs(sum - 1) < 1e-9);
      const repetition = (parse(await Deno.readTextFile(`${dir}/analysis/repetition.csv`), {
        columns: true,
      }) as Record<string, string>[]).filter((r) =>
        r.statistic === "first_choice_repeat" && r.domain === "all"
      );
      assert.equal(repetition.length, 3);
      for (const r of repetition) {
        assert.ok(Math.abs(checks.repetition[r.layer!] - Number(r.value)) < 1e-12, r.layer);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
