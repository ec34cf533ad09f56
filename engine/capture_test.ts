/**
 * capture and generate end to end on a fixture checkpoint: what lands in the
 * trace is what Hugging Face's own forward routes (the golden file of the
 * same prompts), batching does not change it, and generation continues a
 * prompt exactly as the Hugging Face golden says.
 */
import assert from "node:assert/strict";
import { runCli } from "../tests/cli_helpers.ts";
import { checkRouting, checkSpecShape, goldenI32, readGolden } from "./golden.ts";
import { TextTokenizer } from "./tokenizer.ts";
import { type TraceDoc, TraceReader } from "../trace/mod.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const NAME = "tiny-mixtral-swa";
const MODEL = `${ROOT}fixtures/models/${NAME}`;

async function docs(dir: string): Promise<TraceDoc[]> {
  const out: TraceDoc[] = [];
  for await (const d of (await TraceReader.open(dir)).documents()) out.push(structuredClone(d));
  return out;
}

Deno.test("capture writes the router decisions Hugging Face makes, whatever the batch size", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-capture-" });
  // The golden's three prompts (18, 27 and 34 tokens) as a corpus of three domains.
  const golden = JSON.parse(await Deno.readTextFile(`${MODEL}/golden.json`));
  const domains = ["ArXiv", "Github", "EuroParl"];
  const corpus = golden.prompts.map((p: { text: string }, i: number) => ({
    text: p.text,
    meta: { pile_set_name: domains[i] },
  }));
  await Deno.writeTextFile(
    `${dir}/corpus.jsonl`,
    corpus.map((c: unknown) => JSON.stringify(c)).join("\n") + "\n",
  );
  const common = [
    "--model",
    MODEL,
    "--corpus",
    `${dir}/corpus.jsonl`,
    "--probs",
    "--lookahead",
    "1",
    "--max-tokens",
    "40",
  ];
  // 8 tokens per batch: every document in a pass of its own; 4096: all three in one pass
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
  assert.deepEqual(captured.map((d) => [d.doc, d.domain]), domains.map((d, i) => [i, d]));

  const g = await readGolden(NAME);
  const tokenizer = await TextTokenizer.load(MODEL);
  const manifest = JSON.parse(await Deno.readTextFile(`${dir}/small/manifest.json`));
  const facts = manifest.model;
  captured.forEach((doc, p) => {
    assert.deepEqual(Array.from(doc.tokens), Array.from(goldenI32(g, `p${p}.ids`)));
    assert.equal(doc.pieces.join(""), "<s>" + tokenizer.decode(doc.tokens.subarray(1)));
    checkRouting(g, p, { experts: doc.experts, weights: doc.weights, probs: doc.probs! }, {
      moeLayers: facts.moe_layers.length,
      topK: facts.top_k,
      experts: facts.num_experts,
    });
    checkSpecShape(doc.spec!, facts, 1);
  });
  assert.equal(manifest.capture.complete, true);
  assert.equal(facts.top_k, 3);
  assert.deepEqual(manifest.capture.domains, domains);

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
  assert.match(again.stderr, /0 documents \(0 tokens\) written to .*, 3 already there\./);
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
    /Cannot resume the trace in .*: its capture\.settings\.max_tokens is 40, this run has 30\.$/,
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

Deno.test("a chat template that loops is stopped after its time limit", async () => {
  // The clock starts once the worker has loaded (tokenizer.ts): its first
  // start under `deno test` type-checks it, which took over the whole 2000 ms
  // default on a loaded machine before. This template runs 10^10 iterations.
  const dir = await Deno.makeTempDir({ prefix: "moetrace-chat-" });
  try {
    await Deno.copyFile(`${MODEL}/tokenizer.json`, `${dir}/tokenizer.json`);
    const config = JSON.parse(await Deno.readTextFile(`${MODEL}/tokenizer_config.json`));
    config.chat_template =
      "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
    await Deno.writeTextFile(`${dir}/tokenizer_config.json`, JSON.stringify(config));
    const looping = await TextTokenizer.load(dir);
    await assert.rejects(
      looping.encodeChat([{ role: "user", content: "hi" }], 200),
      /The chat template in .*tokenizer_config\.json failed: it did not finish within 200 ms and may loop\./,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
