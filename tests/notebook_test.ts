/**
 * A notebook user's view of the pipeline's outputs: every CSV that analyze and
 * simulate write loads in pandas and polars with no options and has only
 * columns its folder's README.md documents, and the trace opens in DuckDB.
 * Python packages come from pip's local wheel mirror; the test is skipped with
 * the reason printed where they cannot be installed.
 */
import assert from "node:assert/strict";
import { runCli } from "./cli_helpers.ts";
import { pythonWithDataTools, runPython } from "./python_env.ts";

const ROOT = new URL("..", import.meta.url).pathname;

const SCRIPT = `
import json, sys, glob, os, re
import pandas as pd, polars as pl, duckdb
result = {"csv": {}, "trace": {}}
for folder in sys.argv[1:3]:
    readme = open(os.path.join(folder, "README.md")).read()
    for path in sorted(glob.glob(os.path.join(folder, "*.csv"))):
        frame = pd.read_csv(path)
        polars_frame = pl.read_csv(path)
        numeric = [c for c in frame.columns if frame[c].dtype.kind in "if"]
        result["csv"][os.path.relpath(path, os.path.dirname(folder))] = {
            "rows": len(frame),
            "polars_rows": polars_frame.height,
            "columns": list(frame.columns),
            "same_columns": list(frame.columns) == polars_frame.columns,
            "undocumented": [c for c in frame.columns if not re.search(r"\\b" + re.escape(c) + r"\\b", readme)],
            "numeric_columns": len(numeric),
        }
trace = duckdb.read_parquet(os.path.join(sys.argv[3], "shards", "**", "*.parquet"))
result["trace"] = {
    "domains": duckdb.sql("SELECT domain, count(*) AS n FROM trace GROUP BY domain ORDER BY domain").fetchall(),
    "tokens": duckdb.sql("SELECT count(*) FROM trace").fetchone()[0],
}
print(json.dumps(result))
`;

// Probed once at load so that a machine without the packages shows the test as ignored, with why.
const env = await pythonWithDataTools();
if ("reason" in env) console.log(`ignored: ${env.reason}`);

Deno.test({
  name: "every CSV of analyze and simulate loads in pandas and polars; the trace opens in DuckDB",
  ignore: "reason" in env,
  fn: async () => {
    if ("reason" in env) throw new Error(env.reason);
    const dir = await Deno.makeTempDir({ prefix: "moetrace-notebook-" });
    for (
      const args of [
        [
          "capture",
          "--model",
          `${ROOT}fixtures/models/tiny-mixtral-swa`,
          "--corpus",
          `${ROOT}fixtures/corpus/fixture.jsonl`,
          "--out",
          `${dir}/trace`,
          "--max-tokens",
          "32",
          "--probs",
          "--lookahead",
          "1",
        ],
        ["analyze", `${dir}/trace`, "--out", `${dir}/analysis`, "--bootstrap", "100"],
        [
          "simulate",
          `${dir}/trace`,
          "--out",
          `${dir}/simulation`,
          "--prefetch",
          "none,speculative,oracle",
        ],
      ]
    ) {
      const result = await runCli(args);
      assert.equal(result.code, 0, `${args[0]}: ${result.stderr}`);
    }
    const out = JSON.parse(
      await runPython(env.python, SCRIPT, [`${dir}/analysis`, `${dir}/simulation`, `${dir}/trace`]),
    );
    const files = Object.keys(out.csv);
    assert.ok(files.some((f) => f.startsWith("analysis/expert_shares")), `analysis CSVs: ${files}`);
    assert.ok(files.includes("simulation/simulation.csv"), `simulation CSVs: ${files}`);
    for (const [file, info] of Object.entries(out.csv) as [string, Record<string, unknown>][]) {
      assert.ok((info.rows as number) > 0, `${file} has rows`);
      assert.equal(info.rows, info.polars_rows, `${file}: pandas and polars agree`);
      assert.equal(info.same_columns, true, `${file}: same columns in pandas and polars`);
      assert.deepEqual(info.undocumented, [], `${file}: columns missing from README.md`);
      assert.ok((info.numeric_columns as number) > 0, `${file}: numbers parse as numbers`);
    }
    assert.equal(out.trace.domains.length, 8);
    assert.equal(out.trace.tokens, 80 * 32);
    await Deno.remove(dir, { recursive: true });
  },
});
