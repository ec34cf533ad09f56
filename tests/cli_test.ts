import assert from "node:assert/strict";
import { runCli, runCliProcess } from "./cli_helpers.ts";
import { writeSyntheticTrace } from "../trace/synthetic.ts";

const COMMANDS = [
  "capture",
  "generate",
  "import",
  "inspect",
  "analyze",
  "simulate",
  "report",
  "bench",
];

Deno.test("--help lists every command and each command's help lists its flags with defaults", async () => {
  const top = await runCli(["--help"]);
  assert.equal(top.code, 0);
  for (const c of COMMANDS) assert.match(top.stdout, new RegExp(`^  ${c} `, "m"));
  const capture = await runCli(["capture", "--help"]);
  assert.equal(capture.code, 0);
  assert.match(
    capture.stdout,
    /--max-tokens N +Tokens per document, the rest cut\. \(default: 512\)/,
  );
  assert.match(capture.stdout, /--model DIR .*\(required\)/);
  const simulate = await runCli(["simulate", "--help"]);
  assert.match(simulate.stdout, /--budget .*One of: per-layer, global\. \(default: per-layer\)/);
});

Deno.test("--version prints the tool version", async () => {
  const result = await runCli(["--version"]);
  assert.equal(result.code, 0);
  assert.match(result.stdout, /^moetrace \d+\.\d+\.\d+$/);
});

Deno.test("usage mistakes are one sentence and exit 2", async () => {
  const cases: [string[], RegExp][] = [
    [[], /^$/],
    [
      ["frobnicate"],
      /^moetrace: Unknown command "frobnicate"; run `moetrace --help` for the list\.$/,
    ],
    [
      ["analyze", "t", "--out", "o", "--bogus"],
      /^moetrace: Unknown option --bogus for analyze; run `moetrace analyze --help`\.$/,
    ],
    [["analyze", "t"], /^moetrace: analyze needs --out DIR\.$/],
    [
      ["analyze", "--out", "o"],
      /^moetrace: analyze needs a TRACE argument or --from-counts DIR \(count tables of analysis\/sql\/\); run `moetrace analyze --help`\.$/,
    ],
    [
      ["analyze", "t", "--out", "o", "--bootstrap", "ten"],
      /^moetrace: --bootstrap of analyze must be an integer, got "ten"\.$/,
    ],
    [
      ["analyze", "t", "--out", "o", "--bootstrap=-1"],
      /^moetrace: --bootstrap of analyze must be at least 0, got -1\.$/,
    ],
    [
      ["analyze", "t", "--out", "o", "--bootstrap", "-1"],
      /^moetrace: Option --bootstrap of analyze got a value starting with "-"; write it as --bootstrap=VALUE\.$/,
    ],
    [
      ["simulate", "t", "--out", "o", "--budget", "all"],
      /^moetrace: --budget of simulate must be one of per-layer, global, got "all"\.$/,
    ],
    [
      ["generate", "--model", "m", "--prompts", "p", "--out", "o", "--budget", "global"],
      /^moetrace: --budget needs --offload POLICY:CAPACITY\.$/,
    ],
    [
      ["generate", "--model", "m", "--prompts", "p", "--out", "o", "--offload", "belady:4"],
      /^moetrace: --offload takes POLICY:CAPACITY with an online policy \(lru, fifo, lfu, lrfu, random, swap\) and a positive integer, got "belady:4"\.$/,
    ],
    [
      ["capture", "--model", "m", "--corpus", "c", "--out"],
      /^moetrace: Option --out of capture needs a value\.$/,
    ],
    [
      ["bench", "nonsense"],
      /^moetrace: bench takes engine, offload, widths, gpu, cache, analysis, coverage, trace or import, got "nonsense"\.$/,
    ],
    [
      ["bench", "engine", "--large"],
      /^moetrace: --large is for bench offload, not engine\.$/,
    ],
  ];
  for (const [args, pattern] of cases) {
    const result = await runCli(args);
    assert.equal(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
    assert.match(result.stderr, pattern);
  }
});

Deno.test("inspect summarises a trace; a missing path is a data error", async () => {
  const dir = await Deno.makeTempDir();
  await writeSyntheticTrace(dir, {
    domains: [{ name: "ArXiv", docs: 3 }, { name: "Github", docs: 2 }],
    tokensPerDoc: 10,
    numExperts: 8,
    topK: 2,
    numLayers: 4,
  });
  const result = await runCli(["inspect", dir]);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /experts +8 routed, top-2, 0 shared/);
  assert.match(result.stdout, /documents +5; tokens 50/);
  assert.match(result.stdout, /^ +ArXiv +3 +30$/m);
  assert.match(result.stdout, /^ +Github +2 +20$/m);
  const missing = await runCli(["inspect", `${dir}/nope`]);
  assert.equal(missing.code, 1);
  assert.match(
    missing.stderr,
    /nope is neither a trace \(no manifest\.json\) nor a model directory/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("inspect summarises a model directory from its config and tensor headers", async () => {
  const result = await runCli(["inspect", "fixtures/models/tiny-moe"]);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /^family +mixtral$/m);
  assert.match(result.stdout, /^moe_layers +0,1,2,3$/m);
  assert.match(result.stdout, /^experts +8$/m);
  assert.match(result.stdout, /^top_k +2$/m);
  // One expert is w1, w3 [384, 192] and w2 [192, 384]: 3 · 192 · 384.
  assert.match(result.stdout, /^expert_params +221184$/m);
  // Embedding and lm_head 2 · 4096 · 192; per layer q, o 192², k, v 192 · 64, two norms,
  // router 8 · 192 and 8 experts; a final norm: 1,572,864 + 4 · 1,869,696 + 192.
  assert.match(result.stdout, /^parameters +9051840$/m);
});

Deno.test("a subprocess exits with the documented status and no stack trace", async () => {
  const bad = await runCliProcess(["--allow-read"], ["inspect", "/nonexistent/trace"]);
  assert.equal(bad.code, 1);
  assert.equal(bad.stderr.trim().split("\n").length, 1);
  assert.doesNotMatch(bad.stderr, /\bat \S+:\d+:\d+/);
  const usage = await runCliProcess([], ["analyze"]);
  assert.equal(usage.code, 2);
});

Deno.test("import takes several FILEs, --from and --model-config", async () => {
  const help = await runCli(["import", "--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^Usage: moetrace import FILE\.\.\. \[options\]$/m);
  assert.match(
    help.stdout,
    /--from FORMAT .*One of: interchange, sglang-pt, sglang-response, vllm, olmoe\./,
  );
  assert.match(help.stdout, /--model-config config\.json /);
  const bad = await runCli(["import", "a.pt", "--out", "t", "--from", "pytorch"]);
  assert.equal(bad.code, 2);
  assert.match(
    bad.stderr,
    /^moetrace: --from of import must be one of interchange, sglang-pt, sglang-response, vllm, olmoe, got "pytorch"\.$/,
  );
  // Two ranks' files, one trace; a file of another format alongside is refused.
  const dir = await Deno.makeTempDir();
  const two = await runCli([
    "import",
    "fixtures/import/sglang_rank0.pt",
    "fixtures/import/sglang_rank1.pt",
    "--out",
    `${dir}/t`,
  ]);
  assert.equal(two.code, 0, two.stderr);
  assert.match(two.stderr, /^Imported 7 documents, 26 tokens \(sglang-pt\) into /);
  const mixed = await runCli([
    "import",
    "fixtures/import/sglang_rank0.pt",
    "fixtures/import/olmoe_c4_results.jsonl",
    "--out",
    `${dir}/u`,
  ]);
  assert.equal(mixed.code, 1);
  assert.match(mixed.stderr, /looks like olmoe but .* like sglang-pt; import one format at a time/);
  await Deno.remove(dir, { recursive: true });
});
