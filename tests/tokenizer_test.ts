// Parity of the JavaScript tokenizer (@huggingface/tokenizers, used by the
// engine) with the Python `tokenizers` library that trained tiny-moe and made
// its goldens. fixtures/train/pile_sample_ids.py wrote the reference: token
// counts per document and a SHA-256 over every id (little-endian u32, <s>
// included) of the shared Pile sample, in file order.
import assert from "node:assert/strict";
import { Template } from "@huggingface/jinja";
import { Tokenizer } from "@huggingface/tokenizers";

const MODEL_DIR = new URL("../fixtures/models/tiny-moe/", import.meta.url);
const REFERENCE = new URL("../fixtures/corpus/pile-sample-ids.json", import.meta.url);
const CORPUS = new URL("../../shared/corpus/pile-sample.jsonl", import.meta.url);

interface Reference {
  documents: number;
  total_tokens: number;
  ids_sha256: string;
  token_counts: number[];
  tokenizer_sha256: string;
}

interface TokenizerConfig {
  bos_token: string;
  eos_token: string;
  chat_template: string;
}

async function readJson<T>(url: URL): Promise<T> {
  return JSON.parse(await Deno.readTextFile(url)) as T;
}

async function loadTokenizer(): Promise<{ tokenizer: Tokenizer; config: TokenizerConfig }> {
  const json = await readJson<object>(new URL("tokenizer.json", MODEL_DIR));
  const config = await readJson<TokenizerConfig>(new URL("tokenizer_config.json", MODEL_DIR));
  return { tokenizer: new Tokenizer(json, config), config };
}

async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function corpusAbsentReason(): string | null {
  try {
    Deno.statSync(CORPUS);
    return null;
  } catch {
    return `the shared corpus ${CORPUS.pathname} is absent`;
  }
}

const skipReason = corpusAbsentReason();
if (skipReason) {
  console.log(`tokenizer_test: skipping the Pile-sample parity test because ${skipReason}.`);
}

Deno.test({
  name: "tiny-moe tokenizer gives the Python tokenizers ids on every Pile-sample document",
  ignore: skipReason !== null,
  fn: async () => {
    const { tokenizer } = await loadTokenizer();
    const reference = await readJson<Reference>(REFERENCE);
    const fileHash = await sha256Hex(await Deno.readFile(new URL("tokenizer.json", MODEL_DIR)));
    assert.equal(
      fileHash,
      reference.tokenizer_sha256,
      "tokenizer.json is not the one the reference was made with",
    );

    const lines = (await Deno.readTextFile(CORPUS)).split("\n").filter((l) => l.trim() !== "");
    assert.equal(lines.length, reference.documents);
    const all: number[] = [];
    lines.forEach((line, doc) => {
      const text = (JSON.parse(line) as { text: string }).text;
      const ids = tokenizer.encode(text).ids;
      // Counts first, so a divergence names the document it starts in.
      assert.equal(ids.length, reference.token_counts[doc], `token count of document ${doc}`);
      for (const id of ids) all.push(id);
    });
    assert.equal(all.length, reference.total_tokens);
    const bytes = new Uint8Array(all.length * 4);
    const view = new DataView(bytes.buffer);
    all.forEach((id, i) => view.setUint32(4 * i, id, true));
    assert.equal(await sha256Hex(bytes), reference.ids_sha256);
  },
});

Deno.test({
  name: "tiny-moe tokenizer decodes every Pile-sample document back to its text",
  ignore: skipReason !== null,
  fn: async () => {
    const { tokenizer } = await loadTokenizer();
    const lines = (await Deno.readTextFile(CORPUS)).split("\n").filter((l) => l.trim() !== "");
    for (const [doc, line] of lines.entries()) {
      const text = (JSON.parse(line) as { text: string }).text;
      const ids = tokenizer.encode(text).ids;
      assert.equal(tokenizer.decode(ids, { skip_special_tokens: true }), text, `document ${doc}`);
    }
  },
});

Deno.test("tiny-moe tokenizer adds <s> once, and only when asked", async () => {
  const { tokenizer } = await loadTokenizer();
  const bos = tokenizer.token_to_id("<s>");
  assert.equal(bos, 1);
  assert.equal(tokenizer.token_to_id("</s>"), 2);
  assert.equal(tokenizer.token_to_id("<unk>"), 0);
  const withBos = tokenizer.encode("Hello world").ids;
  const plain = tokenizer.encode("Hello world", { add_special_tokens: false }).ids;
  assert.deepEqual(withBos, [bos, ...plain]);
  assert.equal(withBos.filter((id) => id === bos).length, 1);
  // Byte-level: a leading space is its own marker (Ġ), and nothing is <unk>.
  assert.deepEqual(tokenizer.tokenize(" world"), ["Ġworld"]);
  const odd = "naïve café — 東京 🚀\ttab";
  const oddIds = tokenizer.encode(odd, { add_special_tokens: false }).ids;
  assert.ok(!oddIds.includes(0), "no <unk> for any byte");
  assert.equal(tokenizer.decode(oddIds), odd);
});

Deno.test("tiny-moe chat template renders Mixtral-style and starts with exactly one <s>", async () => {
  const { tokenizer, config } = await loadTokenizer();
  const messages = [
    { role: "system", content: "Be brief." },
    { role: "user", content: "Hi" },
    { role: "assistant", content: "Hello." },
    { role: "user", content: "Why?" },
  ];
  const rendered = new Template(config.chat_template).render({
    messages,
    bos_token: config.bos_token,
    eos_token: config.eos_token,
  });
  assert.equal(rendered, "<s> [INST] Be brief.\n\nHi [/INST] Hello.</s> [INST] Why? [/INST]");
  // The template writes <s> itself, so the prompt is encoded without special tokens.
  const ids = tokenizer.encode(rendered, { add_special_tokens: false }).ids;
  assert.equal(ids[0], 1);
  assert.equal(ids.filter((id) => id === 1).length, 1);
  assert.equal(
    ids.filter((id) => id === 2).length,
    1,
    "</s> after the assistant turn is one token",
  );
});
