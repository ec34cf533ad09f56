import assert from "node:assert/strict";
import { readPickle } from "./pickle.ts";

/** Pickle bytes from opcodes: strings are Latin-1 text, numbers single bytes. */
function bytes(...parts: (string | number | Uint8Array)[]): Uint8Array {
  const out: number[] = [];
  for (const part of parts) {
    if (typeof part === "number") out.push(part);
    else if (typeof part === "string") { for (const c of part) out.push(c.charCodeAt(0)); }
    else out.push(...part);
  }
  return Uint8Array.from(out);
}

/** BINUNICODE of an ASCII string. */
const str = (s: string) => bytes("X", s.length, 0, 0, 0, s);

Deno.test("plain values come back as numbers, strings, arrays and Maps", () => {
  // {"a": [1, 300, -5, 2**40, 2**70, 1.5, None, True], "__proto__": (False,)}
  const pickle = bytes(
    0x80,
    2,
    "}",
    "(",
    str("a"),
    "]",
    "(",
    "K",
    1,
    "M",
    0x2c,
    0x01,
    "J",
    0xfb,
    0xff,
    0xff,
    0xff,
    0x8a,
    6,
    0,
    0,
    0,
    0,
    0,
    1, // LONG1 2**40
    0x8a,
    9,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0x40, // LONG1 2**70
    "G",
    0x3f,
    0xf8,
    0,
    0,
    0,
    0,
    0,
    0, // BINFLOAT 1.5
    "N",
    0x88,
    "e",
    str("__proto__"),
    0x89,
    0x85,
    "u",
    ".",
  );
  const value = readPickle(pickle, "t.pkl");
  assert.ok(value instanceof Map);
  assert.deepEqual(value.get("a"), [1, 300, -5, 2 ** 40, 2n ** 70n, 1.5, null, true]);
  assert.deepEqual(value.get("__proto__"), [false]);
  assert.equal(Object.getPrototypeOf(value), Map.prototype);
});

Deno.test("memo references share one value", () => {
  // [x, x] with x = [7]: BINPUT then BINGET
  const pickle = bytes(0x80, 2, "]", "(", "]", "K", 7, "a", "q", 0, "h", 0, "e", ".");
  assert.deepEqual(readPickle(pickle, "t.pkl"), [[7], [7]]);
});

Deno.test("int lists pickled by Python come back as Int32Arrays where their end is certain, else as arrays", () => {
  const FIXTURES = new URL("../../fixtures/import/", import.meta.url).pathname;
  const truth = JSON.parse(Deno.readTextFileSync(`${FIXTURES}pickle_int_lists.json`));
  for (const protocol of [2, 4]) {
    const file = `pickle_int_lists_p${protocol}.pkl`;
    const value = readPickle(Deno.readFileSync(`${FIXTURES}${file}`), file) as Map<string, unknown>;
    // Int32Arrays compared as arrays: the values must equal Python's, whatever the type.
    const plain = (v: unknown): unknown =>
      v instanceof Int32Array ? Array.from(v) : Array.isArray(v) ? v.map(plain) : v;
    for (const key of Object.keys(truth)) {
      const got = plain(value.get(key));
      const expected = key === "big" ? [1, 2 ** 40] : truth[key];
      assert.deepEqual(got, expected, `${file} ${key}`);
    }
    // 2,500 ints in three batches, the last short: one Int32Array.
    assert.ok(value.get("long") instanceof Int32Array, `${file} long`);
    assert.ok(value.get("extremes") instanceof Int32Array, `${file} extremes`);
    // Two full batches (more could follow), a batch with a string, one item, a long int:
    // read op by op.
    for (const key of ["exact", "mixed", "one", "big"]) {
      assert.ok(Array.isArray(value.get(key)), `${file} ${key}`);
    }
    // A list followed by a MARK that opens a tuple: read op by op, and the tuple intact.
    const [list, tuple] = value.get("then_tuple") as unknown[];
    assert.ok(Array.isArray(list), `${file} then_tuple`);
    assert.deepEqual(tuple, [4, 5, 6, 7]);
    // The memo gives back the one Int32Array.
    const [a, b] = value.get("shared") as unknown[];
    assert.ok(a instanceof Int32Array && a === b, `${file} shared`);
  }
});

Deno.test("anything that would build or call an arbitrary object is refused with one sentence", () => {
  const cases: [Uint8Array, RegExp][] = [
    [
      bytes(0x80, 2, "c", "builtins\neval\n", str("1"), 0x85, "R", "."),
      /^t\.pkl asks for the Python global builtins\.eval; moetrace reads only tensors, dicts, lists, numbers and strings from a \.pt file and never runs code from it\.$/,
    ],
    [
      bytes(0x80, 4, str("os"), str("system"), 0x93, "."),
      /asks for the Python global os\.system;/,
    ],
    [
      bytes(0x80, 2, "}", "}", "b", "."),
      /^t\.pkl uses the pickle opcode BUILD at byte 4, which builds arbitrary objects; /,
    ],
    [
      bytes(0x80, 2, "c", "torch\nIntStorage\n", ")", 0x81, "."),
      /uses the pickle opcode NEWOBJ at byte \d+/,
    ],
    [
      bytes(0x80, 2, "I", "1\n", "."),
      /has byte 0x49 at 2, which is not a pickle opcode this reader takes/,
    ],
    [
      bytes(0x80, 2, "]", "K"),
      /^t\.pkl ends in the middle of its pickle \(byte 4\); the file is truncated\.$/,
    ],
    [bytes(0x80, 2, "]", "]"), /ends in the middle of its pickle/],
    [bytes(0x80, 2, "h", 3, "."), /refers to memo entry 3, which was never stored/],
  ];
  for (const [pickle, pattern] of cases) {
    assert.throws(() => readPickle(pickle, "t.pkl"), (e: Error) => {
      assert.equal(e.name, "DataError");
      assert.match(e.message, pattern);
      return true;
    });
  }
});

Deno.test("a tensor is read as a reference to its storage, with offset, shape and stride", () => {
  // torch._utils._rebuild_tensor_v2(("storage", torch.IntStorage, "4", "cpu", 24), 2, (2, 3), (6, 1), False, OrderedDict())
  const pickle = bytes(
    0x80,
    2,
    "c",
    "torch._utils\n_rebuild_tensor_v2\n",
    "(",
    "(",
    str("storage"),
    "c",
    "torch\nIntStorage\n",
    str("4"),
    str("cpu"),
    "K",
    24,
    "t",
    "Q",
    "K",
    2,
    "K",
    2,
    "K",
    3,
    0x86,
    "K",
    6,
    "K",
    1,
    0x86,
    0x89,
    "c",
    "collections\nOrderedDict\n",
    ")",
    "R",
    "t",
    "R",
    ".",
  );
  assert.deepEqual(readPickle(pickle, "t.pkl"), {
    kind: "tensor",
    dtype: "int32",
    storageKey: "4",
    storageNumel: 24,
    offset: 2,
    shape: [2, 3],
    stride: [6, 1],
  });
  // The storage type on its own is no value: a list holding it is refused.
  assert.throws(
    () => readPickle(bytes(0x80, 2, "]", "c", "torch\nIntStorage\n", "a", "."), "t.pkl"),
    /uses a global \(storage_type\) as a list item/,
  );
});

Deno.test("thousands of short strings and int lists each come back as written", () => {
  // ["k0", ..., "k4999", "é0", ...] then 3000 int lists of 1..40 ints: the
  // strings outnumber the reader's table of short strings (same-length ones
  // share its slots), and the lists its chunks of ints.
  const utf8 = new TextEncoder();
  const strings = Array.from({ length: 5000 }, (_, i) => (i % 7 === 0 ? `é${i}` : `k${i}`));
  const lists = Array.from(
    { length: 3000 },
    (_, i) => Array.from({ length: 2 + (i % 39) }, (_, j) => (i * 7919 + j * 104729) % 70000 - 300),
  );
  const out: number[] = [0x80, 2, 0x5d, 0x28]; // PROTO 2, EMPTY_LIST, MARK
  for (const s of strings) {
    const b = utf8.encode(s);
    out.push(0x8c, b.length); // SHORT_BINUNICODE
    for (const c of b) out.push(c);
  }
  for (const list of lists) {
    out.push(0x5d, 0x28);
    for (const v of list) {
      if (v >= 0 && v < 256) out.push(0x4b, v); // BININT1
      else if (v >= 0 && v < 65536) out.push(0x4d, v & 0xff, v >> 8); // BININT2
      else out.push(0x4a, v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, (v >>> 24) & 0xff);
    }
    out.push(0x65); // APPENDS
  }
  out.push(0x65, 0x2e); // APPENDS, STOP
  const value = readPickle(Uint8Array.from(out), "test.pkl") as unknown[];
  assert.deepEqual(value.slice(0, strings.length), strings);
  assert.deepEqual(value.slice(strings.length).map((l) => Array.from(l as Int32Array)), lists);
});
