/**
 * Two captures into one --out: the second is refused in one sentence while
 * the first holds the folder's lock, a lock left by a killed run is taken
 * over, and a resumed capture must cut shards as the first did
 * (--shard-rows, --batch-tokens). --out naming a file is one sentence.
 */
import assert from "node:assert/strict";
import { LOCK_FILE, lockFolder } from "../common/fs.ts";
import { holdFolderLock, runCli } from "./cli_helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const MODEL = `${ROOT}fixtures/models/tiny-moe`;

async function corpus(dir: string): Promise<string> {
  const lines = ["alpha beta", "gamma delta epsilon", "zeta eta theta iota"].map((text, i) =>
    JSON.stringify({ text, meta: { pile_set_name: i % 2 ? "B" : "A" } })
  );
  await Deno.writeTextFile(`${dir}/corpus.jsonl`, lines.join("\n") + "\n");
  return `${dir}/corpus.jsonl`;
}

Deno.test("a second capture into the same --out is refused while the first runs; a dead one's lock is taken over", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-lock-" });
  const out = `${dir}/trace`;
  await Deno.mkdir(out);
  const args = ["capture", "--model", MODEL, "--corpus", await corpus(dir), "--out", out];
  const holder = await holdFolderLock(out, "capture");
  try {
    const second = await runCli(args);
    assert.equal(second.code, 1);
    assert.equal(
      second.stderr.trim().replace(/^moetrace: /, ""),
      `Another moetrace capture (pid ${holder.pid}) is writing to ${out}; wait for it to finish or choose another --out.`,
    );
    // Nothing was written besides the lock.
    assert.deepEqual([...Deno.readDirSync(out)].map((e) => e.name), [LOCK_FILE]);
  } finally {
    holder.kill("SIGKILL");
    await holder.status;
    await holder.stdout.cancel().catch(() => {});
  }
  // The killed holder's lock went with it: the same command now runs and completes.
  const after = await runCli(args);
  assert.equal(after.code, 0, after.stderr);
  const manifest = JSON.parse(await Deno.readTextFile(`${out}/manifest.json`));
  assert.equal(manifest.capture.complete, true);
  assert.equal(manifest.shards.reduce((n: number, s: { docs: number }) => n + s.docs, 0), 3);
  // And the lock is free again once it finished.
  (await lockFolder(out, "capture")).release();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("resuming with another --shard-rows or --batch-tokens is refused, naming the setting", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-resume-" });
  const out = `${dir}/trace`;
  const args = ["capture", "--model", MODEL, "--corpus", await corpus(dir), "--out", out];
  assert.equal((await runCli([...args, "--shard-rows", "8"])).code, 0);
  const rows = await runCli([...args, "--shard-rows", "16"]);
  assert.equal(rows.code, 1);
  assert.match(
    rows.stderr,
    /Cannot resume the trace in .*: its capture\.settings\.shard_rows is 8, this run has 16\./,
  );
  const batch = await runCli([...args, "--shard-rows", "8", "--batch-tokens", "64"]);
  assert.equal(batch.code, 1);
  assert.match(batch.stderr, /its capture\.settings\.batch_tokens is 2048, this run has 64\./);
  const same = await runCli([...args, "--shard-rows", "8"]);
  assert.equal(same.code, 0, same.stderr);
  assert.match(same.stderr, /0 documents \(0 tokens\) written to .*, 3 already there[.;]/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("capture --out naming a file is one sentence and leaves the file alone", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-outfile-" });
  await Deno.writeTextFile(`${dir}/notes.txt`, "mine");
  const result = await runCli([
    "capture",
    "--model",
    MODEL,
    "--corpus",
    await corpus(dir),
    "--out",
    `${dir}/notes.txt`,
  ]);
  // The CLI refuses it as a usage mistake; capture() itself, called from code, as data.
  assert.equal(result.code, 2);
  assert.equal(result.stderr.trim().split("\n").length, 1);
  assert.match(result.stderr, /--out .*notes\.txt/);
  const { capture } = await import("../engine/capture.ts");
  await assert.rejects(
    capture({
      model: MODEL,
      corpus: `${dir}/corpus.jsonl`,
      out: `${dir}/notes.txt`,
      maxTokens: 8,
      batchTokens: 8,
      probs: false,
      lookahead: 0,
      seed: 0,
    }),
    (e: Error) =>
      e.message === `--out ${dir}/notes.txt is a file; it must name a folder (new or existing).`,
  );
  assert.equal(await Deno.readTextFile(`${dir}/notes.txt`), "mine");
  // A capture that fails before writing leaves no folder behind.
  const missing = await runCli([
    "capture",
    "--model",
    `${dir}/no-model`,
    "--corpus",
    `${dir}/corpus.jsonl`,
    "--out",
    `${dir}/new`,
  ]);
  assert.equal(missing.code, 1);
  await assert.rejects(Deno.stat(`${dir}/new`), Deno.errors.NotFound);
  await Deno.remove(dir, { recursive: true });
});
