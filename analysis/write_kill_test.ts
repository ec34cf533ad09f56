/**
 * `analyze` killed (SIGKILL) while it writes over an earlier analysis leaves
 * that analysis whole, never a mix of old and new tables, and the same
 * command run again replaces it. Each kill is aimed at the write: it lands
 * a few milliseconds after the run's first output file appears (in the
 * staging folder, or, before staging, in the folder itself).
 */
import assert from "node:assert/strict";
import { writeSyntheticTrace } from "../trace/synthetic.ts";
import { Rng } from "../common/random.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const KILLS = 3;

function analyze(trace: string, out: string, bootstrap: number): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-write",
      MAIN,
      "analyze",
      trace,
      "--out",
      out,
      "--bootstrap",
      `${bootstrap}`,
    ],
    stdout: "null",
    stderr: "piped",
    env: { XDG_RUNTIME_DIR: "/tmp" },
  }).spawn();
}

async function complete(trace: string, out: string, bootstrap: number): Promise<void> {
  const { code, stderr } = await analyze(trace, out, bootstrap).output();
  assert.equal(code, 0, new TextDecoder().decode(stderr));
}

/** The CSVs of a folder, by name. */
async function tables(dir: string): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isFile && entry.name.endsWith(".csv")) {
      found.set(entry.name, await Deno.readTextFile(`${dir}/${entry.name}`));
    }
  }
  return found;
}

async function copyFolder(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const entry of Deno.readDir(from)) {
    if (entry.isFile) await Deno.copyFile(`${from}/${entry.name}`, `${to}/${entry.name}`);
  }
}

/** Time of the newest file in `dir` (0 when it is missing or empty). */
async function newest(dir: string): Promise<number> {
  let time = 0;
  try {
    for await (const entry of Deno.readDir(dir)) {
      const mtime = (await Deno.stat(`${dir}/${entry.name}`).catch(() => null))?.mtime;
      if (mtime) time = Math.max(time, mtime.getTime());
    }
  } catch {
    // missing folder
  }
  return time;
}

Deno.test("analyze killed while writing over an earlier analysis leaves it whole", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-write-kill-" });
  try {
    const trace = `${dir}/trace`;
    await writeSyntheticTrace(trace, {
      numLayers: 4,
      tokensPerDoc: 150,
      probs: true,
      domains: [{ name: "A", docs: 12 }, { name: "B", docs: 12 }],
    });
    // Two analyses of one trace that differ in most tables: without and with intervals.
    await complete(trace, `${dir}/old`, 0);
    await complete(trace, `${dir}/new`, 40);
    const [before, after] = [await tables(`${dir}/old`), await tables(`${dir}/new`)];
    const differing = [...before.keys()].filter((n) => before.get(n) !== after.get(n));
    assert.ok(differing.length >= 5, `the two analyses differ in ${differing.join(", ")}`);
    const rng = new Rng(11);
    let aimed = 0;
    for (let kill = 0; kill < KILLS; kill++) {
      const out = `${dir}/out-${kill}`;
      await copyFolder(`${dir}/old`, out);
      const copied = await newest(out);
      const child = analyze(trace, out, 40);
      let exited = false;
      const status = child.status.then((s) => (exited = true, s));
      // Wait for the first file this run writes, then kill within a few milliseconds.
      while (
        !exited && (await newest(`${out}.partial/new`)) === 0 && (await newest(out)) <= copied
      ) {
        await new Promise((r) => setTimeout(r, 2));
      }
      if (!exited) {
        aimed++;
        await new Promise((r) => setTimeout(r, rng.int(30)));
        try {
          child.kill("SIGKILL");
        } catch {
          // it finished first
        }
      }
      await status;
      await child.stderr.cancel();
      let found: Map<string, string> | null = null;
      try {
        found = await tables(out);
      } catch {
        // killed between the two renames: the folder is in <out>.partial/old until the next run
      }
      if (found) {
        const whole = [...found].every(([n, t]) => t === before.get(n)) ||
          [...found].every(([n, t]) => t === after.get(n));
        assert.ok(whole, `after kill ${kill} the tables mix two runs`);
        assert.equal(found.size, before.size, `after kill ${kill} every table is there`);
      }
      await complete(trace, out, 40);
      assert.deepEqual(
        await tables(out),
        after,
        `the run after kill ${kill} replaces the analysis`,
      );
    }
    assert.ok(aimed > 0, "at least one kill landed while the run was writing");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
