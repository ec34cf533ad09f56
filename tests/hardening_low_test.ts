/**
 * The low findings: strangers' text kept from running as a spreadsheet
 * formula or a terminal escape sequence, domain names that collide with the
 * aggregate rows or hold control characters, and the launcher's grants for
 * `--hardware ./hw`, a checkout reached through a path with a space and a
 * symlink, and a manifest naming folders outside its merged parts.
 */
import assert from "node:assert/strict";
import { resolve } from "node:path";
import { toCsv } from "../common/csv.ts";
import { DataError } from "../common/errors.ts";
import { hasControlCharacters, printable, spreadsheetSafe } from "../common/text.ts";
import { outsideShardFolders, permissionsFor } from "../moetrace.ts";
import { syntheticCapture, syntheticDocs, syntheticModel } from "../trace/synthetic.ts";
import { TraceReader, TraceWriter } from "../trace/mod.ts";
import { runCli } from "./cli_helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

Deno.test("CSV cells that a spreadsheet would run as formulas get a leading apostrophe", () => {
  const cases: [string, string][] = [
    ['=HYPERLINK("http://x","y")', `'=HYPERLINK("http://x","y")`],
    ["@SUM(A1)", "'@SUM(A1)"],
    ["+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"],
    ["-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"],
    ["-1.5", "-1.5"], // a number's text stays as it is
    ["+7", "+7"],
    ["-x", "'-x"],
    ["\tTAB", "'\tTAB"],
    ["ArXiv", "ArXiv"],
    ["- ", "'- "],
    ["", ""],
  ];
  for (const [cell, expected] of cases) assert.equal(spreadsheetSafe(cell), expected, cell);
  const csv = toCsv([{ domain: "=1+1", n: -3 }, { domain: "Pile-CC", n: 2 }], ["domain", "n"]);
  assert.equal(csv, "domain,n\n'=1+1,-3\nPile-CC,2\n");
});

Deno.test("terminal output shows control characters as escapes, and inspect prints no escape sequence", async () => {
  assert.equal(printable("a\u001b[2Jb\tc\nd\u009b\u0000"), "a\\u{1b}[2Jb\tc\nd\\u{9b}\\u{0}");
  const dir = await Deno.makeTempDir({ prefix: "moetrace-inspect-" });
  const options = { numExperts: 4, topK: 2, numLayers: 1, domains: [{ name: "A", docs: 2 }] };
  const writer = await TraceWriter.open(`${dir}/t`, {
    model: { ...syntheticModel(options), name: "evil\u001b]0;owned\u0007\u001b[2J" },
    capture: syntheticCapture(options),
  });
  for (const doc of syntheticDocs(options)) await writer.add(doc);
  await writer.close();
  const result = await runCli(["inspect", `${dir}/t`]);
  assert.equal(result.code, 0, result.stderr);
  assert.ok(!hasControlCharacters(result.stdout), result.stdout);
  assert.match(result.stdout, /model {6}evil\\u\{1b\}\]0;owned\\u\{7\}\\u\{1b\}\[2J \(synthetic/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a domain named all, empty or with control characters is refused by writer and reader", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-domain-" });
  const options = { numExperts: 4, topK: 2, numLayers: 1, domains: [{ name: "A", docs: 1 }] };
  const [doc] = [...syntheticDocs(options)];
  for (
    const [name, problem] of [
      ["all", 'is "all", which names the rows of every domain together'],
      ["", "is empty"],
      ["x\u001b[31m", "holds control characters"],
    ] as [string, string][]
  ) {
    const writer = await TraceWriter.open(`${dir}/${name.length}${problem.length}`, {
      model: syntheticModel(options),
      capture: syntheticCapture(options),
    });
    await assert.rejects(
      writer.add({ ...doc!, domain: name }),
      (e: Error) =>
        e instanceof DataError &&
        e.message === `Document 0's domain ${JSON.stringify(name)} ${problem}; rename the domain.`,
    );
  }
  // A trace written before the check (its shard made with the name) is refused when read.
  const { encodeShard, rowShape, shardFingerprint } = await import("../trace/mod.ts");
  const writer = await TraceWriter.open(`${dir}/old`, {
    model: syntheticModel(options),
    capture: syntheticCapture(options),
  }, { format: "arrow" });
  await writer.add(doc!);
  await writer.close();
  const manifest = JSON.parse(await Deno.readTextFile(`${dir}/old/manifest.json`));
  delete manifest.trace_id;
  const bytes = encodeShard([{ ...doc!, domain: "all" }], rowShape(manifest));
  await Deno.writeFile(`${dir}/old/${manifest.shards[0].file}`, bytes);
  manifest.shards[0].bytes = bytes.length;
  manifest.shards[0].fingerprint = await shardFingerprint(bytes);
  await Deno.writeTextFile(`${dir}/old/manifest.json`, JSON.stringify(manifest));
  const reader = await TraceReader.open(`${dir}/old`);
  await assert.rejects(
    async () => {
      for await (const _ of reader.batches()) { /* read */ }
    },
    /: its domain "all" is "all", which names the rows of every domain together\.$/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("the launcher grants --hardware ./hw without .json, and no folder a manifest names outside its merged parts", async () => {
  const granted = permissionsFor("simulate", "t", { out: "s", hardware: ["pcie4", "./hw"] }, "/w");
  assert.ok(granted.read.includes("/w/hw"));
  const dir = await Deno.makeTempDir({ prefix: "moetrace-grants-" });
  await Deno.mkdir(`${dir}/part/shards`, { recursive: true });
  await Deno.writeTextFile(`${dir}/part/manifest.json`, "{}");
  await Deno.mkdir(`${dir}/merged`);
  const manifest = (mergedFrom: string[], files: string[]) =>
    Deno.writeTextFile(
      `${dir}/merged/manifest.json`,
      JSON.stringify({
        capture: { merged_from: mergedFrom },
        shards: files.map((file) => ({ file })),
      }),
    );
  await manifest(["../part"], ["../part/shards/a.parquet", "../../../etc/x.parquet"]);
  assert.deepEqual(outsideShardFolders(`${dir}/merged`), [resolve(dir, "part/shards")]);
  // A "part" that is not a trace, or a manifest that is not merged, widens nothing.
  await manifest(["../../../etc"], ["../../../etc/passwd"]);
  assert.deepEqual(outsideShardFolders(`${dir}/merged`), []);
  await Deno.writeTextFile(
    `${dir}/merged/manifest.json`,
    JSON.stringify({ capture: {}, shards: [{ file: "../part/shards/a.parquet" }] }),
  );
  assert.deepEqual(outsideShardFolders(`${dir}/merged`), []);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("the launcher runs from a checkout reached by a path with a space through a symlink", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-space-" });
  const checkout = `${dir}/my checkout`;
  await Deno.symlink(ROOT, checkout);
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-check",
      "--allow-run",
      "--allow-read",
      "--allow-env",
      `${checkout}/moetrace.ts`,
      "inspect",
      "fixtures/models/tiny-moe",
    ],
    cwd: checkout,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
  assert.equal(code, 0, text);
  assert.match(text, /family {13}mixtral/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("an SVG figure whose labels hold control characters is still valid XML", async () => {
  const { renderSvg } = await import("../common/plot.ts");
  const svg = await renderSvg({
    data: { values: [{ domain: "bad\u0001\u001b[31mname", n: 1 }, { domain: "ok", n: 2 }] },
    mark: "bar",
    encoding: { x: { field: "domain", type: "nominal" }, y: { field: "n", type: "quantitative" } },
  });
  assert.ok(!svg.includes("\u001b") && !svg.includes("\u0001"));
  assert.match(svg, /bad\uFFFD\uFFFD\[31mname/);
});

Deno.test("a seed beyond 2^32 − 1 is refused instead of being taken modulo 2^32", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-seed-" });
  const result = await runCli(["analyze", dir, "--out", `${dir}/a`, "--seed", "4294967296"]);
  assert.equal(result.code, 2);
  assert.equal(
    result.stderr.trim().replace(/^moetrace: /, ""),
    "--seed of analyze must be at most 4294967295, got 4294967296.",
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("an empty path is a usage error, not a stack trace from the file system", async () => {
  const merge = await runCli(["merge", "a", "b", "--out", ""]);
  assert.equal(merge.code, 2);
  assert.equal(
    merge.stderr.trim().replace(/^moetrace: /, ""),
    "--out of merge needs a path, got an empty one.",
  );
  const inspect = await runCli(["inspect", ""]);
  assert.equal(inspect.code, 2);
  assert.match(inspect.stderr, /inspect was given an empty TRACE\|MODEL path\.$/);
});
