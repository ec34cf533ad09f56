import assert from "node:assert/strict";
import {
  syntheticCapture,
  syntheticDocs,
  syntheticModel,
  writeSyntheticTrace,
} from "./synthetic.ts";
import { readManifest, shardFingerprint, type TraceDoc, TraceReader, TraceWriter } from "./mod.ts";
import { DataError } from "../common/errors.ts";

const OPTIONS = {
  numExperts: 8,
  topK: 2,
  numLayers: 3,
  domains: [{ name: "ArXiv", docs: 20 }, { name: "Github", docs: 20 }, {
    name: "EuroParl",
    docs: 20,
  }],
  tokensPerDoc: 37,
  probs: true,
  lookahead: 2,
  stickiness: 0.3,
  seed: 7,
};

async function readAll(dir: string): Promise<TraceDoc[]> {
  const reader = await TraceReader.open(dir);
  const docs: TraceDoc[] = [];
  for await (const doc of reader.documents()) docs.push(structuredClone(doc));
  return docs;
}

function assertSameDocs(actual: TraceDoc[], expected: TraceDoc[]): void {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    assert.equal(a.doc, e.doc);
    assert.equal(a.domain, e.domain);
    assert.deepEqual(Array.from(a.tokens), Array.from(e.tokens));
    assert.deepEqual(a.pieces, e.pieces);
    assert.deepEqual(Array.from(a.experts), Array.from(e.experts));
    assert.deepEqual(Array.from(a.weights), Array.from(e.weights));
    assert.deepEqual(Array.from(a.probs ?? []), Array.from(e.probs ?? []));
    assert.deepEqual(Array.from(a.spec ?? []), Array.from(e.spec ?? []));
  }
}

Deno.test("a synthetic trace of 3 domains × 20 documents in several shards reads back equal", async () => {
  const dir = await Deno.makeTempDir();
  await writeSyntheticTrace(dir, OPTIONS, { rowsPerShard: 200 });
  const manifest = await readManifest(dir);
  assert.ok(manifest.shards.length >= 5, `expected several shards, got ${manifest.shards.length}`);
  assert.equal(manifest.shards.reduce((n, s) => n + s.docs, 0), 60);
  assert.equal(manifest.shards.reduce((n, s) => n + s.rows, 0), 60 * 37);
  assert.equal(manifest.capture.complete, true);
  assertSameDocs(await readAll(dir), [...syntheticDocs(OPTIONS)]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("an abandoned writer leaves a readable trace and resuming equals an uninterrupted run", async () => {
  const whole = await Deno.makeTempDir();
  const broken = await Deno.makeTempDir();
  await writeSyntheticTrace(whole, OPTIONS, { rowsPerShard: 200 });
  const init = { model: syntheticModel(OPTIONS), capture: syntheticCapture(OPTIONS) };
  const docs = [...syntheticDocs(OPTIONS)];
  // First run: 31 documents queued, then the process "dies" without close().
  const first = await TraceWriter.open(broken, init, { rowsPerShard: 200 });
  for (const doc of docs.slice(0, 31)) await first.add(doc);
  // A crash mid-rename leaves a temporary file behind.
  await Deno.writeTextFile(`${broken}/shards/00099.arrow.tmp-12345`, "half a shard");
  const partial = await readAll(broken);
  assert.ok(partial.length > 0 && partial.length < 31, "only whole shards are visible");
  assertSameDocs(partial, docs.slice(0, partial.length));
  assert.equal((await readManifest(broken)).capture.complete, false);
  // Second run: skip what is done, as capture does.
  const second = await TraceWriter.open(broken, init, { rowsPerShard: 200, resume: true });
  assert.equal(second.completedDocs.size, partial.length);
  for (const doc of docs) if (!second.completedDocs.has(doc.doc)) await second.add(doc);
  await second.close();
  assertSameDocs(await readAll(broken), await readAll(whole));
  const names = [...Deno.readDirSync(`${broken}/shards`)].map((e) => e.name);
  assert.ok(names.every((n) => n.endsWith(".arrow")), `stale temporaries left: ${names}`);
  await Deno.remove(whole, { recursive: true });
  await Deno.remove(broken, { recursive: true });
});

Deno.test("opening an existing trace without resume refuses to overwrite it", async () => {
  const dir = await Deno.makeTempDir();
  await writeSyntheticTrace(dir, { ...OPTIONS, domains: [{ name: "A", docs: 1 }] });
  const init = { model: syntheticModel(OPTIONS), capture: syntheticCapture(OPTIONS) };
  await assert.rejects(
    () => TraceWriter.open(dir, init),
    (e) => e instanceof DataError && /already holds a trace/.test(e.message),
  );
  await assert.rejects(
    () =>
      TraceWriter.open(dir, { ...init, model: { ...init.model, num_experts: 16 } }, {
        resume: true,
      }),
    (e) => e instanceof DataError && /model.num_experts is 8, this run has 16/.test(e.message),
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("the reader names the fault in a damaged trace", async (t) => {
  const options = { ...OPTIONS, domains: [{ name: "A", docs: 4 }] };
  async function damaged(damage: (dir: string) => Promise<void>): Promise<string> {
    const dir = await Deno.makeTempDir();
    await writeSyntheticTrace(dir, options, { rowsPerShard: 50 });
    await damage(dir);
    try {
      await readAll(dir);
    } catch (error) {
      assert.ok(error instanceof DataError, `expected a DataError, got ${error}`);
      return error.message;
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
    throw new Error("the damaged trace was read without complaint");
  }
  type ManifestJson = {
    format: string;
    model: { top_k: number };
    shards: { file: string; rows: number; docs: number; bytes?: number; fingerprint?: string }[];
  };
  const editManifestAsync =
    (edit: (m: ManifestJson, dir: string) => Promise<void>) => async (dir: string) => {
      const m = JSON.parse(await Deno.readTextFile(`${dir}/manifest.json`));
      await edit(m, dir);
      await Deno.writeTextFile(`${dir}/manifest.json`, JSON.stringify(m));
    };
  const editManifest = (edit: (m: ManifestJson) => void) => async (dir: string) => {
    const m = JSON.parse(await Deno.readTextFile(`${dir}/manifest.json`));
    edit(m);
    await Deno.writeTextFile(`${dir}/manifest.json`, JSON.stringify(m));
  };
  /** Makes the manifest agree with the shards as they are now (a consistent but wrong trace). */
  const refingerprint = editManifestAsync(async (m, dir) => {
    for (const s of m.shards) {
      const bytes = await Deno.readFile(`${dir}/${s.file}`);
      s.bytes = bytes.length;
      s.fingerprint = await shardFingerprint(bytes);
    }
  });
  await t.step("missing shard", async () => {
    const msg = await damaged((dir) => Deno.remove(`${dir}/shards/00001.arrow`));
    assert.match(msg, /^Shard shards\/00001.arrow listed in .*manifest.json does not exist\.$/);
  });
  await t.step("wrong row count", async () => {
    const msg = await damaged(editManifest((m) => m.shards[0]!.rows += 1));
    assert.match(msg, /has 74 rows but the manifest says 75\.$/);
  });
  await t.step("wrong document count", async () => {
    const msg = await damaged(editManifest((m) => m.shards[0]!.docs = 3));
    assert.match(msg, /holds 2 documents but the manifest says 3\.$/);
  });
  await t.step("column of the wrong length", async () => {
    const msg = await damaged(editManifest((m) => m.model.top_k = 3));
    assert.match(msg, /column "experts" has 6 values per row, expected 9\.$/);
  });
  await t.step("column of the wrong type", async () => {
    const msg = await damaged(async (dir) => {
      const { tableFromIPC, tableToIPC, Table, vectorFromArray, Float64 } = await import(
        "apache-arrow"
      );
      const path = `${dir}/shards/00000.arrow`;
      const table = tableFromIPC(await Deno.readFile(path));
      const columns: Record<string, unknown> = {};
      for (const f of table.schema.fields) columns[f.name] = table.getChild(f.name);
      columns.pos = vectorFromArray(
        Array.from({ length: table.numRows }, (_, i) => i),
        new Float64(),
      );
      await Deno.writeFile(path, tableToIPC(new Table(columns as never), "file"));
      await refingerprint(dir);
    });
    assert.match(msg, /column "pos" has type Float64, expected Uint32\.$/);
  });
  await t.step("shard changed after the manifest was written", async () => {
    const msg = await damaged(async (dir) => {
      const path = `${dir}/shards/00000.arrow`;
      const bytes = await Deno.readFile(path);
      bytes[100] = bytes[100]! ^ 0xff;
      await Deno.writeFile(path, bytes);
    });
    assert.match(
      msg,
      /00000\.arrow does not match its fingerprint in the manifest; it is corrupted or was changed\.$/,
    );
  });
  await t.step("expert id out of range", async () => {
    const msg = await damaged(async (dir) => {
      const { tableFromIPC, tableToIPC } = await import("apache-arrow");
      const path = `${dir}/shards/00000.arrow`;
      const table = tableFromIPC(await Deno.readFile(path));
      const experts = table.getChild("experts")!.data[0]!.children[0]!.values as Uint16Array;
      experts[5] = 8;
      await Deno.writeFile(path, tableToIPC(table, "file"));
      await refingerprint(dir);
    });
    assert.match(msg, /column "experts" holds expert id 8, but the model has 8 experts\.$/);
  });
  await t.step("truncated shard", async () => {
    const msg = await damaged(async (dir) => {
      const path = `${dir}/shards/00000.arrow`;
      const bytes = await Deno.readFile(path);
      await Deno.writeFile(path, bytes.subarray(0, bytes.length >> 1));
    });
    assert.match(msg, /has \d+ bytes but the manifest says \d+; it is truncated or was changed\.$/);
  });
  await t.step("truncated shard in a trace without fingerprints", async () => {
    const msg = await damaged(async (dir) => {
      const path = `${dir}/shards/00000.arrow`;
      const bytes = await Deno.readFile(path);
      await Deno.writeFile(path, bytes.subarray(0, bytes.length >> 1));
      await editManifest((m) => {
        for (const s of m.shards) {
          delete s.bytes;
          delete s.fingerprint;
        }
      })(dir);
    });
    assert.match(msg, /is not a readable Arrow IPC file/);
  });
  await t.step("unknown format version", async () => {
    const msg = await damaged(editManifest((m) => m.format = "moetrace-trace/2"));
    assert.match(msg, /has format "moetrace-trace\/2", expected "moetrace-trace\/1"\.$/);
  });
});
