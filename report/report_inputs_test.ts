/**
 * The report's inputs and output as an attacker or a careless user leaves
 * them (issue 20): malformed figures.json, analysis.json, simulation.json and
 * CSVs are one sentence naming the file, never a stack trace; --out in a
 * missing folder, under a file or naming a folder is one sentence and leaves
 * no file; nothing but the report is written in --out's folder; a CSV named
 * "javascript:…" is a relative link; a figure or table that is a symbolic
 * link out of its folder is refused; under the launcher, the predicted
 * against measured section is there and the grant covers the report alone.
 */
import assert from "node:assert/strict";
import { resolve } from "node:path";
import { runCli } from "../tests/cli_helpers.ts";
import { permissionsFor } from "../moetrace.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

const SIMULATION_CSV = [
  "policy,budget,capacity,capacity_spec,prefetch,dtype,hardware,layer,hit_rate,misses,prefetch_issued,ms_per_token",
  "lru,per-layer,4,4,none,fp32,box,0,0.5,3,0,9",
  "lru,per-layer,4,4,none,fp32,box,all,0.5,7,0,11",
  "belady,per-layer,4,4,none,fp32,box,all,0.6,5,0,10",
].join("\n") + "\n";

const SUMMARY_CSV = [
  "statistic,layer,domain,value,plug_in,ci_low,ci_high,baseline,baseline_marginal,p_value,q_value,n_docs,n_tokens,n_clusters,note",
  "first_choice_repeat,all,all,0.3,0.3,0.25,0.35,0.125,0.2,,,4,100,4,mean over layers",
].join("\n") + "\n";

const MEASURED_CSV = [
  "doc,phase,token,pos,ms,uploads,misses,prefetched,bytes,policy,capacity,prefetch",
  "0,0,-1,0,,4,4,0,100,lru,4,none",
  "0,1,0,1,10,2,2,0,50,lru,4,none",
  "0,1,1,2,12,1,1,0,25,lru,4,none",
].join("\n") + "\n";

/** A minimal analysis folder, simulation folder and offloaded trace in `root`; returns the args. */
async function folders(root: string): Promise<string[]> {
  for (const d of ["an", "sim", "trace"]) await Deno.mkdir(`${root}/${d}`, { recursive: true });
  await Deno.writeTextFile(`${root}/an/analysis.json`, JSON.stringify({ trace: { model: {} } }));
  await Deno.writeTextFile(`${root}/an/figures.json`, "[]");
  await Deno.writeTextFile(`${root}/an/summary.csv`, SUMMARY_CSV);
  await Deno.writeTextFile(`${root}/an/token_colouring.html`, "<span>tokens</span>");
  await Deno.writeTextFile(`${root}/sim/figures.json`, "[]");
  await Deno.writeTextFile(
    `${root}/sim/simulation.json`,
    JSON.stringify({ trace: `${root}/trace` }),
  );
  await Deno.writeTextFile(`${root}/sim/simulation.csv`, SIMULATION_CSV);
  await Deno.writeTextFile(`${root}/trace/measured.csv`, MEASURED_CSV);
  return ["report", "--analysis", `${root}/an`, "--simulation", `${root}/sim`];
}

async function names(dir: string): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir(dir)) found.push(entry.name);
  return found.sort();
}

async function withRoot(body: (root: string) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "moetrace-report-inputs-" });
  try {
    await body(root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

/** Exit 1 with one line that names `file`. */
function assertSentence(result: { code: number; stderr: string }, file: string, what: string) {
  assert.equal(result.code, 1, `${what}: ${result.stderr}`);
  const lines = result.stderr.trim().split("\n");
  assert.equal(lines.length, 1, `${what}: one line, got ${result.stderr}`);
  assert.ok(lines[0]!.includes(file), `${what}: names ${file}: ${lines[0]}`);
  assert.doesNotMatch(lines[0]!, /TypeError|\s{4}at /, what);
}

Deno.test("the folders as written give a report with predicted against measured", async () => {
  await withRoot(async (root) => {
    const result = await runCli([...await folders(root), "--out", `${root}/r.html`]);
    assert.equal(result.code, 0, result.stderr);
    assert.ok((await Deno.readTextFile(`${root}/r.html`)).includes("Predicted against measured"));
  });
});

Deno.test("a malformed report input is one sentence naming the file", async () => {
  const cases: [string, string, string][] = [
    ["an/figures.json", "{", "not JSON"],
    ["an/figures.json", "null", "not a list"],
    ["an/figures.json", "[1]", "an entry that is not an object"],
    ["an/figures.json", '[{"file": "../../etc/passwd", "title": "t"}]', "a path, not a name"],
    ["an/figures.json", '[{"file": "/etc/hosts.svg", "title": "t"}]', "an absolute path"],
    ["an/figures.json", '[{"file": "a.svg", "title": "t", "caption": 5}]', "a caption not text"],
    ["an/figures.json", '[{"file": "missing.svg", "title": "t"}]', "a missing figure"],
    ["sim/figures.json", '[{"title": "t"}]', "no file"],
    ["an/analysis.json", "[", "not JSON"],
    ["an/analysis.json", "null", "null"],
    ["an/analysis.json", "[1, 2]", "a list"],
    ["sim/simulation.json", '"text"', "a string"],
    ["an/summary.csv", '"unterminated,quote\n', "an open quote"],
    ["an/summary.csv", "statistic,layer\nx,y,z\n", "too many fields"],
    ["an/summary.csv", "a,b\n1,2\n", "missing columns"],
    [
      "an/summary.csv",
      SUMMARY_CSV.replace("0.3,0.3,0.25", "high,0.3,0.25"),
      "a value that is not a number",
    ],
    ["sim/simulation.csv", "policy\nlru\n", "missing columns"],
    ["sim/simulation.csv", SIMULATION_CSV.replace("0.5,7,0,11", "0.5,7,0,slow"), "not a number"],
    ["trace/measured.csv", "phase,ms\n1,2\n", "missing columns"],
    ["trace/measured.csv", '"open\n', "an open quote"],
    ["trace/measured.csv", MEASURED_CSV.replace("10,2,2", "fast,2,2"), "ms not a number"],
  ];
  await withRoot(async (root) => {
    const args = await folders(root);
    for (const [file, text, what] of cases) {
      const original = await Deno.readTextFile(`${root}/${file}`);
      await Deno.writeTextFile(`${root}/${file}`, text);
      const result = await runCli([...args, "--out", `${root}/r.html`]);
      assertSentence(result, `${root}/${file}`, `${file}: ${what}`);
      await Deno.writeTextFile(`${root}/${file}`, original);
    }
    assert.deepEqual(await names(root), ["an", "sim", "trace"], "no report and no temporary file");
  });
});

Deno.test("a bad --out is one sentence and leaves no file", async () => {
  await withRoot(async (root) => {
    const args = await folders(root);
    await Deno.writeTextFile(`${root}/plain`, "a file");
    await Deno.mkdir(`${root}/reports`);
    const cases: [string, RegExp][] = [
      [`${root}/missing/r.html`, /the folder ".*\/missing" does not exist/],
      [`${root}/plain/r.html`, /".*\/plain" is a file, not a folder/],
      [`${root}/reports`, /must name an \.html file, got the folder ".*\/reports"/],
      [`${root}/reports/`, /must name an \.html file/],
    ];
    for (const [out, message] of cases) {
      const result = await runCli([...args, "--out", out]);
      assert.equal(result.code, 2, `${out}: ${result.stderr}`);
      assert.equal(result.stderr.trim().split("\n").length, 1, result.stderr);
      assert.match(result.stderr, message);
    }
    assert.deepEqual(await names(root), ["an", "plain", "reports", "sim", "trace"]);
    assert.deepEqual(await names(`${root}/reports`), []);
  });
});

Deno.test("report writes nothing in --out's folder but the report", async () => {
  await withRoot(async (root) => {
    const args = await folders(root);
    await Deno.mkdir(`${root}/reports`);
    await Deno.writeTextFile(`${root}/reports/notes.txt`, "mine");
    const result = await runCli([...args, "--out", `${root}/reports/r.html`]);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(await names(`${root}/reports`), ["notes.txt", "r.html"]);
    // The launcher lets it write the report and its one staging name, nothing else there.
    const granted = permissionsFor("report", undefined, {
      analysis: "an",
      simulation: "sim",
      out: "reports/r.html",
    }, root);
    assert.deepEqual(
      new Set(granted.write),
      new Set([`${root}/reports/r.html`, `${root}/reports/r.html.partial`]),
    );
  });
});

Deno.test("a CSV named javascript:… is a relative link, never a script URL", async () => {
  await withRoot(async (root) => {
    const args = await folders(root);
    await Deno.writeTextFile(`${root}/an/javascript:alert(document.domain).csv`, "a\n1\n");
    await Deno.writeTextFile(`${root}/an/JavaScript:void(0)//x.csv`.replace("//", "_"), "a\n");
    // The report beside the CSVs: the relative path of each is its bare name.
    const result = await runCli([...args, "--out", `${root}/an/report.html`]);
    assert.equal(result.code, 0, result.stderr);
    const html = await Deno.readTextFile(`${root}/an/report.html`);
    const hrefs = [...html.matchAll(/href="([^"]*)"/g)].map((m) => m[1]!);
    assert.ok(hrefs.length > 3, "the data files are linked");
    for (const href of hrefs) {
      assert.match(href, /^(\.\/|#)/, `a relative link or an anchor: ${href}`);
      assert.doesNotMatch(href.replace(/&#\d+;/g, ""), /^[a-z]+:/i, href);
    }
    assert.ok(hrefs.includes("./javascript%3Aalert(document.domain).csv"), hrefs.join(" "));
  });
});

Deno.test("a figure or table linked out of its folder is refused and nothing of it is embedded", async () => {
  await withRoot(async (root) => {
    const args = await folders(root);
    const secret = "PRIVATE KEY 0123456789 do not embed";
    await Deno.writeTextFile(`${root}/secret.txt`, secret);
    await Deno.symlink(`${root}/secret.txt`, `${root}/an/stolen.svg`);
    await Deno.writeTextFile(
      `${root}/an/figures.json`,
      JSON.stringify([{ file: "stolen.svg", title: "t", caption: "c", section: "shares" }]),
    );
    const figure = await runCli([...args, "--out", `${root}/r.html`]);
    assertSentence(figure, `${root}/an/stolen.svg`, "a symlinked figure");
    assert.match(figure.stderr, /symbolic link to a file outside/);
    assert.doesNotMatch(figure.stderr, /PRIVATE/);
    await Deno.writeTextFile(`${root}/an/figures.json`, "[]");
    await Deno.remove(`${root}/an/summary.csv`);
    await Deno.symlink(`${root}/secret.txt`, `${root}/an/summary.csv`);
    assertSentence(
      await runCli([...args, "--out", `${root}/r.html`]),
      `${root}/an/summary.csv`,
      "a symlinked table",
    );
    assert.ok(!(await names(root)).includes("r.html"));
    // A link that stays inside the folder is an ordinary input.
    await Deno.remove(`${root}/an/summary.csv`);
    await Deno.writeTextFile(`${root}/an/summary_real.csv`, SUMMARY_CSV);
    await Deno.symlink(`${root}/an/summary_real.csv`, `${root}/an/summary.csv`);
    const inside = await runCli([...args, "--out", `${root}/r.html`]);
    assert.equal(inside.code, 0, inside.stderr);
  });
});

Deno.test("under the launcher the report sets the prediction against the trace's measurements", async () => {
  await withRoot(async (root) => {
    await folders(root);
    // simulate records the trace as it was given, relative to the caller's folder.
    await Deno.writeTextFile(`${root}/sim/simulation.json`, JSON.stringify({ trace: "trace" }));
    const granted = permissionsFor("report", undefined, {
      analysis: "an",
      simulation: "sim",
      out: "r.html",
    }, root);
    assert.ok(granted.read.includes(resolve(root, "trace/measured.csv")));
    assert.ok(!granted.read.includes(resolve(root, "trace")), "the measurements, not the trace");
    const comparing = permissionsFor("report", undefined, {
      analysis: "an",
      simulation: "sim",
      out: "r.html",
      compare: "cmp",
    }, root);
    assert.ok(comparing.read.includes(resolve(root, "cmp")), "--compare is read");
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-run",
        "--allow-read",
        "--allow-env=TMPDIR,INIT_CWD,XDG_RUNTIME_DIR",
        `${ROOT}/moetrace.ts`,
        "report",
        "--analysis",
        "an",
        "--simulation",
        "sim",
        "--out",
        "r.html",
      ],
      cwd: root,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(code, 0, new TextDecoder().decode(stderr));
    const html = await Deno.readTextFile(`${root}/r.html`);
    assert.ok(html.includes("Predicted against measured"), "the section is there");
    assert.deepEqual(await names(root), ["an", "r.html", "sim", "trace"]);
  });
});
