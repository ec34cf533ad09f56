import assert from "node:assert/strict";
import {
  EXPECTED,
  type ExpectedDoc,
  FIXTURES,
  listDir,
  readBack,
  runImport,
} from "./fixtures_test_helpers.ts";

const VLLM = `${FIXTURES}vllm_responses.jsonl`;
const SGLANG = `${FIXTURES}sglang_responses.jsonl`;
const CONFIG = `${FIXTURES}deepseek_config.json`;

function pick(docs: ExpectedDoc[]) {
  return docs.map(({ request, tokens, phase, experts }) => ({ request, tokens, phase, experts }));
}

Deno.test("vLLM responses: one document per choice, prompt rows then generated rows, request ids kept", async () => {
  const dir = await Deno.makeTempDir();
  const { code, stderr, out } = await runImport(dir, [VLLM]);
  assert.equal(code, 0, stderr);
  assert.match(stderr, /^Imported 3 documents, 13 tokens \(vllm\) into /);
  const { manifest, docs } = await readBack(out);
  assert.deepEqual(pick(docs), pick(EXPECTED.vllm.documents));
  assert.ok(docs.every((d) => d.domain === "vllm_responses"));
  // No --model-config: the expert count is the largest id seen + 1.
  assert.equal(manifest.model.num_experts, EXPECTED.vllm.max_expert + 1);
  assert.equal(manifest.capture.settings!.num_experts_inferred, true);
  assert.deepEqual(manifest.model.moe_layers, [0, 1]);
  assert.equal(manifest.model.top_k, 2);
  assert.equal(manifest.capture.requests, true);
  assert.equal(manifest.capture.weights_recorded, false);
  assert.equal(manifest.capture.tokens_recorded, true);
  assert.equal(manifest.capture.mode, "generate");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("SGLang responses: base64 routed_experts reshaped by --model-config, dense layer dropped", async () => {
  const dir = await Deno.makeTempDir();
  const { code, stderr, out } = await runImport(dir, [SGLANG, "--model-config", CONFIG]);
  assert.equal(code, 0, stderr);
  const { manifest, docs } = await readBack(out);
  // Rows are the prompt then the generated tokens but the last; a line may hold a batch.
  assert.deepEqual(pick(docs), pick(EXPECTED.sglang_response.documents));
  assert.deepEqual(manifest.model.moe_layers, [1, 2, 3]);
  assert.equal(manifest.model.num_layers, 4);
  assert.equal(manifest.model.num_experts, 4);
  assert.equal(manifest.model.expert_params, 3 * 64 * 32);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("bad responses are one sentence naming the line and field, with no partial trace", async (t) => {
  const good = (await Deno.readTextFile(VLLM)).split("\n").filter((l) => l !== "");
  const first = JSON.parse(good[0]!);
  const cases: [string, string, string[], RegExp][] = [
    [
      "SGLang without --model-config",
      await Deno.readTextFile(SGLANG),
      ["--from", "sglang-response"],
      /pass --model-config config\.json to say those two numbers\.$/,
    ],
    [
      "a choice without routing",
      JSON.stringify({ ...first, choices: [{ index: 0, token_ids: [1], routed_experts: null }] }),
      [],
      /in\.jsonl line 1 field "choices\[0\]\.routed_experts" is missing; was the server started with --enable-return-routed-experts\?$/,
    ],
    [
      "a ragged row",
      JSON.stringify({
        ...first,
        prompt_routed_experts: [[[0, 1], [2, 3]], [[0, 1]], [[4, 5], [1, 2]]],
      }),
      [],
      /in\.jsonl line 1 field "prompt_routed_experts\[1\]" must hold 2 lists, got 1\.$/,
    ],
    [
      "prompt ids and rows disagree",
      JSON.stringify({ ...first, prompt_token_ids: [1, 2] }),
      [],
      /line 1 has 2 prompt_token_ids but 3 rows of prompt_routed_experts/,
    ],
    [
      "an expert chosen twice",
      JSON.stringify({
        ...first,
        prompt_routed_experts: [[[0, 1], [2, 3]], [[4, 4], [1, 2]], [[4, 5], [1, 2]]],
      }),
      [],
      /line 1 field "prompt_routed_experts\[1\]\[0\]" chooses expert 4 twice; top-k experts must differ\.$/,
    ],
    [
      "a second response with another top-k",
      good[0] + "\n" +
      JSON.stringify({
        id: "x",
        choices: [{ index: 0, routed_experts: [[[1, 2, 3], [1, 2, 3]]] }],
      }),
      [],
      /line 2 choices\[0\] has 2 layers × top-3 per token, but .*line 1 choices\[0\] has 2 × top-2/,
    ],
    [
      "not JSON",
      good[0] + "\n{",
      [],
      /in\.jsonl line 2 is not valid JSON: /,
    ],
  ];
  for (const [name, text, extra, pattern] of cases) {
    await t.step(name, async () => {
      const dir = await Deno.makeTempDir();
      await Deno.writeTextFile(`${dir}/in.jsonl`, text + "\n");
      const { code, stderr } = await runImport(dir, [`${dir}/in.jsonl`, ...extra]);
      assert.equal(code, 1, stderr);
      assert.match(stderr, pattern);
      assert.equal(stderr.split("\n").length, 1, "one line");
      assert.deepEqual(listDir(dir), ["in.jsonl"], "no partial trace");
      await Deno.remove(dir, { recursive: true });
    });
  }
});
