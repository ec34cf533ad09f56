/**
 * Analysis of imported router logs that lack columns (issue 18): a vLLM-style
 * response file without token ids or gate weights imports with
 * capture.tokens_recorded and capture.weights_recorded false, and analyze
 * leaves out the token statistics (vocabulary specialisation, colouring)
 * instead of computing them from placeholder ids, says so in one line and in
 * its README, and still computes the routing statistics, whose expert shares
 * are checked here against counts taken from the file by hand.
 */
import assert from "node:assert/strict";
import { parse } from "csv-parse/sync";
import { runCli } from "../tests/cli_helpers.ts";

const FIXTURES = new URL("../fixtures/import/", import.meta.url).pathname;
const E = 4;
const K = 2;
const M = 2;

/** A k-subset of E experts in a fixed pseudo-random order (MINSTD; nothing shared with the code under test). */
function route(state: { x: number }): number[] {
  const next = () =>
    Math.floor((state.x = (state.x * 1103515245 + 12345) % 2147483648) / 65536) % E;
  const first = next();
  let second = next();
  while (second === first) second = (second + 1) % E;
  return [first, second];
}

/** Saved vLLM responses with routed experts but neither prompt_token_ids nor token_ids. */
function responsesWithoutTokens(): { text: string; rows: number[][][] } {
  const state = { x: 7 };
  const rows: number[][][] = [];
  const rowsOf = (n: number) =>
    Array.from({ length: n }, () => {
      const row = Array.from({ length: M }, () => route(state));
      rows.push(row);
      return row;
    });
  const lines = [0, 1, 2].map((i) =>
    JSON.stringify({
      id: `cmpl-${i}`,
      prompt_routed_experts: rowsOf(12),
      choices: [{ index: 0, text: "…", routed_experts: rowsOf(8) }],
    })
  );
  return { text: lines.join("\n") + "\n", rows };
}

async function cli(args: string[]): Promise<string> {
  const result = await runCli(args);
  assert.equal(result.code, 0, `${args.join(" ")}: ${result.stderr}`);
  return result.stdout;
}

Deno.test("a log without token ids or weights: token statistics skipped with a line and a README note", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-recorded-test-" });
  try {
    const log = responsesWithoutTokens();
    await Deno.writeTextFile(`${dir}/responses.jsonl`, log.text);
    await cli(["import", `${dir}/responses.jsonl`, "--out", `${dir}/trace`, "--from", "vllm"]);
    const manifest = JSON.parse(await Deno.readTextFile(`${dir}/trace/manifest.json`));
    assert.equal(manifest.capture.tokens_recorded, false);
    assert.equal(manifest.capture.weights_recorded, false);
    const printed = await cli([
      "analyze",
      `${dir}/trace`,
      "--out",
      `${dir}/out`,
      "--bootstrap",
      "50",
    ]);
    const lines = printed.split("\n");
    assert.equal(lines.filter((l) => /^The trace records no token ids/.test(l)).length, 1);
    assert.equal(lines.filter((l) => /^The trace records no gate weights/.test(l)).length, 1);
    // With --json the same lines are in the one object on stdout.
    const json = JSON.parse(
      await cli(["analyze", `${dir}/trace`, "--out", `${dir}/json`, "--bootstrap", "0", "--json"]),
    );
    assert.deepEqual(json.skipped, lines.filter((l) => /^The trace records no/.test(l)));
    const readme = await Deno.readTextFile(`${dir}/out/README.md`);
    assert.match(
      readme,
      /capture\.tokens_recorded is false.*vocabulary_specialisation\.csv has no rows/,
    );
    assert.match(readme, /capture\.weights_recorded is false/);
    const vocabulary = await Deno.readTextFile(`${dir}/out/vocabulary_specialisation.csv`);
    assert.equal(vocabulary.trim().split("\n").length, 1, "header only");
    const colouring = await Deno.readTextFile(`${dir}/out/token_colouring.html`);
    assert.match(colouring, /No token colouring/);
    assert.doesNotMatch(colouring, /title="expert/);

    // The routing statistics are still there: top-k shares of `all` as counted from the file.
    const shares = (parse(await Deno.readTextFile(`${dir}/out/expert_shares.csv`), {
      columns: true,
    }) as Record<string, string>[]).filter((r) => r.domain === "all" && r.choice === "top_k");
    assert.equal(shares.length, M * E);
    for (const r of shares) {
      const l = Number(r.moe_layer);
      const e = Number(r.expert);
      const count = log.rows.filter((row) => row[l]!.includes(e)).length;
      assert.ok(
        Math.abs(Number(r.share) - count / (K * log.rows.length)) < 1e-11,
        JSON.stringify(r),
      );
      assert.equal(r.layer, r.moe_layer, "no dense layers in this log");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a log with token ids but no weights keeps its token statistics", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-recorded-test-" });
  try {
    await cli(["import", `${FIXTURES}vllm_responses.jsonl`, "--out", `${dir}/trace`]);
    const printed = await cli([
      "analyze",
      `${dir}/trace`,
      "--out",
      `${dir}/out`,
      "--bootstrap",
      "0",
    ]);
    assert.doesNotMatch(printed, /no token ids/);
    assert.match(printed, /^The trace records no gate weights/m);
    const colouring = await Deno.readTextFile(`${dir}/out/token_colouring.html`);
    assert.match(colouring, /title="expert/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
