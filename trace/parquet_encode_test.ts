/**
 * moetrace's Parquet encoder against independent readers: parquet-wasm
 * (arrow-rs) and DuckDB read back every column kind exactly, including the
 * cases a shard rarely has (a dictionary of one value, ids with gaps and the
 * no-expert marker, lists of width 1, strings in any script, columns over
 * many pages); the bit packing matches the Parquet specification's own
 * example; tables outside the encoder's subset are written by parquet-wasm.
 */
import * as assert from "node:assert/strict";
import * as arrow from "apache-arrow";
import { DuckDBInstance } from "@duckdb/node-api";
import { encodeShardParquet, PAGE_VALUES } from "./parquet_encode.ts";
import { bitPack } from "./parquet_runs.ts";
import { type ColumnPlan, encodeColumns, joinParts } from "./parquet_columns.ts";
import { fastParquetToTable } from "./parquet_decode.ts";
import { parquetToTable, parquetWasmToTable, tableToParquet } from "./parquet.ts";
import { Rng } from "../common/random.ts";

Deno.test("bit packing gives the bytes of the Parquet specification's example", () => {
  // Encodings.md, "Bit-packed": 0..7 at bit width 3 are 10001000 11000110 11111010.
  const out = new Uint8Array(8);
  const end = bitPack(out, 0, Uint16Array.from([0, 1, 2, 3, 4, 5, 6, 7]), 0, 8, 3);
  // Run header varint((1 group << 1) | 1) = 3, then the three bytes.
  assert.deepEqual([...out.subarray(0, end)], [0x03, 0b10001000, 0b11000110, 0b11111010]);
  // 9 values at width 4: two groups, the second padded with seven zero values.
  const wide = new Uint8Array(16);
  const wideEnd = bitPack(wide, 0, Uint16Array.from([1, 2, 3, 4, 5, 6, 7, 8, 15]), 0, 9, 4);
  // Header 2 groups → 5; pairs low nibble first: 0x21 0x43 0x65 0x87, then 15 and seven zeros.
  assert.deepEqual([...wide.subarray(0, wideEnd)], [5, 0x21, 0x43, 0x65, 0x87, 0x0f, 0, 0, 0]);
});

/** A table with every column kind, `rows` rows, lists of `width`, values from `rng`. */
function table(rows: number, width: number, seed: number): arrow.Table {
  const rng = new Rng(seed);
  const list = (values: Uint16Array | Float32Array, type: arrow.DataType, w: number) =>
    arrow.makeData({
      type: new arrow.FixedSizeList(w, new arrow.Field("item", type, false)),
      length: rows,
      nullCount: 0,
      child: arrow.makeData({ type, length: values.length, data: values } as never),
    });
  // Expert ids with gaps and the no-expert marker: a dictionary that is not 0..n−1.
  const ids = Uint16Array.from(
    { length: rows * width },
    (_, i) => i % 11 === 0 ? 65535 : 3 * rng.int(40),
  );
  const weights = Float32Array.from({ length: rows * width }, () => rng.next());
  // Up to 999: a dictionary past 256 entries, indices 16 bits wide.
  const single = Uint16Array.from({ length: rows }, () => rng.int(1000));
  const pieces = ["", "é→", "token", "日本語", "🙂"];
  const columns = {
    doc: arrow.makeData({
      type: new arrow.Uint32(),
      length: rows,
      data: Uint32Array.from({ length: rows }, (_, i) => 4_000_000_000 - (i >> 4)),
    }),
    delta: arrow.makeData({
      type: new arrow.Int32(),
      length: rows,
      data: Int32Array.from({ length: rows }, (_, i) => (i % 2 ? -1 : 1) * rng.int(1 << 30)),
    }),
    phase: arrow.makeData({ type: new arrow.Uint8(), length: rows, data: new Uint8Array(rows) }),
    piece: arrow.makeVector(
      arrow.vectorFromArray(Array.from({ length: rows }, (_, i) => pieces[i % 5]!)).data[0]!,
    ).data[0]!,
    experts: list(ids, new arrow.Uint16(), width),
    weights: list(weights, new arrow.Float32(), width),
    single: list(single, new arrow.Uint16(), 1),
  };
  const fields = Object.entries(columns).map(([name, data]) =>
    new arrow.Field(name, data.type, false)
  );
  const struct = arrow.makeData({
    type: new arrow.Struct(fields),
    length: rows,
    nullCount: 0,
    children: Object.values(columns),
  });
  const schema = new arrow.Schema(fields, new Map([["moetrace:trace_id", "test"]]));
  return new arrow.Table([new arrow.RecordBatch(schema, struct)]);
}

/** Every value of every column, list values flattened, as plain numbers and strings. */
function values(t: arrow.Table): Record<string, unknown[]> {
  const out: Record<string, unknown[]> = {};
  for (const field of t.schema.fields) {
    const column = t.getChild(field.name)!;
    out[field.name] = arrow.DataType.isFixedSizeList(field.type)
      ? column.data.flatMap((d) => Array.from(d.children[0]!.values as ArrayLike<number>))
      : [...column].map((v) => typeof v === "bigint" ? Number(v) : v);
  }
  return out;
}

Deno.test("parquet-wasm and the fast path read back every column kind exactly", () => {
  // 3,001 rows × 200 values: 600,200 values per list column, three data pages
  // each; 3,001 single values end in a partial group of 8.
  const rows = 3001;
  const width = 200;
  assert.ok(rows * width > 2 * PAGE_VALUES);
  const original = table(rows, width, 1);
  const bytes = encodeShardParquet(original);
  assert.ok(bytes, "the encoder refused a table of the column kinds it writes");
  const reference = parquetWasmToTable(bytes);
  assert.deepEqual(values(reference), values(original));
  assert.deepEqual(
    reference.schema.fields.map((f) => `${f.name}: ${f.type}`),
    original.schema.fields.map((f) => `${f.name}: ${f.type}`),
  );
  assert.equal(reference.schema.metadata.get("moetrace:trace_id"), "test");
  const fast = fastParquetToTable(bytes);
  assert.ok(fast, "the fast path refused a file the encoder wrote");
  assert.deepEqual(values(fast), values(original));
  // PLAIN columns in one page are views of the file's bytes; split into
  // pages (a column past PLAIN_PAGE_BYTES) they are copied, and equal.
  const weights = (t: arrow.Table) => t.getChild("weights")!.data[0]!.children[0]!.values;
  assert.equal(weights(fast).buffer, bytes.buffer);
  const split = encodeShardParquet(original, { plainPageBytes: 100_000 })!;
  assert.deepEqual(values(parquetWasmToTable(split)), values(original));
  const fastSplit = fastParquetToTable(split)!;
  assert.notEqual(weights(fastSplit).buffer, split.buffer);
  assert.deepEqual(values(fastSplit), values(original));
});

Deno.test("DuckDB reads the encoder's files: values, list lengths and doc statistics", async () => {
  const rows = 700;
  const width = 48;
  const original = table(rows, width, 2);
  const dir = await Deno.makeTempDir({ prefix: "moetrace-encode-" });
  const instance = await DuckDBInstance.create(":memory:");
  const connection = await instance.connect();
  try {
    const file = `${dir}/part.parquet`;
    await Deno.writeFile(file, encodeShardParquet(original)!);
    const read = async (sql: string) => (await connection.runAndReadAll(sql)).getRows();
    const rowsBack = await read(
      `SELECT doc, delta, phase, piece, experts, weights, single FROM read_parquet('${file}')`,
    );
    const expected = values(original);
    assert.equal(rowsBack.length, rows);
    rowsBack.forEach((row, r) => {
      assert.equal(Number(row[0]), expected.doc![r]);
      assert.equal(Number(row[1]), expected.delta![r]);
      assert.equal(Number(row[2]), 0);
      assert.equal(row[3], expected.piece![r]);
      const list = (cell: unknown) => (cell as { items: unknown[] }).items.map(Number);
      assert.deepEqual(list(row[4]), expected.experts!.slice(r * width, (r + 1) * width));
      assert.deepEqual(list(row[5]), expected.weights!.slice(r * width, (r + 1) * width));
      assert.deepEqual(list(row[6]), [expected.single![r]]);
    });
    // Statistics of the flat integer columns, as engines use them to skip files.
    const stats = await read(
      `SELECT path_in_schema, stats_min_value, stats_max_value FROM parquet_metadata('${file}') WHERE path_in_schema = 'doc'`,
    );
    const docs = expected.doc as number[];
    assert.deepEqual(stats.map((s) => s.map(String)), [[
      "doc",
      String(Math.min(...docs)),
      String(Math.max(...docs)),
    ]]);
  } finally {
    connection.closeSync();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tables outside the encoder's subset are written by parquet-wasm and read the same", () => {
  const cases: [string, arrow.Table][] = [
    ["nulls", new arrow.Table({ doc: arrow.vectorFromArray([1, null, 3], new arrow.Uint32()) })],
    ["an i64 column", new arrow.Table({ n: arrow.vectorFromArray([1n, 2n], new arrow.Int64()) })],
    [
      "two record batches",
      new arrow.Table([
        ...new arrow.Table({ doc: arrow.vectorFromArray([1, 2], new arrow.Uint32()) }).batches,
        ...new arrow.Table({ doc: arrow.vectorFromArray([3], new arrow.Uint32()) }).batches,
      ]),
    ],
  ];
  for (const [name, t] of cases) {
    assert.equal(encodeShardParquet(t), null, name);
    const back = parquetToTable(tableToParquet(t));
    assert.deepEqual(values(back), values(t), name);
  }
});

Deno.test("a dictionary of more than 65,536 strings is written by the encoder (17-bit indices)", async () => {
  const rows = 70_001;
  const pieces = arrow.vectorFromArray(
    Array.from({ length: rows }, (_, i) => `p${(i * 7919) % rows}`),
    new arrow.Dictionary(new arrow.Utf8(), new arrow.Int32()),
  );
  const field = new arrow.Field("piece", pieces.type, false);
  const struct = arrow.makeData({
    type: new arrow.Struct([field]),
    length: rows,
    nullCount: 0,
    children: [pieces.data[0]!],
  });
  const original = new arrow.Table([new arrow.RecordBatch(new arrow.Schema([field]), struct)]);
  const bytes = encodeShardParquet(original);
  assert.ok(bytes, "the encoder refused a large dictionary");
  const expected = values(original).piece;
  assert.deepEqual(values(parquetWasmToTable(bytes)).piece, expected);
  assert.deepEqual(values(fastParquetToTable(bytes)!).piece, expected);
  const dir = await Deno.makeTempDir({ prefix: "moetrace-encode-" });
  const instance = await DuckDBInstance.create(":memory:");
  const connection = await instance.connect();
  try {
    await Deno.writeFile(`${dir}/part.parquet`, bytes);
    const back = (await connection.runAndReadAll(
      `SELECT piece FROM read_parquet('${dir}/part.parquet')`,
    )).getRows().map((r) => r[0]);
    assert.deepEqual(back, expected);
  } finally {
    connection.closeSync();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a u16 list column given as bytes gives the same file, its pages views of those bytes", () => {
  const rows = 5000;
  const width = 12; // 60,000 values: one page, a last group of 8 that is whole
  const rng = new Rng(3);
  const wide = Uint16Array.from({ length: rows * width + 4 }, () => rng.int(64)).subarray(4);
  const bytes = Uint8Array.from(wide);
  const plan = (values: Uint8Array | Uint16Array): ColumnPlan => ({
    name: "experts",
    list: { item: "item", width },
    int: { bits: 16, signed: false },
    column: { kind: "small-int", values },
  });
  const fromWide = encodeColumns([plan(wide)], rows, "");
  const fromBytes = encodeColumns([plan(bytes)], rows, "");
  assert.deepEqual(joinParts(fromBytes), joinParts(fromWide));
  assert.ok(fromBytes.some((part) => part.buffer === bytes.buffer), "the ids were copied");
  // An odd count of values: the last group of 8 is padded with zeros after the view.
  const flat = (values: Uint8Array | Uint16Array): ColumnPlan => ({
    name: "phase",
    int: { bits: 16, signed: false },
    column: { kind: "small-int", values },
  });
  const odd = encodeColumns([flat(bytes.subarray(0, 14997))], 14997, "");
  const oddWide = encodeColumns([flat(wide.subarray(0, 14997))], 14997, "");
  assert.deepEqual(joinParts(odd), joinParts(oddWide));
});
