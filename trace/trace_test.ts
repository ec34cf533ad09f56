import assert from "node:assert/strict";
import {
  syntheticCapture,
  syntheticDocs,
  syntheticModel,
  writeSyntheticTrace,
} from "./synthetic.ts";
import {
  readManifest,
  shardFingerprint,
  type ShardFormat,
  type TraceDoc,
  TraceReader,
  TraceWriter,
} from "./mod.ts";
import { parquetToTable, tableToParquet } from "./parquet.ts";
import { shardTable } from "./schema.ts";
import { DataError } from "../common/errors.ts";
import * as arrow from "apache-arrow";

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
  await Deno.writeTextFile(`${broken}/shards/part-00099.parquet.tmp-12345`, "half a shard");
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
  assert.ok(
    names.every((n) => /^part-\d{5}\.parquet$/.test(n)),
    `stale temporaries left: ${names}`,
  );
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

Deno.test("an Arrow IPC trace stays readable and a resumed run adds Parquet shards to it", async () => {
  const docs = [...syntheticDocs(OPTIONS)];
  const init = { model: syntheticModel(OPTIONS), capture: syntheticCapture(OPTIONS) };
  const dir = await Deno.makeTempDir();
  const old = await TraceWriter.open(dir, init, { rowsPerShard: 200, format: "arrow" });
  for (const doc of docs.slice(0, 30)) await old.add(doc);
  await old.flush();
  const resumed = await TraceWriter.open(dir, init, { rowsPerShard: 200, resume: true });
  for (const doc of docs.slice(30)) await resumed.add(doc);
  await resumed.close();
  const files = (await readManifest(dir)).shards.map((s) => s.file);
  assert.ok(files.includes("shards/00000.arrow"), `shards: ${files}`);
  assert.ok(files.at(-1)!.endsWith(".parquet"), `shards: ${files}`);
  assertSameDocs(await readAll(dir), docs);
  await Deno.remove(dir, { recursive: true });
});

for (const format of ["parquet", "arrow"] as ShardFormat[]) {
  Deno.test(`the reader names the fault in a damaged ${format} trace`, (t) =>
    damagedTrace(t, format));
}

async function damagedTrace(t: Deno.TestContext, format: ShardFormat): Promise<void> {
  const options = { ...OPTIONS, domains: [{ name: "A", docs: 4 }] };
  const first = format === "parquet" ? "shards/part-00000.parquet" : "shards/00000.arrow";
  const second = format === "parquet" ? "shards/part-00001.parquet" : "shards/00001.arrow";
  const decode = (bytes: Uint8Array) =>
    format === "parquet" ? parquetToTable(bytes) : arrow.tableFromIPC(bytes);
  const encode = (table: arrow.Table) =>
    format === "parquet" ? tableToParquet(table) : arrow.tableToIPC(table, "file");
  async function damaged(damage: (dir: string) => Promise<void>): Promise<string> {
    const dir = await Deno.makeTempDir();
    await writeSyntheticTrace(dir, options, { rowsPerShard: 50, format });
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
    const msg = await damaged((dir) => Deno.remove(`${dir}/${second}`));
    assert.equal(
      msg.replace(/ in .*manifest/, " in manifest"),
      `Shard ${second} listed in manifest.json does not exist.`,
    );
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
      const path = `${dir}/${first}`;
      const table = decode(await Deno.readFile(path));
      const columns: Record<string, unknown> = {};
      for (const f of table.schema.fields) columns[f.name] = table.getChild(f.name);
      columns.pos = arrow.vectorFromArray(
        Array.from({ length: table.numRows }, (_, i) => i),
        new arrow.Float64(),
      );
      await Deno.writeFile(path, encode(new arrow.Table(columns as never)));
      await refingerprint(dir);
    });
    assert.match(msg, /column "pos" has type Float64, expected Uint32\.$/);
  });
  await t.step("shard changed after the manifest was written", async () => {
    const msg = await damaged(async (dir) => {
      const path = `${dir}/${first}`;
      const bytes = await Deno.readFile(path);
      bytes[100] = bytes[100]! ^ 0xff;
      await Deno.writeFile(path, bytes);
    });
    assert.ok(
      msg.endsWith(
        `${first} does not match its fingerprint in the manifest; it is corrupted or was changed.`,
      ),
      msg,
    );
  });
  await t.step("expert id out of range", async () => {
    const msg = await damaged(async (dir) => {
      const path = `${dir}/${first}`;
      const table = decode(await Deno.readFile(path));
      const experts = table.getChild("experts")!.data[0]!.children[0]!.values as Uint16Array;
      experts[5] = 8;
      await Deno.writeFile(path, encode(table));
      await refingerprint(dir);
    });
    assert.match(msg, /column "experts" holds expert id 8, but the model has 8 experts\.$/);
  });
  await t.step("truncated shard", async () => {
    const msg = await damaged(async (dir) => {
      const path = `${dir}/${first}`;
      const bytes = await Deno.readFile(path);
      await Deno.writeFile(path, bytes.subarray(0, bytes.length >> 1));
    });
    assert.match(msg, /has \d+ bytes but the manifest says \d+; it is truncated or was changed\.$/);
  });
  await t.step("truncated shard in a trace without fingerprints", async () => {
    const msg = await damaged(async (dir) => {
      const path = `${dir}/${first}`;
      const bytes = await Deno.readFile(path);
      await Deno.writeFile(path, bytes.subarray(0, bytes.length >> 1));
      await editManifest((m) => {
        for (const s of m.shards) {
          delete s.bytes;
          delete s.fingerprint;
        }
      })(dir);
    });
    assert.match(
      msg,
      format === "parquet"
        ? /is not a readable Parquet file: /
        : /is not a readable Arrow IPC file/,
    );
  });
  await t.step("unknown format version", async () => {
    const msg = await damaged(editManifest((m) => m.format = "moetrace-trace/2"));
    assert.match(msg, /has format "moetrace-trace\/2", expected "moetrace-trace\/1"\.$/);
  });
}

Deno.test("shards encoded by worker threads equal shards encoded on the writer's thread", async () => {
  // Shards of 3 documents × 3,000 tokens: past the size below which the writer keeps them.
  const options = { ...OPTIONS, numLayers: 1, lookahead: 0, tokensPerDoc: 3000 };
  options.domains = [{ name: "A", docs: 9 }];
  const inline = await Deno.makeTempDir();
  const pooled = await Deno.makeTempDir();
  // One trace id for both: shards carry it, and the fingerprints compared cover it.
  const traceId = "00000000-0000-4000-8000-000000000000";
  await writeSyntheticTrace(inline, options, { rowsPerShard: 9000, encoders: 0, traceId });
  await writeSyntheticTrace(pooled, options, { rowsPerShard: 9000, encoders: 2, traceId });
  const a = await readManifest(inline);
  const b = await readManifest(pooled);
  assert.equal(b.shards.length, 3);
  assert.deepEqual(
    b.shards.map((s) => [s.file, s.rows, s.docs, s.fingerprint]),
    a.shards.map((s) => [s.file, s.rows, s.docs, s.fingerprint]),
  );
  assertSameDocs(await readAll(pooled), [...syntheticDocs(options)]);
  await Deno.remove(inline, { recursive: true });
  await Deno.remove(pooled, { recursive: true });
});

Deno.test("shards read by worker threads come back in order, equal to reading them in place", async () => {
  const dir = await Deno.makeTempDir();
  await writeSyntheticTrace(dir, OPTIONS, { rowsPerShard: 200 });
  const reader = await TraceReader.open(dir);
  const inPlace = [];
  for await (const batch of reader.batches({ workers: 0 })) inPlace.push(structuredClone(batch));
  const pooled = [];
  for await (const batch of reader.batches({ workers: 2 })) pooled.push(batch);
  assert.ok(pooled.length >= 5);
  assert.deepEqual(pooled, inPlace);
  // A damaged shard is reported as from the caller's thread, in its turn.
  const file = `${dir}/${reader.manifest.shards[3]!.file}`;
  const bytes = await Deno.readFile(file);
  bytes[50] = bytes[50]! ^ 0xff;
  await Deno.writeFile(file, bytes);
  let seen = 0;
  await assert.rejects(
    async () => {
      for await (const _ of reader.batches({ workers: 2 })) seen++;
    },
    (e) =>
      e instanceof DataError && /does not match its fingerprint in the manifest/.test(e.message),
  );
  assert.equal(seen, 3);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("token pieces in any script come back from a shard's dictionary as written", () => {
  // ASCII, two- and three-byte UTF-8, a surrogate pair, an empty piece: the
  // dictionary's bytes are encoded in one go when all are ASCII, else one by one.
  const cases = [["12", "7", "12", "300"], ["a", "é→", "", "日本", "🙂x", "a"]];
  for (const pieces of cases) {
    const t = pieces.length;
    const shape = { layers: 1, topK: 1, experts: 2, lookahead: 0, probs: false };
    const table = shardTable([{
      doc: 0,
      domain: "d",
      tokens: new Uint32Array(t),
      pieces,
      experts: new Uint16Array(t),
      weights: new Float32Array(t).fill(1),
    }], shape);
    assert.deepEqual(table.getChild("piece")!.toArray(), pieces);
    const back = parquetToTable(tableToParquet(table));
    assert.deepEqual([...back.getChild("piece")!], pieces);
  }
});
