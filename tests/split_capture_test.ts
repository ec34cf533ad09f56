/**
 * A capture split with --shard i/n and joined by `merge` is the capture made
 * in one piece: same documents in the same order, same routing, same facts.
 * Merge refuses parts that do not fit, with one sentence and no output, and
 * the launcher lets a merged trace's readers read its parts' shards.
 */
import assert from "node:assert/strict";
import { resolve } from "node:path";
import { runCli } from "./cli_helpers.ts";
import { permissionsFor } from "../moetrace.ts";
import { type Manifest, readManifest, type TraceDoc, TraceReader } from "../trace/mod.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const CAPTURE = [
  "capture",
  "--model",
  `${ROOT}fixtures/models/tiny-moe`,
  "--corpus",
  `${ROOT}fixtures/corpus/fixture.jsonl`,
  "--docs-per-domain",
  "2",
  "--max-tokens",
  "48",
  "--shard-rows",
  "100",
];

async function cli(args: string[]): Promise<void> {
  const result = await runCli(args);
  assert.equal(result.code, 0, `${args.join(" ")}: ${result.stderr}`);
}

async function documents(dir: string): Promise<TraceDoc[]> {
  const docs: TraceDoc[] = [];
  for await (const doc of (await TraceReader.open(dir)).documents()) {
    docs.push(structuredClone(doc));
  }
  return docs;
}

/** The manifest less what differs between any two runs (dates) and the merge's own record. */
function facts(manifest: Manifest): unknown {
  const { created: _c, updated: _u, merged_from: _m, merged_trace_ids: _i, ...capture } =
    manifest.capture;
  return { format: manifest.format, model: manifest.model, capture };
}

async function refused(args: string[], out: string): Promise<string> {
  const result = await runCli(args);
  assert.equal(result.code, 1, `${args.join(" ")} should fail: ${result.stderr}`);
  for (const path of [out, `${out}.partial`]) {
    await assert.rejects(() => Deno.stat(path), Deno.errors.NotFound, `${path} left behind`);
  }
  return result.stderr.replace(/^moetrace: /, "");
}

Deno.test("a capture in 3 parts, merged, is the capture made in one piece", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-split-" });
  await cli([...CAPTURE, "--out", `${dir}/single`]);
  for (const i of [0, 1, 2]) {
    await cli([...CAPTURE, "--shard", `${i}/3`, "--out", `${dir}/part${i}`]);
  }
  const single = await documents(`${dir}/single`);
  const singleManifest = await readManifest(`${dir}/single`);

  await t.step("the parts are 3 contiguous blocks of whole documents", async () => {
    const parts = await Promise.all([0, 1, 2].map((i) => documents(`${dir}/part${i}`)));
    assert.deepEqual(parts.map((p) => p.length), [5, 5, 6]);
    assert.deepEqual(parts.flat().map((d) => d.doc), single.map((d) => d.doc));
  });

  await t.step(
    "merged in place: same documents, routing and facts; shards not copied",
    async () => {
      await cli([
        "merge",
        `${dir}/part2`,
        `${dir}/part0`,
        `${dir}/part1`,
        "--out",
        `${dir}/merged`,
      ]);
      assert.deepEqual(await documents(`${dir}/merged`), single);
      const merged = await readManifest(`${dir}/merged`);
      assert.deepEqual(facts(merged), facts(singleManifest));
      assert.deepEqual(merged.capture.merged_from, ["../part0", "../part1", "../part2"]);
      assert.ok(
        merged.shards.every((s) => /^\.\.\/part[012]\/shards\/part-\d{5}\.parquet$/.test(s.file)),
      );
      assert.deepEqual([...Deno.readDirSync(`${dir}/merged/shards`)], []);
    },
  );

  await t.step("merged with --copy: the same trace, its shards inside it", async () => {
    await cli([
      "merge",
      `${dir}/part0`,
      `${dir}/part1`,
      `${dir}/part2`,
      "--out",
      `${dir}/copied`,
      "--copy",
    ]);
    assert.deepEqual(await documents(`${dir}/copied`), single);
    const copied = await readManifest(`${dir}/copied`);
    assert.ok(copied.shards.every((s) => /^shards\/part-\d{5}\.parquet$/.test(s.file)));
  });

  await t.step("the launcher lets a reader of the merged trace read the parts' shards", () => {
    const merged = resolve(dir, "merged");
    const { read } = permissionsFor("analyze", [merged], { out: `${dir}/analysis` });
    for (const i of [0, 1, 2]) assert.ok(read.includes(resolve(dir, `part${i}/shards`)), `${read}`);
  });

  await t.step("merge refuses parts that do not fit, and writes nothing", async () => {
    const out = `${dir}/bad`;
    const parts = (...i: number[]) => i.map((n) => `${dir}/part${n}`);
    assert.equal(
      await refused(["merge", ...parts(0, 1), "--out", out], out),
      "Part 2/3 is missing; merge needs all 3 parts.",
    );
    assert.equal(
      await refused(["merge", ...parts(0, 1, 2, 1), "--out", out], out),
      `${dir}/part1 and ${dir}/part1 are both part 1/3.`,
    );
    assert.equal(
      await refused(["merge", ...parts(0, 1), `${dir}/single`, "--out", out], out),
      `${dir}/single was not captured with --shard i/n; merge joins the parts of one split capture.`,
    );
    // A part of another capture (other options) is refused however it is numbered.
    await cli([...CAPTURE, "--max-tokens", "40", "--shard", "2/3", "--out", `${dir}/other`]);
    assert.equal(
      await refused(["merge", ...parts(0, 1), `${dir}/other`, "--out", out], out),
      `${dir}/other and ${dir}/part0 are not parts of one capture: capture.settings.max_tokens is 40 in the one and 48 in the other.`,
    );
    // A part that lost a shard no longer covers its block.
    const m = JSON.parse(await Deno.readTextFile(`${dir}/part1/manifest.json`));
    m.shards.pop();
    await Deno.writeTextFile(`${dir}/part1/manifest.json`, JSON.stringify(m));
    assert.match(
      await refused(["merge", ...parts(0, 1, 2), "--out", out], out),
      new RegExp(
        `^${dir}/part1 holds [0-4] documents but part 1/3 of 16 selected documents has 5\\.$`,
      ),
    );
    // An interrupted part is refused until it is finished.
    m.capture.complete = false;
    await Deno.writeTextFile(`${dir}/part1/manifest.json`, JSON.stringify(m));
    assert.match(
      await refused(["merge", ...parts(0, 1, 2), "--out", out], out),
      /part1 is not complete \(its capture was interrupted or is still running\); run the same capture command again to finish it before merging\.$/,
    );
  });

  await t.step("--shard must be i/n with i below n", async () => {
    const result = await runCli([...CAPTURE, "--shard", "3/3", "--out", `${dir}/never`]);
    assert.equal(result.code, 2);
    assert.equal(
      result.stderr,
      'moetrace: --shard must be i/n with 0 ≤ i < n (part i of n, counted from 0), got "3/3".',
    );
  });
  await Deno.remove(dir, { recursive: true });
});
