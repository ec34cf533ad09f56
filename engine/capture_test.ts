/**
 * capture and generate end to end on a fixture checkpoint: what lands in the
 * trace is what the model routed, batching does not change it, and generation
 * continues a prompt exactly as the Hugging Face golden says.
 */
import assert from "node:assert/strict";
import { runCli } from "../tests/cli_helpers.ts";
import { loadModel } from "./model.ts";
import { TextTokenizer } from "./tokenizer.ts";
import { type TraceDoc, TraceReader } from "../trace/mod.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const MODEL = `${ROOT}fixtures/models/tiny-mixtral-swa`;
const CORPUS = `${ROOT}tests/data/mini-pile.jsonl`;

async function docs(dir: string): Promise<TraceDoc[]> {
  const out: TraceDoc[] = [];
  for await (const d of (await TraceReader.open(dir)).documents()) out.push(structuredClone(d));
  return out;
}

Deno.test("capture writes the router decisions the model makes, whatever the batch size", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-capture-" });
  const common = [
    "--model",
    MODEL,
    "--corpus",
    CORPUS,
    "--probs",
    "--lookahead",
    "1",
    "--max-tokens",
    "20",
  ];
  const small = await runCli([
    "capture",
    ...common,
    "--out",
    `${dir}/small`,
    "--batch-tokens",
    "8",
  ]);
  assert.equal(small.code, 0, small.stderr);
  const large = await runCli([
    "capture",
    ...common,
    "--out",
    `${dir}/large`,
    "--batch-tokens",
    "4096",
  ]);
  assert.equal(large.code, 0, large.stderr);
  const captured = await docs(`${dir}/small`);
  assert.deepEqual(captured, await docs(`${dir}/large`), "batching does not change the trace");

  const corpus = (await Deno.readTextFile(CORPUS)).trim().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(
    captured.map((d) => [d.doc, d.domain]),
    corpus.map((c, i) => [i, c.meta.pile_set_name]),
  );
  const tokenizer = await TextTokenizer.load(MODEL);
  const model = await loadModel(MODEL);
  try {
    const ids = corpus.map((c) => tokenizer.encode(c.text).subarray(0, 20));
    const logs = await model.route(ids, { probs: true, lookahead: 1 });
    captured.forEach((doc, i) => {
      assert.deepEqual(Array.from(doc.tokens), Array.from(ids[i]!));
      assert.equal(doc.pieces.join(""), "<s>" + tokenizer.decode(ids[i]!.subarray(1)));
      assert.deepEqual(Array.from(doc.experts), Array.from(logs[i]!.experts));
      assert.deepEqual(Array.from(doc.weights), Array.from(logs[i]!.weights));
      assert.deepEqual(Array.from(doc.probs!), Array.from(logs[i]!.probs!));
      assert.deepEqual(Array.from(doc.spec!), Array.from(logs[i]!.spec!));
    });
  } finally {
    model.destroy();
  }
  const manifest = JSON.parse(await Deno.readTextFile(`${dir}/small/manifest.json`));
  assert.equal(manifest.capture.complete, true);
  assert.equal(manifest.model.top_k, 3);
  assert.deepEqual(manifest.capture.domains, ["ArXiv", "Github", "EuroParl"]);

  // Running the same capture again finds nothing left to do.
  const again = await runCli([
    "capture",
    ...common,
    "--out",
    `${dir}/small`,
    "--batch-tokens",
    "8",
  ]);
  assert.equal(again.code, 0);
  assert.match(again.stderr, /0 documents \(0 tokens\) written to .*, 6 already there\./);
  // A different selection cannot be resumed into the same trace.
  const other = await runCli([
    "capture",
    ...common.slice(0, -2),
    "--max-tokens",
    "30",
    "--out",
    `${dir}/small`,
  ]);
  assert.equal(other.code, 1);
  assert.match(
    other.stderr,
    /Cannot resume the trace in .*: its capture\.settings\.max_tokens is 20, this run has 30\.$/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("generate continues a prompt as the Hugging Face golden does and marks generated tokens", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-generate-" });
  const golden = JSON.parse(await Deno.readTextFile(`${MODEL}/golden.json`)).prompts[0];
  await Deno.writeTextFile(
    `${dir}/prompts.jsonl`,
    JSON.stringify({ prompt: golden.text, domain: "golden" }) + "\n",
  );
  const result = await runCli([
    "generate",
    "--model",
    MODEL,
    "--prompts",
    `${dir}/prompts.jsonl`,
    "--out",
    `${dir}/trace`,
    "--max-new-tokens",
    "12",
  ]);
  assert.equal(result.code, 0, result.stderr);
  const [doc] = await docs(`${dir}/trace`);
  const promptLength = golden.ids.length;
  assert.deepEqual(Array.from(doc!.tokens.subarray(0, promptLength)), golden.ids);
  assert.deepEqual(Array.from(doc!.tokens.subarray(promptLength)), golden.greedy.slice(0, 12));
  assert.deepEqual(Array.from(doc!.phase!), [...Array(promptLength).fill(0), ...Array(12).fill(1)]);
  assert.equal(doc!.domain, "golden");
  const printed = JSON.parse(result.stdout.trim());
  assert.equal(printed.prompt, golden.text);
  assert.equal(printed.completion, golden.greedy_text.slice(0, printed.completion.length));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a chat prompt carries exactly one BOS token", async () => {
  const tokenizer = await TextTokenizer.load(MODEL);
  const ids = await tokenizer.encodeChat([{ role: "user", content: "Which expert?" }]);
  assert.equal(ids[0], 1);
  assert.equal(Array.from(ids).filter((id) => id === 1).length, 1);
  assert.match(tokenizer.decode(ids), /^<s> ?\[INST\] Which expert\? \[\/INST\]/);
});
