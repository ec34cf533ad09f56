/**
 * The acceptance test of `analyze --engine duckdb`: on a synthetic trace of
 * 1,000,000 tokens it writes count tables byte-identical to those of the
 * default engine (`--counts`), and refuses what it cannot read in one sentence.
 */
import assert from "node:assert/strict";
import { runCli } from "../../tests/cli_helpers.ts";
import { denoArgs, permissionsFor } from "../../moetrace.ts";
import { writeSyntheticTrace } from "../../trace/synthetic.ts";
import { COUNT_TABLE_NAMES } from "./counts.ts";

Deno.test("analyze --engine duckdb and the default give identical count tables on 1M tokens", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-engines-" });
  // 8 domains × 125 documents × 1,000 tokens, 4 layers, top-2 of 8, sticky routing.
  const domains = ["A", "B", "C", "D", "E", "F", "G", "H"].map((name) => ({ name, docs: 125 }));
  await writeSyntheticTrace(`${dir}/trace`, {
    numLayers: 4,
    topK: 2,
    numExperts: 8,
    tokensPerDoc: 1000,
    stickiness: 0.4,
    domains,
    seed: 5,
  });
  const stream = await runCli([
    "analyze",
    `${dir}/trace`,
    "--out",
    `${dir}/stream`,
    "--bootstrap",
    "0",
    "--counts",
  ]);
  assert.equal(stream.code, 0, stream.stderr);
  const duck = await runCli([
    "analyze",
    `${dir}/trace`,
    "--out",
    `${dir}/duckdb`,
    "--engine",
    "duckdb",
  ]);
  assert.equal(duck.code, 0, duck.stderr);
  assert.match(duck.stdout, /^Counted 1000000 tokens in 1000 documents with DuckDB; wrote /);
  for (const name of COUNT_TABLE_NAMES) {
    const a = await Deno.readTextFile(`${dir}/stream/counts/${name}.csv`);
    const b = await Deno.readTextFile(`${dir}/duckdb/counts/${name}.csv`);
    assert.ok(a.split("\n").length > 100, `${name}.csv has rows`);
    assert.ok(a === b, `${name}.csv differs between the engines`);
  }
  // Every token has 2 experts in each of 4 layers: the any_tokens column sums to 8,000,000.
  const counts = (await Deno.readTextFile(`${dir}/duckdb/counts/expert_counts.csv`)).trim().split(
    "\n",
  );
  assert.equal(counts[0], "domain,doc,layer,expert,first_tokens,second_tokens,any_tokens");
  assert.equal(counts.slice(1).reduce((n, line) => n + Number(line.split(",")[6]), 0), 8_000_000);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("analyze --engine duckdb refuses Arrow IPC shards in one sentence", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-engines-" });
  await writeSyntheticTrace(`${dir}/trace`, { domains: [{ name: "A", docs: 2 }] }, {
    format: "arrow",
  });
  const result = await runCli([
    "analyze",
    `${dir}/trace`,
    "--out",
    `${dir}/out`,
    "--engine",
    "duckdb",
  ]);
  assert.equal(result.code, 1);
  assert.match(
    result.stderr,
    /^moetrace: Shard .*shards\/00000\.arrow is an Arrow IPC file; --engine duckdb reads Parquet shards \(traces written since Parquet became the default\), so analyse this trace with the default engine\.$/,
  );
  await assert.rejects(() => Deno.stat(`${dir}/out/counts`), Deno.errors.NotFound);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("the launcher grants --allow-ffi for --engine duckdb only", () => {
  const duck = permissionsFor("analyze", ["t"], { out: "o", engine: "duckdb" }, "/tmp");
  assert.equal(duck.ffi, true);
  assert.ok(denoArgs(duck, ["analyze"]).includes("--allow-ffi"));
  const stream = permissionsFor("analyze", ["t"], { out: "o", engine: "stream" }, "/tmp");
  assert.equal(stream.ffi, undefined);
  assert.ok(!denoArgs(stream, ["analyze"]).includes("--allow-ffi"));
});
