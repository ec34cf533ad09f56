import assert from "node:assert/strict";
import { detectFormat, detectFormats } from "./command.ts";
import { FIXTURES } from "./fixtures_test_helpers.ts";

Deno.test("the format is told from each file's first bytes or first line", async () => {
  const cases: [string, string][] = [
    ["sglang_rank0.pt", "sglang-pt"],
    ["sglang_evil.pt", "sglang-pt"],
    ["vllm_responses.jsonl", "vllm"],
    ["sglang_responses.jsonl", "sglang-response"],
    ["olmoe_c4_results.jsonl", "olmoe"],
  ];
  for (const [file, format] of cases) {
    assert.equal(await detectFormat(FIXTURES + file), format, file);
  }
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/h.jsonl`, '{"moetrace_import": 1}\n');
  assert.equal(await detectFormat(`${dir}/h.jsonl`), "interchange");
  await Deno.writeTextFile(`${dir}/x.jsonl`, '{"hello": 1}\n');
  await assert.rejects(
    detectFormat(`${dir}/x.jsonl`),
    /^DataError: Cannot tell the format of .*x\.jsonl from its first line; pass --from with one of interchange, sglang-pt, sglang-response, vllm, olmoe\.$/,
  );
  await assert.rejects(
    detectFormats([FIXTURES + "sglang_rank0.pt", FIXTURES + "vllm_responses.jsonl"]),
    /vllm_responses\.jsonl looks like vllm but .*sglang_rank0\.pt like sglang-pt; import one format at a time/,
  );
  await Deno.remove(dir, { recursive: true });
});
