/**
 * A trace's Parquet shards open in DuckDB (`read_parquet` over a glob),
 * polars (`scan_parquet`) and pyarrow (a dataset) with no options and hold the
 * values the writer was given; Arrow IPC shards of older traces still open in
 * pyarrow and polars.
 */
import assert from "node:assert/strict";
import { pythonWithDataTools, runPython } from "../tests/python_env.ts";
import { syntheticDocs, writeSyntheticTrace } from "./synthetic.ts";

const SCRIPT = `
import json, sys, duckdb, polars as pl, pyarrow.dataset as ds, pyarrow.ipc as ipc
trace, old = sys.argv[1], sys.argv[2]
glob = f"{trace}/shards/**/*.parquet"
dataset = ds.dataset(f"{trace}/shards", format="parquet")
table = dataset.to_table()
frame = pl.scan_parquet(glob).sort("doc", "pos").collect()
typed = duckdb.sql(f"SELECT experts, weights, domain FROM read_parquet('{glob}')")
first = duckdb.sql(f"SELECT doc, domain, pos, token, piece, experts, weights FROM read_parquet('{glob}') ORDER BY doc, pos LIMIT 1").fetchone()
print(json.dumps({
  "files": len(dataset.files),
  "schema": [f"{f.name}:{f.type}" for f in dataset.schema],
  "rows": table.num_rows,
  "duckdb_rows": duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}')").fetchone()[0],
  "duckdb_types": [[c, str(t)] for c, t in zip(typed.columns, typed.types)],
  "duckdb_domains": duckdb.sql(f"SELECT domain, count(DISTINCT doc) FROM read_parquet('{glob}') GROUP BY domain ORDER BY domain").fetchall(),
  "duckdb_first": [first[0], first[1], first[2], first[3], first[4], list(first[5]), [round(w, 6) for w in first[6]]],
  "polars_rows": frame.height,
  "polars_experts": str(frame.schema["experts"]),
  "polars_last_experts": frame["experts"][-1].to_list(),
  "ipc_rows": ipc.open_file(f"{old}/shards/00000.arrow").read_all().num_rows,
  "ipc_polars_rows": pl.read_ipc(f"{old}/shards/00000.arrow").height,
}))
`;

// Probed once at load so that a machine without the packages shows the test as ignored, with why.
const env = await pythonWithDataTools();
if ("reason" in env) console.log(`ignored: ${env.reason}`);

Deno.test({
  name:
    "Parquet shards open in DuckDB, polars and pyarrow with no options; Arrow IPC ones still open",
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
    // Two documents per shard: the glob must find every shard.
    await writeSyntheticTrace(`${dir}/trace`, options, { rowsPerShard: 10 });
    await writeSyntheticTrace(`${dir}/old`, options, { format: "arrow" });
    const out = JSON.parse(await runPython(env.python, SCRIPT, [`${dir}/trace`, `${dir}/old`]));
    const docs = [...syntheticDocs(options)];
    await t.step("schema: pyarrow gets the Arrow types back from the Parquet files", () => {
      assert.equal(out.files, 2);
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
      assert.deepEqual(out.duckdb_types, [
        ["experts", "USMALLINT[]"],
        ["weights", "FLOAT[]"],
        ["domain", "VARCHAR"],
      ]);
      assert.equal(out.polars_experts, "Array(UInt16, shape=(4,))");
    });
    await t.step("values", () => {
      assert.equal(out.rows, 15);
      assert.equal(out.duckdb_rows, 15);
      assert.equal(out.polars_rows, 15);
      assert.deepEqual(out.duckdb_domains, [["ArXiv", 2], ["Github", 1]]);
      const first = docs[0]!;
      assert.deepEqual(out.duckdb_first, [
        0,
        "ArXiv",
        0,
        first.tokens[0],
        first.pieces[0],
        Array.from(first.experts.subarray(0, 4)),
        Array.from(first.weights.subarray(0, 4), (w) => Math.round(w * 1e6) / 1e6),
      ]);
      assert.deepEqual(out.polars_last_experts, Array.from(docs[2]!.experts.subarray(16, 20)));
      assert.equal(out.ipc_rows, 15);
      assert.equal(out.ipc_polars_rows, 15);
    });
    await Deno.remove(dir, { recursive: true });
  },
});
