/**
 * The fast Parquet path against parquet-wasm, the reference: every column of
 * every kind a shard can hold decodes to the same values, types and schema
 * metadata; files outside the fast path's subset (version 1 pages, other
 * codecs, several row groups of strings, nulls) fall back to parquet-wasm and
 * still read the same; damaged bytes are never decoded into a table the
 * reference would not give.
 */
import * as assert from "node:assert/strict";
import * as arrow from "apache-arrow";
import * as parquet from "parquet-wasm";
import { fastParquetToTable } from "./parquet_decode.ts";
import {
  parquetToTable,
  parquetWasmToTable,
  tableToParquet,
  tableToParquetWasm,
} from "./parquet.ts";
import { encodeShardParquet } from "./parquet_encode.ts";
import { shardTable, type TraceDoc } from "./schema.ts";
import type { RowShape } from "./manifest.ts";
import { Rng } from "../common/random.ts";

/** T tokens per document; experts < E; every optional column present. */
function docs(shape: RowShape, count: number, tokens: number, seed: number): TraceDoc[] {
  const rng = new Rng(seed);
  const mk = shape.layers * shape.topK;
  const out: TraceDoc[] = [];
  for (let d = 0; d < count; d++) {
    const t = tokens + (d % 3);
    const experts = Uint16Array.from({ length: t * mk }, () => rng.int(shape.experts));
    const spec = Uint16Array.from(
      { length: t * mk * shape.lookahead },
      (_, i) => i % 7 === 0 ? 65535 : rng.int(shape.experts),
    );
    out.push({
      doc: 1000 + d * 3,
      domain: ["ArXiv", "Github", "Pile-CC"][d % 3]!,
      tokens: Uint32Array.from({ length: t }, () => rng.int(4_000_000_000)),
      pieces: Array.from({ length: t }, (_, i) => i % 5 === 0 ? "é→" : `p${rng.int(300)}`),
      phase: Uint8Array.from({ length: t }, (_, i) => i < t / 2 ? 0 : 1),
      experts,
      weights: Float32Array.from({ length: t * mk }, () => rng.next()),
      probs: Float32Array.from({ length: t * shape.layers * shape.experts }, () => rng.next()),
      spec,
      request: `req-${d % 4}`,
      arrivalStep: d * 17,
    });
  }
  return out;
}

/** Asserts two tables hold the same schema (types, metadata) and the same values, column by column. */
function assertSameTable(actual: arrow.Table, expected: arrow.Table): void {
  assert.equal(actual.numRows, expected.numRows);
  assert.deepEqual(
    actual.schema.fields.map((f) => `${f.name}: ${f.type} ${f.nullable}`),
    expected.schema.fields.map((f) => `${f.name}: ${f.type} ${f.nullable}`),
  );
  assert.deepEqual(
    [...actual.schema.metadata].sort(),
    [...expected.schema.metadata].sort(),
  );
  for (const field of expected.schema.fields) {
    const a = actual.getChild(field.name)!;
    const e = expected.getChild(field.name)!;
    if (arrow.DataType.isFixedSizeList(field.type)) {
      const values = (v: arrow.Vector) =>
        v.data.flatMap((d) => Array.from(d.children[0]!.values as ArrayLike<number>));
      assert.deepEqual(values(a), values(e), field.name);
    } else {
      assert.deepEqual(a.toArray(), e.toArray(), field.name);
    }
  }
}

const SHAPE: RowShape = {
  layers: 3,
  topK: 2,
  experts: 16,
  lookahead: 2,
  probs: true,
  requests: true,
  arrivalSteps: true,
};

/** Shards as moetrace writes them now, and as parquet-wasm wrote them (traces made before). */
const WRITERS: [string, (table: arrow.Table) => Uint8Array][] = [
  ["moetrace's encoder", (table) => encodeShardParquet(table) ?? assert.fail("encoder refused")],
  ["parquet-wasm", tableToParquetWasm],
];

for (const [writer, write] of WRITERS) {
  Deno.test(`the fast path reads every column of a shard as parquet-wasm does (${writer})`, () => {
    const table = shardTable(docs(SHAPE, 30, 40, 1), SHAPE);
    const bytes = write(table);
    const fast = fastParquetToTable(bytes);
    assert.ok(fast, "the fast path refused a shard moetrace wrote");
    assertSameTable(fast, parquetWasmToTable(bytes));
    assertSameTable(fast, table);
    // Only the columns asked for.
    const docOnly = fastParquetToTable(bytes, ["doc"])!;
    assert.deepEqual(docOnly.schema.fields.map((f) => f.name), ["doc"]);
    assert.deepEqual(docOnly.getChild("doc")!.toArray(), table.getChild("doc")!.toArray());
  });

  Deno.test(`the fast path reads columns over many pages, with large and negative-delta values (${writer})`, () => {
    // 3,000 rows × 3 layers × 64 experts of probs: 2.3 MB of floats, several 1 MB pages.
    const shape: RowShape = {
      ...SHAPE,
      experts: 64,
      lookahead: 0,
      requests: false,
      arrivalSteps: false,
    };
    const table = shardTable(docs(shape, 60, 50, 2), shape);
    const bytes = write(table);
    const fast = fastParquetToTable(bytes);
    assert.ok(fast);
    assertSameTable(fast, parquetWasmToTable(bytes));
    assertSameTable(fast, table);
  });
}

Deno.test("files outside the fast path's subset fall back to parquet-wasm and read the same", async (t) => {
  const table = shardTable(docs(SHAPE, 12, 30, 3), SHAPE);
  const stream = arrow.tableToIPC(table, "stream");
  const write = (
    settings: (b: parquet.WriterPropertiesBuilder) => parquet.WriterPropertiesBuilder,
  ) =>
    parquet.writeParquet(
      parquet.Table.fromIPCStream(stream),
      settings(new parquet.WriterPropertiesBuilder()).build(),
    );
  const cases: [string, Uint8Array, boolean][] = [
    ["version 1 pages", write((b) => b.setWriterVersion(parquet.WriterVersion.V1)), false],
    [
      "snappy",
      write((b) =>
        b.setWriterVersion(parquet.WriterVersion.V2).setCompression(parquet.Compression.SNAPPY)
      ),
      false,
    ],
    [
      "several row groups",
      write((b) =>
        b.setWriterVersion(parquet.WriterVersion.V2).setCompression(parquet.Compression.ZSTD)
          .setMaxRowGroupSize(100)
      ),
      false,
    ],
    [
      "no compression, several row groups, no dictionaries",
      write((b) =>
        b.setWriterVersion(parquet.WriterVersion.V2).setDictionaryEnabled(false)
          .setMaxRowGroupSize(100)
      ),
      false,
    ],
  ];
  for (const [name, bytes, fastExpected] of cases) {
    await t.step(name, () => {
      const fast = fastParquetToTable(bytes);
      assert.equal(fast !== null, fastExpected, `fast path ${fast ? "took" : "refused"} it`);
      assertSameTable(parquetToTable(bytes), parquetWasmToTable(bytes));
      assertSameTable(parquetToTable(bytes), table);
    });
  }
  await t.step("flat columns across several row groups decode on the fast path", () => {
    const numbers = new arrow.Table({
      doc: arrow.vectorFromArray(Array.from({ length: 500 }, (_, i) => i >> 3), new arrow.Uint32()),
      phase: arrow.vectorFromArray(Array.from({ length: 500 }, (_, i) => i % 2), new arrow.Uint8()),
    });
    const bytes = parquet.writeParquet(
      parquet.Table.fromIPCStream(arrow.tableToIPC(numbers, "stream")),
      new parquet.WriterPropertiesBuilder().setWriterVersion(parquet.WriterVersion.V2)
        .setCompression(parquet.Compression.ZSTD).setDictionaryEnabled(false)
        .setMaxRowGroupSize(64).build(),
    );
    const fast = fastParquetToTable(bytes);
    assert.ok(fast);
    assertSameTable(fast, parquetWasmToTable(bytes));
  });
  await t.step("a column with nulls", () => {
    const nullable = new arrow.Table({
      doc: arrow.vectorFromArray([1, null, 3], new arrow.Uint32()),
    });
    const bytes = tableToParquet(nullable);
    assert.equal(fastParquetToTable(bytes), null);
    assert.deepEqual([...parquetToTable(bytes).getChild("doc")!], [1, null, 3]);
  });
});

for (const [writer, write] of WRITERS) {
  Deno.test(`damaged bytes are refused by the fast path or decoded as parquet-wasm decodes them (${writer})`, () => {
    const table = shardTable(docs(SHAPE, 8, 20, 4), SHAPE);
    const bytes = write(table);
    const rng = new Rng(9);
    for (let trial = 0; trial < 150; trial++) {
      const damaged = bytes.slice();
      const at = rng.int(damaged.length);
      damaged[at] = damaged[at]! ^ (1 + rng.int(255));
      let fast: arrow.Table | null;
      try {
        fast = fastParquetToTable(damaged);
      } catch (error) {
        assert.fail(`the fast path threw on a flipped byte at ${at}: ${error}`);
      }
      if (fast === null) continue;
      let reference: arrow.Table;
      try {
        reference = parquetWasmToTable(damaged);
      } catch {
        // parquet-wasm refuses a file the fast path read: only where the damage
        // is in a part the fast path does not read (a checksum, statistics).
        continue;
      }
      assertSameTable(fast, reference);
    }
  });
}
