/**
 * Bounded work on stranger input: line and document limits, a Zstandard bomb
 * stopped early, symlinks in corpus folders, tokenizing only what
 * --max-tokens needs, a tokenizer regex that backtracks stopped by its time
 * limit, list-form chat templates and merges the vocabulary lacks.
 */
import assert from "node:assert/strict";
import { DataError } from "../common/errors.ts";
import { MAX_DOCUMENT_CHARS, readLines } from "../common/lines.ts";
import { Rng } from "../common/random.ts";
import { type CorpusDoc, readCorpus } from "../corpus/corpus.ts";
import { BoundedEncoder, encodePrefix, TextTokenizer } from "../engine/tokenizer.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const TOKENIZER_DIR = `${ROOT}fixtures/models/tiny-moe`;

/** `text` as a stream of UTF-8 chunks cut at the given byte offsets. */
function chunked(bytes: Uint8Array, cuts: number[]): ReadableStream<Uint8Array> {
  const points = [0, ...cuts.filter((c) => c > 0 && c < bytes.length).sort((a, b) => a - b)];
  points.push(bytes.length);
  let i = 0;
  return new ReadableStream({
    pull(controller) {
      if (i + 1 >= points.length) return controller.close();
      controller.enqueue(bytes.slice(points[i]!, points[i + 1]!));
      i++;
    },
  });
}

async function lines(stream: ReadableStream<Uint8Array>, max?: number): Promise<string[]> {
  const out: string[] = [];
  for await (const { line, number } of readLines("x.jsonl", stream, max)) {
    assert.equal(number, out.length + 1);
    out.push(line);
  }
  return out;
}

Deno.test("readLines gives the lines of any chunking, and refuses a line over its limit in one sentence", async () => {
  const rng = new Rng(5);
  const alphabet = ["a", "é", "\n", "\r\n", "日", "😀", " ", "\n\n"];
  for (let trial = 0; trial < 200; trial++) {
    let text = "";
    for (let i = rng.int(60); i > 0; i--) text += alphabet[rng.int(alphabet.length)]!;
    const bytes = new TextEncoder().encode(text);
    const cuts = Array.from({ length: rng.int(6) }, () => rng.int(bytes.length + 1));
    // Reference: split on \n, strip one \r before it, drop the empty piece after a final \n.
    const expected = text.split("\n").map((l) => l.endsWith("\r") ? l.slice(0, -1) : l);
    if (expected.at(-1) === "") expected.pop();
    assert.deepEqual(await lines(chunked(bytes, cuts)), expected, JSON.stringify(text));
  }
  // A line longer than the limit, however it is chunked, names its line number.
  const long = new TextEncoder().encode(`short\n${"x".repeat(100)}\nafter\n`);
  for (const cuts of [[], [10, 20, 30], [6, 50, 106]]) {
    await assert.rejects(
      lines(chunked(long, cuts), 64),
      (e: Error) =>
        e instanceof DataError &&
        e.message ===
          "x.jsonl line 2 is longer than 64 characters, the limit for one line (one document).",
    );
  }
  assert.deepEqual(await lines(chunked(long, [3]), 100), ["short", "x".repeat(100), "after"]);
});

/** A Zstandard frame of `blocks` RLE blocks, each 128 KiB of `byte`: 4 bytes a block. */
function zstdBomb(byte: number, blocks: number): Uint8Array {
  const out = new Uint8Array(6 + blocks * 4);
  out.set([0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3]); // magic; no checksum or size; window 2^17
  const size = 128 * 1024;
  for (let b = 0; b < blocks; b++) {
    const last = b === blocks - 1 ? 1 : 0;
    const header = (size << 3) | (1 << 1) | last; // RLE block
    out.set([header & 0xff, (header >> 8) & 0xff, (header >> 16) & 0xff, byte], 6 + b * 4);
  }
  return out;
}

async function corpusError(path: string): Promise<string> {
  try {
    for await (const _ of readCorpus(path)) { /* read it all */ }
  } catch (error) {
    assert.ok(error instanceof DataError, String(error));
    return error.message;
  }
  throw new Error(`${path} was read without an error`);
}

Deno.test("a .zst bomb stops after the limit with one sentence", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-zst-" });
  // 32 KiB that would become 1 GiB of newlines (blank lines, so no line limit applies).
  await Deno.writeFile(`${dir}/bomb.jsonl.zst`, zstdBomb(0x0a, 8192));
  assert.match(
    await corpusError(`${dir}/bomb.jsonl.zst`),
    /bomb\.jsonl\.zst expands more than 1000-fold \(32,774 compressed bytes became over [\d,]+\); it looks like a decompression bomb/,
  );
  // Zeros (10 GB, as in the issue): one endless line; the expansion stops it first.
  await Deno.writeFile(`${dir}/zeros.jsonl.zst`, zstdBomb(0x00, 80_000));
  assert.match(await corpusError(`${dir}/zeros.jsonl.zst`), /expands more than 1000-fold/);
  // A frame of real text (one raw block) still reads.
  const doc = new TextEncoder().encode('{"text": "hi", "meta": {"pile_set_name": "A"}}\n');
  const raw = (doc.length << 3) | 1; // the last block, raw
  const frame = new Uint8Array([
    ...zstdBomb(0x20, 1).subarray(0, 6),
    raw & 0xff,
    (raw >> 8) & 0xff,
    (raw >> 16) & 0xff,
    ...doc,
  ]);
  await Deno.writeFile(`${dir}/ok.jsonl.zst`, frame);
  const docs: CorpusDoc[] = [];
  for await (const d of readCorpus(`${dir}/ok.jsonl.zst`)) docs.push(d);
  assert.deepEqual(docs, [{ id: 0, domain: "A", text: "hi" }]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("corpus folders: a file over the document limit is refused unread; links may not leave", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-corpusdir-" });
  await Deno.mkdir(`${dir}/c/A`, { recursive: true });
  await Deno.writeTextFile(`${dir}/c/A/1.txt`, "one");
  await Deno.writeTextFile(`${dir}/secret.txt`, "outside");
  // A sparse file of 4 × the limit + 1 bytes: refused by its size, nothing read.
  const big = await Deno.open(`${dir}/c/A/2.txt`, { create: true, write: true });
  await big.truncate(4 * MAX_DOCUMENT_CHARS + 1);
  big.close();
  assert.equal(
    await corpusError(`${dir}/c`),
    `${dir}/c/A/2.txt is larger than 67,108,864 characters, the limit for one document.`,
  );
  await Deno.remove(`${dir}/c/A/2.txt`);
  await Deno.symlink(`${dir}/secret.txt`, `${dir}/c/A/2.txt`);
  assert.match(
    await corpusError(`${dir}/c`),
    /^.*c\/A\/2\.txt in the corpus is a symbolic link \(or lies under one\) that leaves/,
  );
  await Deno.remove(`${dir}/c/A/2.txt`);
  // Links inside the folder are followed: a domain folder and a file.
  await Deno.symlink(`${dir}/c/A`, `${dir}/c/B`);
  await Deno.symlink(`${dir}/c/A/1.txt`, `${dir}/c/A/3.txt`);
  const docs: CorpusDoc[] = [];
  for await (const d of readCorpus(`${dir}/c`)) docs.push(d);
  assert.deepEqual(docs.map((d) => [d.domain, d.text]), [
    ["A", "one"],
    ["A", "one"],
    ["B", "one"],
    ["B", "one"],
  ]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("capture tokenizes only the prefix --max-tokens needs, with the ids of the whole text", async () => {
  const tokenizer = await TextTokenizer.load(TOKENIZER_DIR);
  const rng = new Rng(11);
  const words = ["the", " router", " sends", "\n", " 12", " tokens", ",", " éclair", "  ", "日本"];
  for (let trial = 0; trial < 30; trial++) {
    let text = "";
    for (let i = 200 + rng.int(4000); i > 0; i--) text += words[rng.int(words.length)]!;
    const maxTokens = 1 + rng.int(300);
    let longest = 0;
    const ids = await encodePrefix(
      (t) => {
        longest = Math.max(longest, t.length);
        return tokenizer.encode(t);
      },
      text,
      maxTokens,
    );
    assert.deepEqual(Array.from(ids), Array.from(tokenizer.encode(text).subarray(0, maxTokens)));
    if (text.length > 2 * Math.max(1024, maxTokens * 8)) {
      assert.ok(longest < text.length, `encoded ${longest} of ${text.length} characters`);
    }
  }
  // A 10 MB document cut to 16 tokens: the tokenizer sees at most 2 KiB of it.
  let longest = 0;
  await encodePrefix(
    (t) => {
      longest = Math.max(longest, t.length);
      return tokenizer.encode(t);
    },
    "word ".repeat(2_000_000),
    16,
  );
  assert.equal(longest, 2048);
});

Deno.test("a list-form chat_template uses its default; a merge the vocabulary lacks is refused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-tok-" });
  await Deno.copyFile(`${TOKENIZER_DIR}/tokenizer.json`, `${dir}/tokenizer.json`);
  const template = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}";
  await Deno.writeTextFile(
    `${dir}/tokenizer_config.json`,
    JSON.stringify({
      chat_template: [{ name: "tool_use", template: "TOOLS" }, { name: "default", template }],
    }),
  );
  const tokenizer = await TextTokenizer.load(dir);
  assert.equal(tokenizer.hasChatTemplate, true);
  const ids = await tokenizer.encodeChat([{ role: "user", content: "hi" }]);
  assert.deepEqual(Array.from(ids), Array.from(tokenizer.encode("[user] hi\n", false)));
  await Deno.writeTextFile(
    `${dir}/tokenizer_config.json`,
    JSON.stringify({ chat_template: [{ name: "tool_use", template: "TOOLS" }] }),
  );
  const noDefault = await TextTokenizer.load(dir);
  assert.equal(noDefault.hasChatTemplate, false);
  await assert.rejects(
    noDefault.encodeChat([{ role: "user", content: "hi" }]),
    /lists chat templates without one named "default"/,
  );

  const json = JSON.parse(await Deno.readTextFile(`${TOKENIZER_DIR}/tokenizer.json`));
  const merge = json.model.merges[5];
  const [a, b] = typeof merge === "string" ? merge.split(" ") : merge;
  delete json.model.vocab[a + b];
  await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(json));
  await assert.rejects(
    TextTokenizer.load(dir),
    (e: Error) =>
      e instanceof DataError &&
      e.message ===
        `${dir}/tokenizer.json field "model.merges[5]" (${JSON.stringify(merge)}) needs ${
          JSON.stringify(a + b)
        }, which is not in "model.vocab".`,
  );
  await Deno.remove(dir, { recursive: true });
});

// Last in this file: Deno cannot interrupt the stopped worker, whose thread spins until the
// test process exits (the CLI exits on the error at once).
Deno.test("a tokenizer whose regex backtracks without end is stopped by its time limit", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-regex-" });
  const json = JSON.parse(await Deno.readTextFile(`${TOKENIZER_DIR}/tokenizer.json`));
  json.pre_tokenizer = {
    type: "Sequence",
    pretokenizers: [
      { type: "Split", pattern: { Regex: "(a+)+b" }, behavior: "Isolated", invert: false },
      json.pre_tokenizer,
    ],
  };
  await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(json));
  const encoder = await BoundedEncoder.start(dir, 1000);
  try {
    // Text the regex handles at once encodes as the plain tokenizer does.
    const plain = await TextTokenizer.load(dir);
    assert.deepEqual(await encoder.encode("an ab"), plain.encode("an ab"));
    await assert.rejects(
      encoder.encode("a".repeat(40) + "c"),
      (e: Error) =>
        e instanceof DataError &&
        e.message ===
          `${dir}/tokenizer.json did not encode 41 characters within 1 s; its pre-tokenizer or normalizer may backtrack without end (a regex in it), so it was stopped.`,
    );
  } finally {
    encoder.close();
    await Deno.remove(dir, { recursive: true });
  }
});
