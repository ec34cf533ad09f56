/**
 * Issue 17's acceptance for `--gpu-memory`: `capture --gpu-memory` at one
 * third of tiny-moe's weight bytes writes the same trace as an unconstrained
 * capture (every column of every row), the manifest records the peak within
 * the cap and the bytes streamed, and capture prints both; bad sizes and a
 * cap that cannot hold the resident part plus one expert are one sentence.
 */
import assert from "node:assert/strict";
import { runCli } from "../tests/cli_helpers.ts";
import { readManifest, type TraceDoc, TraceReader } from "../trace/mod.ts";

Deno.env.set("XDG_RUNTIME_DIR", Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp");

const ROOT = new URL("..", import.meta.url).pathname;
const MODEL = `${ROOT}fixtures/models/tiny-moe`;
const CORPUS = `${ROOT}fixtures/corpus/fixture.jsonl`;

async function docs(dir: string): Promise<TraceDoc[]> {
  const out: TraceDoc[] = [];
  for await (const d of (await TraceReader.open(dir)).documents()) out.push(structuredClone(d));
  return out;
}

Deno.test("capture --gpu-memory at a third of tiny-moe's weight bytes writes the unconstrained trace", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-gpu-memory-" });
  try {
    const cap = Math.floor((await Deno.stat(`${MODEL}/model.safetensors`)).size / 3);
    const common = [
      "capture",
      "--model",
      MODEL,
      "--corpus",
      CORPUS,
      "--docs-per-domain",
      "2",
      "--max-tokens",
      "48",
      "--batch-tokens",
      "64",
      "--lookahead",
      "1",
    ];
    const whole = await runCli([...common, "--out", `${dir}/whole`]);
    assert.equal(whole.code, 0, whole.stderr);
    const capped = await runCli([...common, "--out", `${dir}/capped`, "--gpu-memory", String(cap)]);
    assert.equal(capped.code, 0, capped.stderr);
    const a = await docs(`${dir}/whole`), b = await docs(`${dir}/capped`);
    assert.ok(a.length >= 4, `${a.length} documents captured`);
    assert.deepEqual(b, a);
    const mw = await readManifest(`${dir}/whole`), mc = await readManifest(`${dir}/capped`);
    const peak = mc.capture.gpu_bytes_peak!, streamed = mc.capture.bytes_streamed!;
    assert.ok(peak > 0 && peak <= cap, `peak ${peak} within the cap ${cap}`);
    assert.ok(mw.capture.gpu_bytes_peak! > cap * 2, "the unconstrained capture holds every weight");
    assert.equal(mw.capture.bytes_streamed, 0);
    assert.ok(streamed > 0, "experts were streamed");
    assert.equal(mc.capture.gpu_memory, cap);
    const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
    assert.match(
      capped.stderr,
      new RegExp(`GPU memory peak ${mib(peak)}, ${mib(streamed)} of experts streamed`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("generate --gpu-memory at a third of tiny-moe's weight bytes generates the unconstrained tokens and log", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-gpu-memory-" });
  try {
    const cap = Math.floor((await Deno.stat(`${MODEL}/model.safetensors`)).size / 3);
    await Deno.writeTextFile(
      `${dir}/prompts.txt`,
      "The history of the city\nfunction add(a, b) {\n",
    );
    const common = [
      "generate",
      "--model",
      MODEL,
      "--prompts",
      `${dir}/prompts.txt`,
      "--max-new-tokens",
      "12",
      "--json",
    ];
    const whole = await runCli([...common, "--out", `${dir}/whole`]);
    assert.equal(whole.code, 0, whole.stderr);
    const capped = await runCli([...common, "--out", `${dir}/capped`, "--gpu-memory", String(cap)]);
    assert.equal(capped.code, 0, capped.stderr);
    const a = await docs(`${dir}/whole`), b = await docs(`${dir}/capped`);
    assert.equal(a.length, 2);
    assert.deepEqual(b, a);
    const summary = JSON.parse(capped.stdout.trim().split("\n").at(-1)!);
    assert.ok(summary.gpu_bytes_peak <= cap, `peak ${summary.gpu_bytes_peak} within ${cap}`);
    assert.ok(summary.bytes_streamed > 0);
    const offload = await runCli([
      ...common,
      "--out",
      `${dir}/o`,
      "--gpu-memory",
      "1GiB",
      "--offload",
      "lru:4",
    ]);
    assert.equal(offload.code, 2);
    assert.match(offload.stderr, /--gpu-memory and --offload cannot be combined/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("capture --gpu-memory refuses a bad size (usage) and a cap below one expert's working set (data)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-gpu-memory-" });
  try {
    const common = ["capture", "--model", MODEL, "--corpus", CORPUS, "--out", `${dir}/t`];
    const bad = await runCli([...common, "--gpu-memory", "lots"]);
    assert.equal(bad.code, 2);
    assert.match(
      bad.stderr,
      /--gpu-memory takes a positive size such as 24GiB, 512MB or a byte count, got "lots"\./,
    );
    const small = await runCli([...common, "--gpu-memory", "2MiB", "--batch-tokens", "64"]);
    assert.equal(small.code, 1);
    assert.match(
      small.stderr,
      /--gpu-memory 2\.0 MiB cannot hold the working set of .*tiny-moe: the resident weights, activations and logs take [\d.]+ MiB and one routed expert 0\.8 MiB, so at least [\d.]+ MiB is needed\./,
    );
    assert.equal(small.stderr.trim().split("\n").length, 1, small.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
