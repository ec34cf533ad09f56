import assert from "node:assert/strict";
import { type CorpusDoc, readCorpus } from "./corpus.ts";
import { DataError } from "../common/errors.ts";

const DATA = new URL("../tests/data/", import.meta.url).pathname;

async function collect(path: string, options = {}): Promise<CorpusDoc[]> {
  const docs: CorpusDoc[] = [];
  for await (const d of readCorpus(path, options)) docs.push(d);
  return docs;
}

Deno.test("Pile JSONL and its Zstandard form read the same documents with stable ids", async () => {
  const plain = await collect(`${DATA}mini-pile.jsonl`);
  assert.deepEqual(plain.map((d) => [d.id, d.domain]), [
    [0, "ArXiv"],
    [1, "Github"],
    [2, "ArXiv"],
    [3, "EuroParl"],
    [4, "Github"],
    [5, "ArXiv"],
  ]);
  assert.equal(plain[1]!.text, "def f(x):\n    return x");
  assert.deepEqual(await collect(`${DATA}mini-pile.jsonl.zst`), plain);
});

Deno.test("domain filter and a seeded per-domain sample keep corpus ids and order", async () => {
  const path = `${DATA}mini-pile.jsonl`;
  const filtered = await collect(path, { domains: ["Github", "EuroParl"] });
  assert.deepEqual(filtered.map((d) => d.id), [1, 3, 4]);
  const sample = await collect(path, { docsPerDomain: 1, seed: 5 });
  assert.equal(sample.length, 3, "one per domain");
  assert.deepEqual(new Set(sample.map((d) => d.domain)), new Set(["ArXiv", "Github", "EuroParl"]));
  assert.ok(sample.every((d, i) => i === 0 || d.id > sample[i - 1]!.id), "corpus order");
  assert.deepEqual(
    await collect(path, { docsPerDomain: 1, seed: 5 }),
    sample,
    "same seed, same sample",
  );
  // Each ArXiv document is picked by some seed: the sample is not a prefix.
  const picked = new Set<number>();
  for (let seed = 0; seed < 40; seed++) {
    picked.add((await collect(path, { docsPerDomain: 1, seed, domains: ["ArXiv"] }))[0]!.id);
  }
  assert.deepEqual([...picked].sort(), [0, 2, 5]);
});

Deno.test("a folder corpus takes domains from sub-folders", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.mkdir(`${dir}/Wikipedia`);
  await Deno.mkdir(`${dir}/Github`);
  await Deno.writeTextFile(`${dir}/Wikipedia/b.txt`, "Second article.");
  await Deno.writeTextFile(`${dir}/Wikipedia/a.txt`, "First article.");
  await Deno.writeTextFile(`${dir}/Github/x.py`, "print(1)");
  const docs = await collect(dir);
  assert.deepEqual(docs, [
    { id: 0, domain: "Github", text: "print(1)" },
    { id: 1, domain: "Wikipedia", text: "First article." },
    { id: 2, domain: "Wikipedia", text: "Second article." },
  ]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("bad corpus input is one sentence naming the file and line", async (t) => {
  const dir = await Deno.makeTempDir();
  const cases: [string, string | Uint8Array, RegExp][] = [
    [
      "bad.jsonl",
      '{"text": "a", "meta": {"pile_set_name": "A"}}\n{"text": 3}\n',
      /bad\.jsonl line 2 has no string field "text"\.$/,
    ],
    [
      "nometa.jsonl",
      '{"text": "a"}\n',
      /nometa\.jsonl line 1 has no string field "meta\.pile_set_name"; pass --default-domain NAME to label such lines\.$/,
    ],
    ["broken.jsonl", '{"text": "a", "meta"\n', /broken\.jsonl line 1 is not valid JSON/],
    [
      "utf8.jsonl",
      new Uint8Array([0x7b, 0x22, 0xff, 0x0a]),
      /utf8\.jsonl line 1 is not valid UTF-8\.$/,
    ],
    ["corpus.txt", "text", /must be a \.jsonl or \.jsonl\.zst file or a folder of text files\.$/],
    [
      "trunc.jsonl.zst",
      (await Deno.readFile(`${DATA}mini-pile.jsonl.zst`)).subarray(0, 40),
      /trunc\.jsonl\.zst is truncated or not valid Zstandard data/,
    ],
  ];
  for (const [name, content, pattern] of cases) {
    await t.step(name, async () => {
      const path = `${dir}/${name}`;
      if (typeof content === "string") await Deno.writeTextFile(path, content);
      else await Deno.writeFile(path, content);
      await assert.rejects(
        () => collect(path),
        (e) => e instanceof DataError && pattern.test(e.message),
      );
    });
  }
  await Deno.remove(dir, { recursive: true });
});
