/**
 * What the Parquet writer leaves out: in a trace whose log recorded no gate
 * weights (capture.weights_recorded false) a shard whose weights are all the
 * 1/k placeholder is written without a `weights` column, and readers give
 * every choice 1/k; a shard holding any other weight keeps its column, and
 * shards written before the column became optional read as they are. And
 * what a "routing" read leaves out (BatchOptions.columns).
 */
import * as assert from "node:assert/strict";
import { parquetToTable } from "./parquet.ts";
import {
  syntheticCapture,
  syntheticDocs,
  syntheticModel,
  writeSyntheticTrace,
} from "./synthetic.ts";
import {
  type ShardFormat,
  type TraceBatch,
  type TraceDoc,
  TraceReader,
  TraceWriter,
} from "./mod.ts";

const OPTIONS = { numLayers: 3, topK: 2, numExperts: 8, tokensPerDoc: 30, seed: 5 };

/** 7 documents of 30 tokens, 2 per shard; `placeholders`: which get 1/k weights (as importers give). */
async function writeTrace(
  dir: string,
  weightsRecorded: boolean | undefined,
  placeholders: (doc: number) => boolean = () => true,
): Promise<TraceDoc[]> {
  const docs = [...syntheticDocs({ ...OPTIONS, domains: [{ name: "A", docs: 7 }] })];
  for (const doc of docs) {
    if (placeholders(doc.doc)) {
      doc.weights = new Float32Array(doc.weights.length).fill(1 / OPTIONS.topK);
    }
  }
  const capture = syntheticCapture(OPTIONS);
  const writer = await TraceWriter.open(dir, {
    model: syntheticModel(OPTIONS),
    capture: weightsRecorded === undefined
      ? capture
      : { ...capture, weights_recorded: weightsRecorded },
  }, { rowsPerShard: 60 });
  for (const doc of docs) await writer.add(doc);
  await writer.close();
  return docs;
}

Deno.test("a trace without recorded weights has no weights column and reads 1/k", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const docs = await writeTrace(dir, false);
    const reader = await TraceReader.open(dir);
    assert.ok(reader.manifest.shards.length >= 2);
    for (const shard of reader.manifest.shards) {
      const columns = parquetToTable(await Deno.readFile(`${dir}/${shard.file}`)).schema.fields
        .map((f) => f.name);
      assert.deepEqual(columns, ["doc", "domain", "pos", "token", "piece", "phase", "experts"]);
    }
    const read: TraceDoc[] = [];
    for await (const doc of reader.documents()) read.push(doc);
    assert.equal(read.length, docs.length);
    for (const [i, doc] of read.entries()) {
      assert.deepEqual(doc.experts, docs[i]!.experts);
      assert.deepEqual(doc.tokens, docs[i]!.tokens);
      assert.equal(doc.weights.length, docs[i]!.weights.length);
      assert.ok(doc.weights.every((w) => w === Math.fround(1 / OPTIONS.topK)));
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a shard holding any weight but 1/k keeps its weights column", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // Document 3 (in the second shard) has real weights, the others 1/k.
    const docs = await writeTrace(dir, false, (doc) => doc !== 3);
    const reader = await TraceReader.open(dir);
    const kept = [];
    for (const shard of reader.manifest.shards) {
      const table = parquetToTable(await Deno.readFile(`${dir}/${shard.file}`));
      kept.push(table.getChild("weights") !== null);
    }
    assert.deepEqual(kept, [false, true, false, false]);
    const read: TraceDoc[] = [];
    for await (const doc of reader.documents()) read.push(doc);
    assert.deepEqual(read.map((d) => d.weights), docs.map((d) => d.weights));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("shards with a stored weights column read as stored when the manifest says not recorded", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const docs = await writeTrace(dir, undefined, () => false);
    // A trace imported before the column became optional: its shards hold one.
    const manifest = JSON.parse(await Deno.readTextFile(`${dir}/manifest.json`));
    manifest.capture.weights_recorded = false;
    await Deno.writeTextFile(`${dir}/manifest.json`, JSON.stringify(manifest));
    const read: TraceDoc[] = [];
    for await (const doc of (await TraceReader.open(dir)).documents()) read.push(doc);
    assert.deepEqual(read.map((d) => d.weights), docs.map((d) => d.weights));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a routing read decodes all but weights, probs and pieces, equal to a full read", async () => {
  for (const format of ["parquet", "arrow"] as ShardFormat[]) {
    const dir = await Deno.makeTempDir();
    try {
      const options = { ...OPTIONS, probs: true, lookahead: 1, domains: [{ name: "A", docs: 9 }] };
      await writeSyntheticTrace(dir, options, { rowsPerShard: 60, format });
      const reader = await TraceReader.open(dir);
      const read = async (columns: "all" | "routing", workers: number) => {
        const batches: TraceBatch[] = [];
        for await (const batch of reader.batches({ columns, workers })) batches.push(batch);
        return batches;
      };
      const full = await read("all", 0);
      assert.ok(full.length >= 3);
      for (const workers of [0, 2]) {
        const routing = await read("routing", workers);
        assert.equal(routing.length, full.length);
        for (const [i, batch] of routing.entries()) {
          const want = full[i]!;
          for (
            const key of ["rows", "doc", "domainCodes", "domainNames", "pos", "token"] as const
          ) {
            assert.deepEqual(batch[key], want[key], `${format} ${workers} ${key}`);
          }
          assert.deepEqual(batch.phase, want.phase);
          assert.deepEqual(batch.experts, want.experts);
          assert.deepEqual(batch.spec, want.spec);
          assert.ok(want.probs && want.probs.length > 0 && want.weights.length > 0);
          assert.equal(batch.probs, null);
          assert.equal(batch.weights.length, 0);
          assert.equal(batch.pieceCodes.length, 0);
          assert.deepEqual(batch.pieceNames, []);
        }
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});
