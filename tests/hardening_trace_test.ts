/**
 * Traces with wrong contents are refused by the reader itself: corrupted
 * routing (an expert twice in one token, a NaN weight), a shard listed twice,
 * a shard from another trace, a shard path that leaves the trace, and a shard
 * or shards folder that is a symlink out of it.
 */
import assert from "node:assert/strict";
import { DataError } from "../common/errors.ts";
import { syntheticCapture, syntheticDocs, syntheticModel } from "../trace/synthetic.ts";
import { type TraceDoc, TraceReader, TraceWriter } from "../trace/mod.ts";

const OPTIONS = {
  numExperts: 8,
  topK: 2,
  numLayers: 2,
  domains: [{ name: "A", docs: 6 }],
  tokensPerDoc: 5,
  seed: 3,
};

/** A trace of the synthetic documents after `edit` changed them; returns its folder. */
async function trace(edit: (docs: TraceDoc[]) => void = () => {}): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-hardening-" });
  const docs = [...syntheticDocs(OPTIONS)].map((d) => structuredClone(d));
  edit(docs);
  const writer = await TraceWriter.open(`${dir}/t`, {
    model: syntheticModel(OPTIONS),
    capture: syntheticCapture(OPTIONS),
  }, { rowsPerShard: 10, encoders: 0 });
  for (const doc of docs) await writer.add(doc);
  await writer.close();
  return dir;
}

async function readError(dir: string): Promise<string> {
  try {
    const reader = await TraceReader.open(dir);
    for await (const _ of reader.batches()) { /* read every shard */ }
  } catch (error) {
    assert.ok(error instanceof DataError, String((error as Error).stack));
    return error.message;
  }
  throw new Error(`${dir} was read without an error`);
}

Deno.test("the reader refuses an expert listed twice in a token and a non-finite weight", async () => {
  // Document 3, token 2, layer 1 (values [t, m, k] with M = 2, k = 2): experts [e, e].
  const twice = await trace((docs) => {
    const d = docs[3]!;
    d.experts[(2 * 2 + 1) * 2 + 1] = d.experts[(2 * 2 + 1) * 2]!;
  });
  assert.match(
    await readError(`${twice}/t`),
    /^Shard .*part-\d+\.parquet row \d+ \(document 3, position 2\) layer index 1 lists expert \d+ twice; a router picks different experts\.$/,
  );
  const nan = await trace((docs) => {
    docs[4]!.weights[3] = NaN;
  });
  assert.match(
    await readError(`${nan}/t`),
    /row \d+ \(document 4, position 0\) layer index 1 has gate weight NaN; weights must be finite\.$/,
  );
  const inf = await trace((docs) => {
    docs[0]!.weights[0] = Infinity;
  });
  assert.match(
    await readError(`${inf}/t`),
    /document 0, position 0\) layer index 0 has gate weight Infinity/,
  );
  for (const dir of [twice, nan, inf]) await Deno.remove(dir, { recursive: true });
});
