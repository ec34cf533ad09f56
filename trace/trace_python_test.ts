/**
 * A trace's shards open in pyarrow, polars and DuckDB with no options, and
 * hold the values the writer was given.
 */
import assert from "node:assert/strict";
import { pythonWithDataTools, runPython } from "../tests/python_env.ts";
import { syntheticDocs, writeSyntheticTrace } from "./synthetic.ts";

const SCRIPT = `
import json, sys, pyarrow.ipc as ipc, polars as pl, duckdb
path = sys.argv[1]
table = ipc.open_file(path).read_all()
frame = pl.read_ipc(path)
shard = table  # DuckDB scans the Arrow table in place (replacement scan by variable name)
row = duckdb.sql("SELECT doc, domain, pos, token, piece, experts, weights FROM shard ORDER BY doc, pos LIMIT 1").fetchone()
print(json.dumps({
  "schema": [f"{f.name}:{f.type}" for f in table.schema],
  "rows": table.num_rows,
  "polars_rows": frame.height,
  "polars_domains": sorted(frame["domain"].unique().to_list()),
  "duckdb_first": [row[0], row[1], row[2], row[3], row[4], list(row[5]), [round(w, 6) for w in row[6]]],
  "duckdb_tokens": duckdb.sql("SELECT count(*) FROM shard").fetchone()[0],
}))
`;

// Probed once at load so that a machine without the packages shows the test as ignored, with why.
const env = await pythonWithDataTools();
if ("reason" in env) console.log(`ignored: ${env.reason}`);

Deno.test({
  name: "trace shards open in pyarrow, polars and DuckDB with no options",
  ignore: "reason" in env,
  fn: async (t) => {
    if ("reason" in env) throw new Error(env.reason);
    const options = {
      domains: [{ name: "ArXiv", docs: 2 }, { name: "Github", docs: 1 }],
      tokensPerDoc: 5,
      numLayers: 2,
      topK: 2,
      numExperts: 4,
      probs: true,
      lookahead: 1,
      seed: 3,
    };
    const dir = await Deno.makeTempDir();
    await writeSyntheticTrace(dir, options);
    const out = JSON.parse(await runPython(env.python, SCRIPT, [`${dir}/shards/00000.arrow`]));
    const first = [...syntheticDocs(options)][0]!;
    await t.step("schema", () => {
      assert.deepEqual(out.schema, [
        "doc:uint32",
        "domain:dictionary<values=string, indices=int32, ordered=0>",
        "pos:uint32",
        "token:uint32",
        "piece:dictionary<values=string, indices=int32, ordered=0>",
        "phase:uint8",
        "experts:fixed_size_list<item: uint16 not null>[4]",
        "weights:fixed_size_list<item: float not null>[4]",
        "probs:fixed_size_list<item: float not null>[8]",
        "spec:fixed_size_list<item: uint16 not null>[4]",
      ]);
    });
    await t.step("values", () => {
      assert.equal(out.rows, 15);
      assert.equal(out.polars_rows, 15);
      assert.equal(out.duckdb_tokens, 15);
      assert.deepEqual(out.polars_domains, ["ArXiv", "Github"]);
      assert.deepEqual(out.duckdb_first, [
        0,
        "ArXiv",
        0,
        first.tokens[0],
        first.pieces[0],
        Array.from(first.experts.subarray(0, 4)),
        Array.from(first.weights.subarray(0, 4), (w) => Math.round(w * 1e6) / 1e6),
      ]);
    });
    await Deno.remove(dir, { recursive: true });
  },
});
