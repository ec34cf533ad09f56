/**
 * The command line as a new user meets it (issue 21): did-you-mean for
 * typos, --json summaries, refused output folders, Ctrl-C, help texts.
 */
import assert from "node:assert/strict";
import { runCli } from "./cli_helpers.ts";
import { writeSyntheticTrace } from "../trace/synthetic.ts";

Deno.test("typos of commands, flags and choices get a did-you-mean and exit 2", async () => {
  const cases: [string[], RegExp][] = [
    [
      ["analyse", "t", "--out", "o"],
      /^moetrace: Unknown command "analyse"; run `moetrace --help` for the list\. Did you mean analyze\?$/,
    ],
    [
      ["capture", "--model", "m", "--corpus", "c", "--out", "o", "--max-token", "5"],
      /^moetrace: Unknown option --max-token for capture; run `moetrace capture --help`\. Did you mean --max-tokens\?$/,
    ],
    [
      ["simulate", "t", "--out", "o", "--budget", "perlayer"],
      /^moetrace: --budget of simulate must be one of per-layer, global, got "perlayer"\. Did you mean per-layer\?$/,
    ],
    // Nothing near: no suggestion.
    [
      ["frobnicate"],
      /^moetrace: Unknown command "frobnicate"; run `moetrace --help` for the list\.$/,
    ],
  ];
  for (const [args, pattern] of cases) {
    const result = await runCli(args);
    assert.equal(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
    assert.match(result.stderr, pattern);
  }
});

Deno.test("inspect --json prints one JSON object with the trace's counts", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await writeSyntheticTrace(dir, {
      domains: [{ name: "ArXiv", docs: 3 }, { name: "Github", docs: 2 }],
      tokensPerDoc: 10,
      numExperts: 8,
      topK: 2,
      numLayers: 4,
    });
    const result = await runCli(["inspect", dir, "--json"]);
    assert.equal(result.code, 0, result.stderr);
    const json = JSON.parse(result.stdout);
    assert.equal(json.kind, "trace");
    assert.equal(json.documents, 5);
    assert.equal(json.tokens, 50);
    assert.equal(json.model.num_experts, 8);
    assert.deepEqual(json.domains, [
      { domain: "ArXiv", docs: 3, tokens: 30, generated: 0 },
      { domain: "Github", docs: 2, tokens: 20, generated: 0 },
    ]);
    const model = await runCli(["inspect", "fixtures/models/tiny-moe", "--json"]);
    assert.equal(model.code, 0, model.stderr);
    const facts = JSON.parse(model.stdout);
    assert.equal(facts.kind, "model");
    assert.equal(facts.experts, 8);
    assert.equal(facts.expert_params, 3 * 192 * 384);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
