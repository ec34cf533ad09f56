/**
 * The count tables of the SQL in this folder, run by DuckDB on a trace's
 * Parquet shards, equal those the streaming pass holds, row for row, on a
 * trace with several domains and shards, top-3 routing (so second choices
 * and every overlap size occur), sticky routing (repetition) and a document
 * of one token (no pair).
 */
import assert from "node:assert/strict";
import { syntheticCapture, syntheticDocs, syntheticModel } from "../../trace/synthetic.ts";
import { TraceReader, TraceWriter } from "../../trace/mod.ts";
import { accumulateTrace } from "../run.ts";
import { COUNT_TABLE_NAMES, countsFromAccumulator } from "./counts.ts";
import { countsWithDuckDB } from "./duckdb.ts";

const OPTIONS = {
  numExperts: 6,
  topK: 3,
  numLayers: 3,
  tokensPerDoc: 40,
  stickiness: 0.5,
  domains: [{ name: "ArXiv", docs: 7 }, { name: "Github", docs: 5 }],
  seed: 11,
};

Deno.test("DuckDB's count tables equal the streaming pass's", async () => {
  const dir = await Deno.makeTempDir();
  const model = { ...syntheticModel(OPTIONS), moe_layers: [1, 2, 4], num_layers: 5 };
  const writer = await TraceWriter.open(dir, { model, capture: syntheticCapture(OPTIONS) }, {
    rowsPerShard: 150,
  });
  const docs = [...syntheticDocs(OPTIONS)];
  // Trace order interleaves the domains, and one document has a single token.
  docs.sort((a, b) => (a.doc % 5) - (b.doc % 5) || a.doc - b.doc);
  const mk = OPTIONS.numLayers * OPTIONS.topK;
  const short = docs[3]!;
  docs[3] = {
    ...short,
    tokens: short.tokens.subarray(0, 1),
    pieces: short.pieces.slice(0, 1),
    experts: short.experts.subarray(0, mk),
    weights: short.weights.subarray(0, mk),
  };
  for (const doc of docs) await writer.add(doc);
  await writer.close();
  const reader = await TraceReader.open(dir);
  assert.ok(reader.manifest.shards.length >= 3);
  const streamed = countsFromAccumulator(await accumulateTrace(reader), model.moe_layers);
  const counted = await countsWithDuckDB(reader, { threads: 2 });
  for (const name of COUNT_TABLE_NAMES) {
    assert.ok(streamed[name].length > 0, `${name} is empty`);
    assert.deepEqual(counted[name], streamed[name], name);
  }
  // What the tables say, by hand for one cell: every token has k experts in each layer.
  const anyTokens = streamed.expert_counts.reduce((n, r) => n + (r.any_tokens as number), 0);
  assert.equal(anyTokens, reader.rows * mk);
  assert.deepEqual([...new Set(streamed.overlap.map((r) => r.shared))].sort(), [0, 1, 2, 3]);
  assert.equal(streamed.repetition.filter((r) => r.doc === short.doc).length, 0);
  await Deno.remove(dir, { recursive: true });
});
