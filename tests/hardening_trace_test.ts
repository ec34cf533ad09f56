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

/** The manifest of the trace in `dir`, changed by `edit`. */
async function editManifest(dir: string, edit: (m: Record<string, unknown[]>) => void) {
  const manifest = JSON.parse(await Deno.readTextFile(`${dir}/manifest.json`));
  edit(manifest);
  await Deno.writeTextFile(`${dir}/manifest.json`, JSON.stringify(manifest));
}

Deno.test("a shard listed twice, a shard of another trace and a path out of the trace are refused", async () => {
  const a = await trace();
  const b = await trace();
  const listing = JSON.parse(await Deno.readTextFile(`${a}/t/manifest.json`));
  assert.ok(listing.shards.length >= 3 && /^[0-9a-f-]{36}$/.test(listing.trace_id));

  await editManifest(`${a}/t`, (m) => m.shards!.push(m.shards![0]));
  assert.match(
    await readError(`${a}/t`),
    /lists the shard "shards\/part-00000\.parquet" twice \(shards\[0\] and shards\[\d+\]\); its documents would be counted twice\.$/,
  );
  await Deno.writeTextFile(`${a}/t/manifest.json`, JSON.stringify(listing));
  // The same path spelled differently is the same shard.
  await editManifest(`${a}/t`, (m) => {
    m.shards!.push({ ...(m.shards![0] as object), file: "shards/../shards/part-00000.parquet" });
  });
  assert.match(await readError(`${a}/t`), /twice/);
  await Deno.writeTextFile(`${a}/t/manifest.json`, JSON.stringify(listing));

  // b's shard 1 (same model, same documents) copied over a's, with its manifest entry.
  const other = JSON.parse(await Deno.readTextFile(`${b}/t/manifest.json`));
  await Deno.copyFile(`${b}/t/shards/part-00001.parquet`, `${a}/t/shards/part-00001.parquet`);
  await editManifest(`${a}/t`, (m) => (m.shards![1] = other.shards[1]));
  assert.match(
    await readError(`${a}/t`),
    new RegExp(
      `part-00001\\.parquet belongs to another trace \\(id "${other.trace_id}", not ${listing.trace_id}\\)`,
    ),
  );

  for (
    const [file, expected] of [
      ["../b/t/shards/part-00000.parquet", /lies outside the trace; only a merged trace/],
      ["..", /lies outside the trace/],
      [".", /must name a file, got "\."\.$/],
      ["shards/", /must name a file, got "shards\/"/],
      ["", /must be a file path relative to the trace, got ""/],
    ] as const
  ) {
    await Deno.writeTextFile(`${a}/t/manifest.json`, JSON.stringify(listing));
    await editManifest(`${a}/t`, (m) => ((m.shards![0] as { file: string }).file = file));
    assert.match(await readError(`${a}/t`), expected, file);
  }
  // A folder listed as a shard (a name without a slash) is refused by its size, in one sentence.
  await Deno.writeTextFile(`${a}/t/manifest.json`, JSON.stringify(listing));
  await editManifest(`${a}/t`, (m) => ((m.shards![0] as { file: string }).file = "shards"));
  assert.match(await readError(`${a}/t`), /^(Cannot read shard|Shard) .*shards/);
  for (const dir of [a, b]) await Deno.remove(dir, { recursive: true });
});

Deno.test("a symlinked shard or shards folder that leaves the trace is refused before it is read", async () => {
  const dir = await trace();
  const secret = `${dir}/secret.txt`;
  await Deno.writeTextFile(secret, "PRIVATE KEY 0123456789");
  const listing = JSON.parse(await Deno.readTextFile(`${dir}/t/manifest.json`));
  // A shard replaced by a link to a file outside the trace, its manifest entry without checks.
  await Deno.remove(`${dir}/t/shards/part-00001.parquet`);
  await Deno.symlink(secret, `${dir}/t/shards/part-00001.parquet`);
  await editManifest(`${dir}/t`, (m) => {
    const entry = m.shards![1] as Record<string, unknown>;
    delete entry.bytes;
    delete entry.fingerprint;
  });
  const message = await readError(`${dir}/t`);
  assert.match(
    message,
    /^Shard shards\/part-00001\.parquet listed in .*manifest\.json is a symbolic link \(or lies under one\) that leaves/,
  );
  assert.ok(!/PRIVATE|0123|1347/.test(message), message);
  // A link that stays inside the trace is followed.
  await Deno.remove(`${dir}/t/shards/part-00001.parquet`);
  await Deno.writeTextFile(`${dir}/t/manifest.json`, JSON.stringify(listing));
  const fresh = await trace();
  await Deno.copyFile(`${fresh}/t/manifest.json`, `${dir}/t/manifest.json`);
  await Deno.mkdir(`${dir}/t/kept`);
  await Deno.copyFile(`${fresh}/t/shards/part-00001.parquet`, `${dir}/t/kept/part-00001.parquet`);
  for (const i of [0, 2, 3, 4, 5]) {
    const name = `part-0000${i}.parquet`;
    await Deno.copyFile(`${fresh}/t/shards/${name}`, `${dir}/t/shards/${name}`).catch(() => {});
  }
  await Deno.symlink("../kept/part-00001.parquet", `${dir}/t/shards/part-00001.parquet`);
  let rows = 0;
  for await (const batch of (await TraceReader.open(`${dir}/t`)).batches()) rows += batch.rows;
  assert.equal(rows, 30);
  await Deno.remove(fresh, { recursive: true });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("resuming a trace whose shards folder is a symlink writes and deletes nothing there", async () => {
  const dir = await trace();
  const elsewhere = `${dir}/elsewhere`;
  await Deno.mkdir(elsewhere);
  await Deno.writeTextFile(`${elsewhere}/keep.tmp-123`, "not moetrace's");
  for await (const entry of Deno.readDir(`${dir}/t/shards`)) {
    await Deno.rename(`${dir}/t/shards/${entry.name}`, `${elsewhere}/${entry.name}`);
  }
  await Deno.remove(`${dir}/t/shards`);
  await Deno.symlink(elsewhere, `${dir}/t/shards`);
  await assert.rejects(
    TraceWriter.open(`${dir}/t`, {
      model: syntheticModel(OPTIONS),
      capture: syntheticCapture(OPTIONS),
    }, { resume: true }),
    (e: Error) =>
      e instanceof DataError &&
      e.message ===
        `${dir}/t/shards is a symbolic link; a trace's shards folder must be a folder inside it, so that writing and tidying it stays there.`,
  );
  assert.equal(await Deno.readTextFile(`${elsewhere}/keep.tmp-123`), "not moetrace's");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a temporary name planted as a symlink is replaced, never written through", async () => {
  const { writeFileAtomic, removeStaleTemporaries } = await import("../common/atomic_write.ts");
  const dir = await Deno.makeTempDir({ prefix: "moetrace-hardening-" });
  await Deno.writeTextFile(`${dir}/target`, "untouched");
  await Deno.symlink(`${dir}/target`, `${dir}/out.csv.tmp-${Deno.pid}`);
  await writeFileAtomic(`${dir}/out.csv`, "a,b\n");
  assert.equal(await Deno.readTextFile(`${dir}/target`), "untouched");
  assert.equal(await Deno.readTextFile(`${dir}/out.csv`), "a,b\n");
  await Deno.symlink(`${dir}/target`, `${dir}/x.tmp-99`);
  await removeStaleTemporaries(dir);
  assert.equal(await Deno.readTextFile(`${dir}/target`), "untouched");
  await assert.rejects(Deno.lstat(`${dir}/x.tmp-99`), Deno.errors.NotFound);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a merged trace reads its parts' shards and carries their ids", async () => {
  const { mergeTraces } = await import("../trace/merge.ts");
  const a = await trace();
  // A single part (--shard 0/1) merges into a trace that lists its shards in place.
  await editManifest(`${a}/t`, (m) => {
    const capture = m.capture as unknown as Record<string, unknown>;
    capture.settings = { shard: "0/1", selected_docs: 6 };
  });
  const merged = await mergeTraces([`${a}/t`], `${a}/merged`);
  const part = JSON.parse(await Deno.readTextFile(`${a}/t/manifest.json`));
  assert.deepEqual(merged.capture.merged_trace_ids, [part.trace_id]);
  assert.notEqual(merged.trace_id, part.trace_id);
  const reader = await TraceReader.open(`${a}/merged`);
  let rows = 0;
  for await (const batch of reader.batches()) rows += batch.rows;
  assert.equal(rows, 30);
  await Deno.remove(a, { recursive: true });
});
