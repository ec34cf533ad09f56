/**
 * Least privilege: `deno task moetrace` runs each command with reads limited
 * to the project and its inputs and writes limited to its output, and the
 * runtime refuses anything else.
 */
import assert from "node:assert/strict";
import { resolve } from "node:path";
import { denoArgs, permissionsFor } from "../moetrace.ts";
import { writeSyntheticTrace } from "../trace/synthetic.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

Deno.test("each command writes only to its output", () => {
  // analyze stages its folder at <out>.partial and renames it into place.
  const analyze = permissionsFor("analyze", "trace", { out: "out/a" });
  assert.deepEqual(analyze.write, [resolve("out/a"), resolve("out/a.partial")]);
  assert.ok(analyze.read.includes(resolve("trace")));
  assert.deepEqual(permissionsFor("inspect", "t", {}).write, []);
  const capture = permissionsFor("capture", undefined, { model: "m", corpus: "c.jsonl", out: "t" });
  assert.deepEqual(capture.write, [resolve("t")]);
  assert.deepEqual(
    new Set(capture.read),
    new Set([ROOT, resolve("m"), resolve("c.jsonl"), resolve("t")]),
  );
  // report writes its file and its staging name, never the rest of the folder.
  assert.deepEqual(
    permissionsFor("report", undefined, { analysis: "a", simulation: "s", out: "r/x.html" }).write,
    [resolve("r/x.html"), resolve("r/x.html.partial")],
  );
});

Deno.test("every path flag in COMMANDS is granted as its `path` field says", () => {
  const imported = permissionsFor("import", "log.jsonl", { out: "t" });
  assert.deepEqual(new Set(imported.write), new Set([resolve("t"), resolve("t.partial")]));
  assert.ok(imported.read.includes(resolve("log.jsonl")) && imported.read.includes(resolve(".")));
  const simulated = permissionsFor("simulate", "trace", {
    out: "s",
    hardware: ["pcie4", "h.json"],
  });
  assert.ok(
    simulated.read.includes(resolve("h.json")) && simulated.read.includes(resolve("trace")),
  );
  assert.deepEqual(simulated.write, [resolve("s")]);
  const generated = permissionsFor("generate", undefined, { model: "m", prompts: "p", out: "g" });
  assert.deepEqual(generated.write, [resolve("g")]);
  assert.ok(generated.read.includes(resolve("p")) && generated.read.includes(resolve("m")));
  const calibrated = permissionsFor("bench", "engine", { calibrate: "cal/hw.json" });
  assert.ok(calibrated.write.includes(resolve("cal")));
  assert.ok(calibrated.write.includes(Deno.env.get("TMPDIR") ?? "/tmp"));
  // Flags that are not paths grant nothing.
  assert.deepEqual(permissionsFor("analyze", "t", { out: "o", bootstrap: 10, seed: 3 }).write, [
    resolve("o"),
    resolve("o.partial"),
  ]);
});

Deno.test("import grants read for every FILE and for --model-config", () => {
  const imported = permissionsFor(
    "import",
    ["rank0.pt", "rank1.pt"],
    { out: "t", "model-config": "m/config.json" },
  );
  for (const path of ["rank0.pt", "rank1.pt", "m/config.json"]) {
    assert.ok(imported.read.includes(resolve(path)), path);
  }
  assert.deepEqual(new Set(imported.write), new Set([resolve("t"), resolve("t.partial")]));
});

Deno.test("relative paths are granted from the caller's folder; a comma in a path is refused", () => {
  const from = permissionsFor("analyze", "trace", { out: "results" }, "/home/user/work");
  assert.deepEqual(from.write, ["/home/user/work/results", "/home/user/work/results.partial"]);
  assert.ok(from.read.includes("/home/user/work/trace"));
  // Deno splits permission lists at commas: "results,../elsewhere" would grant two folders.
  assert.throws(
    () => permissionsFor("analyze", "trace", { out: "results,../elsewhere" }),
    /Paths may not contain a comma, got "results,\.\.\/elsewhere"\./,
  );
});

Deno.test("a write outside --out is refused by the runtime", async () => {
  const dir = await Deno.makeTempDir();
  const probe = `${dir}/probe.ts`;
  await Deno.writeTextFile(
    probe,
    `for (const path of Deno.args) {
       try { Deno.writeTextFileSync(path, "x"); console.log("wrote " + path); }
       catch (e) { console.log("refused " + path + " " + e.name); }
     }`,
  );
  await Deno.mkdir(`${dir}/out`);
  const args = denoArgs(permissionsFor("analyze", `${dir}/trace`, { out: `${dir}/out` }), []);
  // The same flags, running the probe instead of main.ts.
  const flags = args.slice(0, -1).concat(probe).map((
    a,
  ) => (a.startsWith("--allow-read=") ? `${a},${dir}` : a));
  const { stdout } = await new Deno.Command(Deno.execPath(), {
    args: [...flags, `${dir}/out/inside.txt`, `${dir}/outside.txt`, `${ROOT}/escaped.txt`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const lines = new TextDecoder().decode(stdout).trim().split("\n");
  assert.deepEqual(lines, [
    `wrote ${dir}/out/inside.txt`,
    `refused ${dir}/outside.txt NotCapable`,
    `refused ${ROOT}/escaped.txt NotCapable`,
  ]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("the launcher runs a real command within those permissions", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(
    `${dir}/log.jsonl`,
    '{"moetrace_import": 1, "num_layers": 1, "num_experts": 4, "top_k": 2}\n{"domain": "A", "tokens": [1, 2], "experts": [[[0, 1]], [[2, 3]]]}\n',
  );
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-run",
      "--allow-read",
      "--allow-env=TMPDIR",
      `${ROOT}/moetrace.ts`,
      "import",
      `${dir}/log.jsonl`,
      "--out",
      `${dir}/trace`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(code, 0, new TextDecoder().decode(stderr));
  assert.ok((await Deno.stat(`${dir}/trace/manifest.json`)).isFile);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("the launcher imports two ranks' files, each read under its own grant", async () => {
  const dir = await Deno.makeTempDir();
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-run",
      "--allow-read",
      "--allow-env=TMPDIR",
      `${ROOT}/moetrace.ts`,
      "import",
      `${ROOT}/fixtures/import/sglang_rank0.pt`,
      `${ROOT}/fixtures/import/sglang_rank1.pt`,
      "--model-config",
      `${ROOT}/fixtures/import/deepseek_config.json`,
      "--out",
      `${dir}/trace`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(code, 0, new TextDecoder().decode(stderr));
  const manifest = JSON.parse(await Deno.readTextFile(`${dir}/trace/manifest.json`));
  assert.equal(manifest.model.expert_params, 3 * 64 * 32);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("SIGTERM to the launcher stops its worker too", async () => {
  const dir = await Deno.makeTempDir();
  await writeSyntheticTrace(`${dir}/trace`, { tokensPerDoc: 200, numLayers: 8 });
  const launcher = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-run",
      "--allow-read",
      "--allow-env=TMPDIR",
      `${ROOT}/moetrace.ts`,
      "analyze",
      `${dir}/trace`,
      "--out",
      `${dir}/analysis`,
      "--bootstrap",
      "1000000",
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  // Wait for the worker (a second Deno running main.ts on this trace) to start.
  let workers: number[] = [];
  for (let i = 0; i < 100 && workers.length === 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
    workers = await processesNaming(`${dir}/analysis`, launcher.pid);
  }
  assert.equal(workers.length, 1, "the worker did not start");
  launcher.kill("SIGTERM");
  await launcher.status;
  let alive = workers;
  for (let i = 0; i < 50 && alive.length > 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
    alive = await processesNaming(`${dir}/analysis`, launcher.pid);
  }
  assert.deepEqual(alive, [], "the worker outlived the launcher");
  await Deno.remove(dir, { recursive: true });
});

/** Pids (other than `except`) whose command line mentions `needle` (pgrep; Deno guards /proc). */
async function processesNaming(needle: string, except: number): Promise<number[]> {
  const { stdout } = await new Deno.Command("pgrep", { args: ["-f", needle], stdout: "piped" })
    .output();
  return new TextDecoder().decode(stdout).split("\n").filter((l) => l.trim() !== "")
    .map(Number).filter((pid) => pid !== except);
}
