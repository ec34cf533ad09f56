import assert from "node:assert/strict";
import {
  EXPECTED,
  type ExpectedDoc,
  FIXTURES,
  listDir,
  readBack,
  runImport,
} from "./fixtures_test_helpers.ts";

const OLMOE = `${FIXTURES}olmoe_c4_results.jsonl`;

Deno.test("OLMoE's exp_ids [tokens][top_k][layers] import as [tokens][layers][top_k], one document per row", async () => {
  const dir = await Deno.makeTempDir();
  const { code, stderr, out } = await runImport(dir, [OLMOE]);
  assert.equal(code, 0, stderr);
  assert.match(stderr, /\(olmoe\)/);
  const { manifest, docs } = await readBack(out);
  const truth = EXPECTED.olmoe.documents as ExpectedDoc[];
  assert.deepEqual(
    docs.map(({ tokens, phase, experts }) => ({ tokens, phase, experts })),
    truth.map(({ tokens, phase, experts }) => ({ tokens, phase, experts })),
  );
  assert.ok(docs.every((d) => d.domain === "olmoe_c4_results"));
  assert.ok(docs.every((d) => d.weights.every((w) => Math.abs(w - 1 / 3) < 1e-7)));
  assert.equal(manifest.model.top_k, EXPECTED.olmoe.top_k);
  assert.deepEqual(manifest.model.moe_layers, [0, 1]);
  assert.equal(manifest.capture.mode, "teacher-forced");
  assert.equal(manifest.capture.weights_recorded, false);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("an OLMoE row whose exp_ids do not match its tokens is one sentence, no trace", async () => {
  const dir = await Deno.makeTempDir();
  const [line] = (await Deno.readTextFile(OLMOE)).split("\n");
  const row = JSON.parse(line!);
  row.input_ids = row.input_ids.slice(1);
  await Deno.writeTextFile(`${dir}/in.jsonl`, JSON.stringify(row) + "\n");
  const { code, stderr } = await runImport(dir, [`${dir}/in.jsonl`]);
  assert.equal(code, 1);
  assert.match(
    stderr,
    /in\.jsonl line 1 field "exp_ids" has 5 rows but "input_ids" has 4 tokens; expected \[tokens\]\[top_k\]\[layers\]\.$/,
  );
  assert.deepEqual(listDir(dir), ["in.jsonl"]);
  await Deno.remove(dir, { recursive: true });
});
