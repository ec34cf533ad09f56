/**
 * analyze writes into `<out>.partial` and renames into place: a run that
 * fails (or is killed) over an existing analysis leaves the previous files
 * whole and unmixed, a later run recovers whatever a kill left, and files the
 * user kept in the folder survive.
 */
import assert from "node:assert/strict";
import { writeSyntheticTrace } from "../trace/synthetic.ts";
import { TraceReader } from "../trace/mod.ts";
import { runAnalysis } from "./run.ts";
import { COLUMNS, writeAnalysis } from "./write.ts";

const OPTIONS = { bootstrap: 0, seed: 1, figures: false };

async function analysis(dir: string, seed: number) {
  await writeSyntheticTrace(`${dir}/trace-${seed}`, {
    numLayers: 2,
    domains: [{ name: "A", docs: 3 }, { name: "B", docs: 3 }],
    tokensPerDoc: 30,
    seed,
  });
  return await runAnalysis(await TraceReader.open(`${dir}/trace-${seed}`), {
    bootstrap: 0,
    seed: 1,
  });
}

async function contents(dir: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isFile) files.set(entry.name, await Deno.readTextFile(`${dir}/${entry.name}`));
  }
  return files;
}

Deno.test("a failing analyze over an existing folder leaves the previous analysis whole", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-write-" });
  try {
    const first = await analysis(dir, 1);
    const second = await analysis(dir, 2);
    const out = `${dir}/out`;
    await writeAnalysis(first, out, OPTIONS);
    const before = await contents(out);
    assert.ok(before.has("repetition.csv") && before.has("analysis.json"));
    // The second run dies after its CSVs are written (reading the manifest for README.md).
    const dying = Object.create(second, {
      manifest: {
        get() {
          throw new Error("killed");
        },
      },
    });
    await assert.rejects(writeAnalysis(dying, out, OPTIONS), /killed/);
    assert.deepEqual(await contents(out), before, "no file of the failed run reached the folder");
    // The next run discards the failed run's staging folder and replaces the analysis.
    await writeAnalysis(second, out, OPTIONS);
    const after = await contents(out);
    assert.notEqual(after.get("repetition.csv"), before.get("repetition.csv"));
    for (const name of Object.keys(COLUMNS)) assert.ok(after.has(`${name}.csv`), name);
    assert.ok(!(await exists(`${out}.partial`)), "the staging folder is removed");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("files that are not analysis outputs are kept; the previous run's own files are not", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-write-" });
  try {
    const result = await analysis(dir, 3);
    const out = `${dir}/out`;
    await writeAnalysis(result, out, OPTIONS);
    await Deno.writeTextFile(`${out}/notes.txt`, "mine");
    // A file an older analysis wrote and listed in its analysis.json, that this one does not write.
    const info = JSON.parse(await Deno.readTextFile(`${out}/analysis.json`));
    info.files.push("retired_table.csv");
    await Deno.writeTextFile(`${out}/analysis.json`, JSON.stringify(info));
    await Deno.writeTextFile(`${out}/retired_table.csv`, "a\n1\n");
    await Deno.mkdir(`${out}/counts`);
    await Deno.writeTextFile(`${out}/counts/expert_counts.csv`, "stale\n");
    await writeAnalysis(result, out, OPTIONS);
    assert.equal(await Deno.readTextFile(`${out}/notes.txt`), "mine");
    assert.ok(!(await exists(`${out}/retired_table.csv`)), "the old run's own file is gone");
    assert.ok(!(await exists(`${out}/counts`)), "old count tables do not mix with a new analysis");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a run killed between the two renames is completed or undone by the next", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-write-" });
  try {
    const result = await analysis(dir, 4);
    const out = `${dir}/out`;
    await writeAnalysis(result, out, OPTIONS);
    await Deno.writeTextFile(`${out}/notes.txt`, "mine");
    // Killed after moving the previous folder aside, before the new one took its name.
    await Deno.mkdir(`${out}.partial/new`, { recursive: true });
    await Deno.writeTextFile(`${out}.partial/new/repetition.csv`, "half\n");
    await Deno.rename(out, `${out}.partial/old`);
    await writeAnalysis(result, out, OPTIONS);
    assert.equal(await Deno.readTextFile(`${out}/notes.txt`), "mine", "the user's file is back");
    assert.notEqual(await Deno.readTextFile(`${out}/repetition.csv`), "half\n");
    assert.ok(!(await exists(`${out}.partial`)));
    // Killed after the swap, before the user's files moved across.
    await Deno.mkdir(`${out}.partial/old`, { recursive: true });
    await Deno.rename(`${out}/notes.txt`, `${out}.partial/old/notes.txt`);
    await writeAnalysis(result, out, OPTIONS);
    assert.equal(await Deno.readTextFile(`${out}/notes.txt`), "mine");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}
