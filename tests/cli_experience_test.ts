/**
 * The command line as a new user meets it (issue 21): did-you-mean for
 * typos, --json summaries, refused output folders, Ctrl-C, help texts.
 */
import assert from "node:assert/strict";
import { runCli } from "./cli_helpers.ts";
import { writeSyntheticTrace } from "../trace/synthetic.ts";
import { type CorpusOptions, readCorpus } from "../corpus/corpus.ts";
import { DataError } from "../common/errors.ts";
import { Progress } from "../common/progress.ts";
import { generateReport, offloadTotals } from "../engine/generate.ts";
import { HARDWARE_PRESETS } from "../cache/hardware.ts";
import { DTYPES } from "../cache/dtypes.ts";
import { POLICY_NAMES } from "../cache/policies/mod.ts";
import { parseOffload } from "../engine/offload.ts";

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
    [
      ["bench", "offlaod"],
      /^moetrace: bench takes engine, offload, .*, got "offlaod"\. Did you mean offload\?$/,
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

/** A small synthetic trace of 8 experts, top-2, 4 MoE layers, in a fresh folder. */
async function smallTrace(): Promise<{ root: string; trace: string }> {
  const root = await Deno.makeTempDir();
  const trace = `${root}/trace`;
  await writeSyntheticTrace(trace, {
    domains: [{ name: "ArXiv", docs: 3 }, { name: "Github", docs: 2 }],
    tokensPerDoc: 12,
    numExperts: 8,
    topK: 2,
    numLayers: 4,
  });
  return { root, trace };
}

Deno.test("generate --offload takes policy names in any case", () => {
  const o = { prefetch: "none", budget: "per-layer" };
  assert.deepEqual(parseOffload("LRU:4", o), { policy: "lru", capacity: 4, ...o });
  assert.deepEqual(parseOffload("Lrfu:2", o), { policy: "lrfu", capacity: 2, ...o });
  assert.throws(() => parseOffload("Belady:4", o), /an online policy/);
});

Deno.test("simulate: policy names in any case, duplicates noted, --capacity above E refused", async () => {
  const { root, trace } = await smallTrace();
  try {
    const typo = await runCli(["simulate", trace, "--out", `${root}/s`, "--policy", "lru,belday"]);
    assert.equal(typo.code, 2);
    assert.match(typo.stderr, /--policy takes .*, got "belday"\. Did you mean belady\?$/);
    const dtype = await runCli(["simulate", trace, "--out", `${root}/s`, "--dtype", "int5"]);
    assert.equal(dtype.code, 2);
    assert.match(dtype.stderr, /--dtype takes .*, got "int5"\. Did you mean int8\?$/);
    const machine = await runCli(["simulate", trace, "--out", `${root}/s`, "--hardware", "pcie6"]);
    assert.equal(machine.code, 2);
    assert.match(machine.stderr, /--hardware takes .*, got "pcie6"\. Did you mean pcie3\?$/);
    const over = await runCli(["simulate", trace, "--out", `${root}/s`, "--capacity", "2,9"]);
    assert.equal(over.code, 2);
    assert.equal(
      over.stderr,
      "moetrace: --capacity 9 is more than the model's 8 experts per layer; give at most 8 (or --budget global for slots shared by all layers).",
    );
    // Global: 8 experts × 4 layers = 32 slots at most.
    const global = await runCli([
      ...["simulate", trace, "--out", `${root}/s`, "--capacity", "33", "--budget", "global"],
    ]);
    assert.equal(global.code, 2);
    assert.match(
      global.stderr,
      /--capacity 33 is more than the model's 8 experts × 4 MoE layers; give at most 32\.$/,
    );

    const ok = await runCli([
      ...["simulate", trace, "--out", `${root}/s`, "--policy", "LRU,lru,Belady"],
      ...["--dtype", "bf16,INT4,bf16", "--capacity", "2,4", "--json"],
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(
      ok.stderr,
      /^simulate: --policy named 1 value twice; each is simulated once: lru, belady\.$/m,
    );
    assert.match(
      ok.stderr,
      /^simulate: --dtype named 1 value twice; each is simulated once: bf16, int4\.$/m,
    );
    const json = JSON.parse(ok.stdout);
    assert.deepEqual(json.policies, ["lru", "belady"]);
    assert.deepEqual(json.dtypes, ["bf16", "int4"]);
    assert.deepEqual(json.capacities, [2, 4]);
    // lru and belady at 2 capacities, 2 dtypes: 8 combinations; one best per dtype and capacity.
    assert.equal(json.combinations, 8);
    assert.equal(json.best.length, 4);
    assert.deepEqual(
      new Set(json.best.map((b: { dtype: string }) => b.dtype)),
      new Set(["bf16", "int4"]),
    );
    // int4 experts are 4.125/16 of bf16's bytes, so no slower at the same capacity.
    for (const capacity of [2, 4]) {
      const ms = (d: string) =>
        json.best.find((b: { dtype: string; capacity: number }) =>
          b.dtype === d && b.capacity === capacity
        )
          .ms_per_token;
      assert.ok(ms("int4") <= ms("bf16"), `capacity ${capacity}`);
    }
    assert.match(
      json.notes[0],
      /as does the report's results table; the figures show bf16 only\.$/,
    );
    const csv = await Deno.readTextFile(`${root}/s/simulation.csv`);
    assert.match(csv, /,int4,/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("--domains names the corpus lacks are refused with its domains; --default-domain labels bare lines", async () => {
  const path = "tests/data/mini-pile.jsonl";
  const collect = async (options: CorpusOptions) => {
    const docs = [];
    for await (const d of readCorpus(path, options)) docs.push(d);
    return docs;
  };
  // "Arxiv" is a typo of ArXiv: without the check this captured Github alone.
  await assert.rejects(
    collect({ domains: ["Arxiv", "Github"] }),
    (e: Error) =>
      e instanceof DataError &&
      e.message ===
        `--domains names "Arxiv" (did you mean ArXiv?), which the corpus ${path} does not hold; its domains are ArXiv, EuroParl, Github.`,
  );
  await assert.rejects(
    collect({ domains: ["Wikipedia"], docsPerDomain: 1 }),
    /--domains names "Wikipedia", which the corpus .* does not hold; its domains are ArXiv, EuroParl, Github\.$/,
  );
  assert.equal((await collect({ domains: ["ArXiv", "Github"] })).length, 5);
  const dir = await Deno.makeTempDir();
  try {
    const bare = `${dir}/bare.jsonl`;
    await Deno.writeTextFile(
      bare,
      '{"text": "a"}\n{"text": "b", "meta": {"pile_set_name": "Github"}}\n',
    );
    const docs = [];
    for await (const d of readCorpus(bare, { defaultDomain: "web" })) docs.push(d);
    assert.deepEqual(docs.map((d) => [d.id, d.domain]), [[0, "web"], [1, "Github"]]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("analyze, simulate and capture refuse an --out holding other things unless --force; import replaces only with --force", async () => {
  const { root, trace } = await smallTrace();
  try {
    const other = `${root}/mine`;
    await Deno.mkdir(other);
    await Deno.writeTextFile(`${other}/notes.txt`, "my notes");
    await Deno.writeTextFile(`${other}/.hidden`, "");
    const analyze = await runCli(["analyze", trace, "--out", other, "--bootstrap", "0"]);
    assert.equal(analyze.code, 2);
    assert.equal(
      analyze.stderr,
      `moetrace: --out ${other} of analyze holds 1 other entry (notes.txt) and not an analysis; choose a new or empty folder, or pass --force to write into it anyway.`,
    );
    const simulate = await runCli(["simulate", trace, "--out", other, "--capacity", "2"]);
    assert.equal(simulate.code, 2);
    assert.match(simulate.stderr, /holds 1 other entry \(notes\.txt\) and not a simulation;/);
    // A trace is not an analysis either.
    const onTrace = await runCli(["analyze", trace, "--out", trace, "--bootstrap", "0"]);
    assert.equal(onTrace.code, 2);
    assert.match(onTrace.stderr, /holds 1 other entry \(shards\) and not an analysis;/);
    const capture = await runCli([
      ...[
        "capture",
        "--model",
        "fixtures/models/tiny-moe",
        "--corpus",
        "tests/data/mini-pile.jsonl",
      ],
      ...["--out", other],
    ]);
    assert.equal(capture.code, 2);
    assert.match(capture.stderr, /of capture holds 1 other entry \(notes\.txt\) and not a trace;/);
    // Its own kind of output is rewritten: analyze twice into one folder; --force writes beside notes.
    const out = `${root}/analysis`;
    for (let i = 0; i < 2; i++) {
      const ok = await runCli(["analyze", trace, "--out", out, "--bootstrap", "0", "--json"]);
      assert.equal(ok.code, 0, ok.stderr);
      const json = JSON.parse(ok.stdout);
      assert.equal(json.tokens, 60);
      assert.equal(json.docs, 5);
      assert.equal(json.complete, true);
    }
    const forced = await runCli(["analyze", trace, "--out", other, "--bootstrap", "0", "--force"]);
    assert.equal(forced.code, 0, forced.stderr);
    assert.equal(await Deno.readTextFile(`${other}/notes.txt`), "my notes");

    const files = ["fixtures/import/sglang_rank0.pt", "fixtures/import/sglang_rank1.pt"];
    const first = await runCli(["import", ...files, "--out", `${root}/imported`, "--json"]);
    assert.equal(first.code, 0, first.stderr);
    assert.deepEqual(JSON.parse(first.stdout), {
      out: `${root}/imported`,
      format: "sglang-pt",
      files,
      docs: 7,
      tokens: 26,
    });
    const again = await runCli(["import", ...files, "--out", `${root}/imported`]);
    assert.equal(again.code, 2);
    assert.equal(
      again.stderr,
      `moetrace: --out ${root}/imported of import already exists; choose a new folder, or pass --force to replace it.`,
    );
    const replaced = await runCli(["import", ...files, "--out", `${root}/imported`, "--force"]);
    assert.equal(replaced.code, 0, replaced.stderr);
    // An empty folder (made beforehand) is fine without --force.
    await Deno.mkdir(`${root}/empty`);
    const empty = await runCli(["import", ...files, "--out", `${root}/empty`]);
    assert.equal(empty.code, 0, empty.stderr);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("analyze of an incomplete trace warns in one line", async () => {
  const { root, trace } = await smallTrace();
  try {
    const manifest = JSON.parse(await Deno.readTextFile(`${trace}/manifest.json`));
    manifest.capture.complete = false;
    await Deno.writeTextFile(`${trace}/manifest.json`, JSON.stringify(manifest));
    const result = await runCli(["analyze", trace, "--out", `${root}/a`, "--bootstrap", "0"]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(
      result.stderr,
      `analyze: ${trace} is incomplete (its capture was interrupted or is still running), so this analyses only its 5 documents so far; run the same capture again to finish it.`,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("progress prints plain lines off a terminal, and its last count is the total", () => {
  const lines: string[] = [];
  const progress = new Progress("simulate", 7, {
    unit: "cache runs",
    tty: false,
    logInterval: 0,
    write: (text) => lines.push(text),
  });
  for (let done = 1; done <= 7; done++) progress.set(done);
  progress.finish();
  // One plain line per update (interval 0) plus the final one; no carriage returns.
  assert.equal(lines.length, 8);
  assert.ok(lines.every((l) => l.endsWith("\n") && !l.includes("\r")));
  assert.match(lines[0]!, /^simulate: \[###\.{21}\] 1\/7 14%, /);
  assert.match(lines.at(-1)!, /^simulate: \[#{24}\] 7\/7 100%, .* cache runs\/s, \d+s\n$/);
  // On a terminal the line is redrawn in place and ended once.
  const tty: string[] = [];
  const drawn = new Progress("x", 2, { tty: true, write: (t) => tty.push(t) });
  drawn.advance(2);
  drawn.finish();
  assert.ok(tty.every((t) => t.startsWith("\r\x1b[K")));
  assert.ok(tty.at(-1)!.endsWith("\n"));
});

Deno.test("generate's closing lines say where the outputs went and what offloading cost", () => {
  const settings = { policy: "lru", capacity: 4, prefetch: "none", budget: "per-layer" } as const;
  // Two generated tokens at 3 and 5 ms, a prompt token (no ms); 2 + 1 + 3 misses, 1 prefetch.
  const totals = offloadTotals([
    { phase: 0, token: -1, pos: 0, ms: NaN, misses: 3, prefetched: 0, bytes: 300 },
    { phase: 1, token: 0, pos: 1, ms: 3, misses: 2, prefetched: 1, bytes: 300 },
    { phase: 1, token: 1, pos: 2, ms: 5, misses: 1, prefetched: 0, bytes: 100 },
  ], settings);
  assert.equal(totals.meanMsPerToken, 4);
  assert.equal(totals.uploads, 7);
  assert.equal(totals.uploadBytes, 700);
  const summary = {
    completions: ["x"],
    generated: 2,
    gpuBytes: 8 * 2 ** 20,
    expertGpuBytes: 2 * 2 ** 20,
    skipped: 0,
    prompts: 1,
    offload: totals,
  };
  assert.deepEqual(generateReport("out", summary), [
    "generate: 1 prompt, 2 tokens generated; trace in out, per-token measurements in out/measured.csv.",
    "generate: offload lru:4 (per-layer, prefetch none): mean 4.00 ms per generated token over 2 tokens; 7 expert uploads (6 misses, 1 prefetched, 0.0 MiB); routed experts hold 2.0 MiB of 8.0 MiB GPU memory.",
  ]);
  assert.deepEqual(generateReport("out", { ...summary, skipped: 1, generated: 0 }), [
    "generate: out is already complete (all 1 prompt); nothing to do (choose another --out, or remove it, to generate again).",
  ]);
});

/**
 * Runs main.ts on a named pipe it will block reading, opens the pipe's
 * writing end (which returns once the command opened it, so its signal
 * listener is in place), sends SIGINT and returns the exit status and stderr.
 */
async function interruptWhileReading(args: (fifo: string, root: string) => string[], name: string) {
  const root = await Deno.makeTempDir();
  const fifo = `${root}/${name}`;
  const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
  assert.equal(made.code, 0, "mkfifo");
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      ...["run", "--allow-read", "--allow-write", "--allow-env=XDG_RUNTIME_DIR"],
      new URL("../main.ts", import.meta.url).pathname,
      ...args(fifo, root),
    ],
    stdout: "piped",
    stderr: "piped",
    env: { XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1" },
  }).spawn();
  const writer = await Deno.open(fifo, { write: true });
  child.kill("SIGINT");
  const { code, stderr } = await child.output();
  writer.close();
  return { code, stderr: new TextDecoder().decode(stderr), root };
}

Deno.test("Ctrl-C says whether running again resumes, and exits 130", async () => {
  const imported = await interruptWhileReading(
    (fifo, root) => ["import", fifo, "--from", "interchange", "--out", `${root}/t`],
    "log.jsonl",
  );
  try {
    assert.equal(imported.code, 130, imported.stderr);
    assert.equal(imported.stderr, "moetrace: interrupted; nothing was written.\n");
    assert.equal(await Array.fromAsync(Deno.readDir(imported.root)).then((e) => e.length), 1);
  } finally {
    await Deno.remove(imported.root, { recursive: true });
  }
  const captured = await interruptWhileReading(
    (fifo, root) => [
      ...["capture", "--model", "fixtures/models/tiny-moe", "--corpus", fifo],
      ...["--out", `${root}/trace`],
    ],
    "corpus.jsonl",
  );
  try {
    assert.equal(captured.code, 130, captured.stderr);
    assert.equal(captured.stderr, "moetrace: interrupted; run the same command to resume.\n");
  } finally {
    await Deno.remove(captured.root, { recursive: true });
  }
});

Deno.test("help lists hardware presets and dtypes, byte budgets, every policy, JSONL prompts' domain", async () => {
  const simulate = (await runCli(["simulate", "--help"])).stdout;
  for (const preset of Object.keys(HARDWARE_PRESETS)) assert.ok(simulate.includes(preset), preset);
  for (const dtype of Object.keys(DTYPES)) assert.ok(simulate.includes(dtype), dtype);
  assert.match(simulate, /--capacity LIST .*byte budgets such as 24GiB/);
  for (const policy of POLICY_NAMES) {
    // Each policy is named and followed by what it does, in parentheses.
    assert.match(simulate, new RegExp(`\\b${policy} \\(`), policy);
  }
  assert.match(simulate, /lrfu \(LRFU, Lee et al\. 2001: each use adds 1 to a score that halves/);
  assert.match(simulate, /pinned \(offline: the capacity − k experts used most/);
  const generate = (await runCli(["generate", "--help"])).stdout;
  assert.match(generate, /--prompts FILE .*JSONL: \{"prompt": "\.\.\.", "domain": "\.\.\."\}/);
  assert.match(generate, /--offload POLICY:CAPACITY .*lrfu \(LRFU/);
  const capture = (await runCli(["capture", "--help"])).stdout;
  assert.match(capture, /--default-domain NAME +Domain of JSONL lines without meta\.pile_set_name/);
  for (
    const command of ["capture", "generate", "import", "merge", "inspect", "analyze", "simulate"]
  ) {
    assert.match((await runCli([command, "--help"])).stdout, /--json /, command);
  }
});

Deno.test("generate says where its outputs went, what offloading cost, and that a rerun has nothing to do", async () => {
  const root = await Deno.makeTempDir();
  try {
    const prompts = `${root}/prompts.txt`;
    await Deno.writeTextFile(prompts, 'Hello there\n{"prompt": "def f(x):", "domain": "code"}\n');
    const out = `${root}/trace`;
    const args = [
      ...["generate", "--model", "fixtures/models/tiny-moe", "--prompts", prompts, "--out", out],
      ...["--max-new-tokens", "3", "--offload", "lru:4"],
    ];
    const first = await runCli(args);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stdout.split("\n").length, 2, "one completion line per prompt");
    const lines = first.stderr.split("\n");
    assert.equal(
      lines[0],
      `generate: 2 prompts, 6 tokens generated; trace in ${out}, per-token measurements in ${out}/measured.csv.`,
    );
    // The summary line against measured.csv, summed here.
    const csv = (await Deno.readTextFile(`${out}/measured.csv`)).trim().split("\n");
    const header = csv[0]!.split(",");
    const rows = csv.slice(1).map((l) => l.split(","));
    const col = (name: string) => rows.map((r) => r[header.indexOf(name)]!);
    const ms = col("ms").filter((v) => v !== "").map(Number);
    const uploads = col("uploads").reduce((a, v) => a + Number(v), 0);
    const mean = ms.reduce((a, b) => a + b, 0) / ms.length;
    assert.equal(ms.length, 6);
    const offload = new RegExp(
      `^generate: offload lru:4 \\(per-layer, prefetch none\\): mean ([0-9.]+) ms per generated token over 6 tokens; ${uploads} expert uploads \\(${uploads} misses, 0 prefetched, [0-9.]+ MiB\\); routed experts hold [0-9.]+ MiB of [0-9.]+ MiB GPU memory\\.$`,
    );
    const match = offload.exec(lines[1]!);
    assert.ok(match, lines[1]);
    assert.ok(Math.abs(Number(match[1]) - mean) < 0.006, `${match[1]} vs ${mean}`);
    const before = await Deno.readTextFile(`${out}/measured.csv`);
    const again = await runCli([...args, "--json"]);
    assert.equal(again.code, 0, again.stderr);
    const json = JSON.parse(again.stdout);
    assert.equal(json.already_complete, true);
    assert.equal(json.measured, `${out}/measured.csv`);
    assert.equal(json.offload, null);
    assert.equal(await Deno.readTextFile(`${out}/measured.csv`), before, "measured.csv kept");
    const text = await runCli(args);
    assert.match(text.stderr, /^generate: .* is already complete \(all 2 prompts\); nothing to do/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("capture and merge --json print one object; capture refuses a misspelt domain", async () => {
  const root = await Deno.makeTempDir();
  try {
    const base = [
      ...[
        "capture",
        "--model",
        "fixtures/models/tiny-moe",
        "--corpus",
        "tests/data/mini-pile.jsonl",
      ],
      ...["--max-tokens", "8"],
    ];
    const typo = await runCli([...base, "--out", `${root}/x`, "--domains", "Arxiv,Github"]);
    assert.equal(typo.code, 1);
    assert.match(typo.stderr, /--domains names "Arxiv" \(did you mean ArXiv\?\), which the corpus/);
    const parts = [];
    for (const i of [0, 1]) {
      const part = `${root}/part${i}`;
      const result = await runCli([...base, "--out", part, "--shard", `${i}/2`, "--json"]);
      assert.equal(result.code, 0, result.stderr);
      const json = JSON.parse(result.stdout);
      // mini-pile's 6 documents in two contiguous blocks of 3.
      assert.deepEqual({ ...json, new_tokens: 0, gpu_bytes_peak: 0 }, {
        out: part,
        new_docs: 3,
        new_tokens: 0,
        skipped_docs: 0,
        gpu_bytes_peak: 0,
        bytes_streamed: 0,
      });
      assert.ok(json.new_tokens > 0 && json.new_tokens <= 3 * 8);
      assert.ok(json.gpu_bytes_peak > 0, "the GPU memory peak is reported");
      parts.push({ part, tokens: json.new_tokens as number });
    }
    const merged = await runCli([
      "merge",
      ...parts.map((p) => p.part),
      "--out",
      `${root}/all`,
      "--json",
    ]);
    assert.equal(merged.code, 0, merged.stderr);
    assert.deepEqual(JSON.parse(merged.stdout), {
      out: `${root}/all`,
      parts: 2,
      docs: 6,
      tokens: parts[0]!.tokens + parts[1]!.tokens,
      copied: false,
    });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
