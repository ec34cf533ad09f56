import { deepStrictEqual as assertEquals, rejects } from "node:assert";
import { syntheticCapture, syntheticDocs, syntheticModel } from "../trace/synthetic.ts";
import { TraceWriter } from "../trace/mod.ts";
import { accessCounts, loadAccessTrace } from "./access_trace.ts";

const options = {
  numLayers: 2,
  numExperts: 4,
  topK: 2,
  lookahead: 1,
  tokensPerDoc: 5,
  domains: [{ name: "A", docs: 3 }],
};

async function traceWith(
  edit: (doc: ReturnType<typeof syntheticDocs> extends Generator<infer D> ? D : never) => void,
) {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-access-trace-" });
  const writer = await TraceWriter.open(`${dir}/t`, {
    model: syntheticModel(options),
    capture: syntheticCapture(options),
  });
  let first = true;
  for (const doc of syntheticDocs(options)) {
    if (first) edit(doc);
    first = false;
    await writer.add(doc);
  }
  await writer.close();
  return `${dir}/t`;
}

Deno.test("loadAccessTrace reads every shard into compact arrays", async () => {
  const dir = await traceWith(() => {});
  const { trace } = await loadAccessTrace(dir);
  assertEquals([trace.tokens, trace.layers, trace.experts, trace.topK, trace.lookahead], [
    15,
    2,
    4,
    2,
    1,
  ]);
  assertEquals(trace.chosen.length, 15 * 2 * 2);
  assertEquals(trace.spec!.length, 15 * 2 * 1 * 2);
  assertEquals(accessCounts(trace).reduce((a, b) => a + b), 60);
  const withoutSpec = await loadAccessTrace(dir, { spec: false });
  assertEquals(withoutSpec.trace.spec, null);
});

Deno.test("loadAccessTrace rejects repeated experts and half-empty speculative picks", async () => {
  const repeated = await traceWith((doc) => {
    doc.experts[2 * 2 + 1] = doc.experts[2 * 2]!; // token 1, layer 0
  });
  // The trace reader refuses it (and names the shard, row and layer).
  await rejects(
    loadAccessTrace(repeated),
    /row 1 \(document 0, position 1\) layer index 0 lists expert \d twice/,
  );
  const halfEmpty = await traceWith((doc) => {
    doc.spec![(0 * 2 + 0) * 2 + 1] = 65535; // token 0, layer 0, lookahead 1
  });
  await rejects(
    loadAccessTrace(halfEmpty),
    /token 0 layer 0 lookahead 1 has speculative picks \[\d, 65535\]/,
  );
});
