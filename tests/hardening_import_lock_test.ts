/**
 * Two imports into one --out: the second is refused in one sentence, with
 * the first one's pid, while the first holds the lock of the staging folder
 * `<out>.partial`, and leaves the first one's staging alone; a lock left by a
 * killed import is taken over. Both runs are real processes, the second
 * through the launcher (the lock lives where it grants writes).
 */
import assert from "node:assert/strict";
import { LOCK_FILE, lockFolder } from "../common/fs.ts";
import { holdFolderLock } from "./cli_helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** Two documents, top-2 of 4 experts on 1 layer, in the interchange format. */
const LOG = [
  { moetrace_import: 1, num_layers: 1, num_experts: 4, top_k: 2 },
  { domain: "A", tokens: [1, 2], experts: [[[0, 1]], [[2, 3]]] },
  { domain: "B", tokens: [5, 6, 7], experts: [[[1, 2]], [[0, 3]], [[3, 1]]] },
].map((line) => JSON.stringify(line)).join("\n") + "\n";

async function importThroughLauncher(log: string, out: string) {
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-run",
      "--allow-read",
      "--allow-env",
      `${ROOT}/moetrace.ts`,
      "import",
      log,
      "--out",
      out,
    ],
    stdout: "piped",
    stderr: "piped",
    env: { XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1" },
  }).output();
  return { code, stderr: new TextDecoder().decode(stderr) };
}

Deno.test("a second import into the same --out is refused while the first runs; a killed one's lock is taken over", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "moetrace-import-lock-" }));
  const out = `${dir}/trace`;
  const staging = `${out}.partial`;
  await Deno.writeTextFile(`${dir}/log.jsonl`, LOG);
  const holder = await holdFolderLock(staging, "import", "in-progress");
  try {
    const second = await importThroughLauncher(`${dir}/log.jsonl`, out);
    assert.equal(second.code, 1);
    // The command is spelt as an expression: layout_test reads "import (" as a computed import.
    assert.equal(
      second.stderr.trim(),
      `moetrace: Another moetrace ${"import"} (pid ${holder.pid}) is writing to ${staging}; wait for it to finish or choose another --out.`,
    );
    // The first one's staging folder is as it left it, and nothing was written to --out.
    assert.deepEqual(
      [...Deno.readDirSync(staging)].map((e) => e.name).sort(),
      [LOCK_FILE, "in-progress"],
    );
    assert.equal(await Deno.stat(out).catch(() => null), null);
  } finally {
    holder.kill("SIGKILL");
    await holder.status;
    await holder.stdout.cancel().catch(() => {});
  }
  // The killed holder's lock went with it (its pid is still in the file): the import now runs.
  assert.equal((await Deno.readTextFile(`${staging}/${LOCK_FILE}`)).trim(), String(holder.pid));
  const after = await importThroughLauncher(`${dir}/log.jsonl`, out);
  assert.equal(after.code, 0, after.stderr);
  const manifest = JSON.parse(await Deno.readTextFile(`${out}/manifest.json`));
  assert.equal(manifest.shards.reduce((n: number, s: { docs: number }) => n + s.docs, 0), 2);
  // One MoE layer: a row per token.
  assert.equal(manifest.shards.reduce((n: number, s: { rows: number }) => n + s.rows, 0), 5);
  // The stale staging was cleared; the lock file is no part of the trace; no staging is left.
  const files = [...Deno.readDirSync(out)].map((e) => e.name);
  assert.ok(!files.includes("in-progress") && !files.includes(LOCK_FILE), files.join(", "));
  assert.equal(await Deno.stat(staging).catch(() => null), null);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("an import refused before staging leaves neither staging folder nor lock behind", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "moetrace-import-lock-" }));
  const out = `${dir}/trace`;
  await Deno.writeTextFile(`${dir}/log.jsonl`, LOG);
  await Deno.mkdir(out);
  await Deno.writeTextFile(`${out}/keep.txt`, "user data");
  const refused = await importThroughLauncher(`${dir}/log.jsonl`, out);
  assert.equal(refused.code, 2);
  assert.match(refused.stderr, /already exists; choose a new folder, or pass --force/);
  assert.equal(await Deno.stat(`${out}.partial`).catch(() => null), null);
  assert.equal(await Deno.readTextFile(`${out}/keep.txt`), "user data");
  // And the lock is free: nothing holds it after the refused run.
  await Deno.mkdir(`${out}.partial`);
  (await lockFolder(`${out}.partial`, "import")).release();
  await Deno.remove(dir, { recursive: true });
});
