/**
 * Interruption: `capture` killed (SIGINT or SIGKILL) at random points and run
 * again resumes to a trace equal to an uninterrupted capture, and the trace is
 * readable after every kill; `analyze` and `simulate` killed at random points
 * never leave a half-written file under its final name.
 *
 * `MOETRACE_KILLS` sets the number of kill points per command (default 4 in
 * the test suite; the acceptance run uses 20).
 */
import assert from "node:assert/strict";
import { Rng } from "../common/random.ts";
import { writeSyntheticTrace } from "../trace/synthetic.ts";
import { type TraceDoc, TraceReader } from "../trace/mod.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const MODEL = `${ROOT}fixtures/models/tiny-mixtral-swa`;
const CORPUS = `${ROOT}fixtures/corpus/fixture.jsonl`;
const KILLS = Number(Deno.env.get("MOETRACE_KILLS") ?? 4);

function cli(args: string[]): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-write", `${ROOT}main.ts`, ...args],
    stdout: "null",
    stderr: "piped",
    env: { XDG_RUNTIME_DIR: "/tmp" },
  }).spawn();
}

/** Runs a command to completion; throws with its stderr when it fails. */
async function complete(args: string[]): Promise<void> {
  const child = cli(args);
  const { code, stderr } = await child.output();
  if (code !== 0) {
    throw new Error(`moetrace ${args[0]} exited ${code}: ${new TextDecoder().decode(stderr)}`);
  }
}

/**
 * Starts a command and kills it with `signal` `ms` after it starts, or, with
 * `afterFirstShard`, `ms` after its trace lists a first shard (so the kill
 * lands mid-capture however slow start-up is); true if it finished first.
 */
async function killAfter(
  args: string[],
  ms: number,
  signal: Deno.Signal,
  afterFirstShard?: string,
): Promise<boolean> {
  const child = cli(args);
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  if (afterFirstShard) {
    while (!exited && !(await hasShard(afterFirstShard))) await delay(10);
  }
  const timer = setTimeout(() => {
    try {
      child.kill(signal);
    } catch {
      // already exited
    }
  }, ms);
  const result = await status;
  clearTimeout(timer);
  await child.stderr.cancel();
  return result.success;
}

async function hasShard(trace: string): Promise<boolean> {
  try {
    return JSON.parse(await Deno.readTextFile(`${trace}/manifest.json`)).shards.length > 0;
  } catch {
    return false;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function readDocs(dir: string): Promise<TraceDoc[]> {
  const docs: TraceDoc[] = [];
  for await (const d of (await TraceReader.open(dir)).documents()) docs.push(structuredClone(d));
  return docs;
}

Deno.test("capture killed at random points resumes to the uninterrupted trace", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-interrupt-" });
  const args = (out: string) => [
    "capture",
    "--model",
    MODEL,
    "--corpus",
    CORPUS,
    "--out",
    out,
    "--max-tokens",
    "96",
    "--batch-tokens",
    "96",
    "--shard-rows",
    "96",
    "--probs",
    "--lookahead",
    "1",
  ];
  const start = performance.now();
  await complete(args(`${dir}/whole`));
  const wholeMs = performance.now() - start;
  const expected = await readDocs(`${dir}/whole`);
  const rng = new Rng(11);
  const partialSizes: number[] = [];
  expected.sort((a, b) => a.doc - b.doc);
  for (let kill = 0; kill < KILLS; kill++) {
    // Each kill point starts a fresh capture, kills it, checks what is on
    // disk, then resumes it to the end.
    const out = `${dir}/killed-${kill}`;
    const signal: Deno.Signal = kill % 2 === 0 ? "SIGKILL" : "SIGINT";
    // Even kill points: anywhere in the run, start-up included; odd ones: after
    // the first shard is on disk, so some kills always land mid-capture.
    if (kill % 2 === 0) await killAfter(args(out), (0.15 + 0.8 * rng.next()) * wholeMs, signal);
    else await killAfter(args(out), 0.3 * rng.next() * wholeMs, signal, out);
    let partial: TraceDoc[] = [];
    try {
      await Deno.stat(`${out}/manifest.json`);
      partial = await readDocs(out); // readable after the kill
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
    partialSizes.push(partial.length);
    const done = new Map(partial.map((d) => [d.doc, d]));
    assert.equal(done.size, partial.length, "no duplicated documents");
    for (const doc of expected) {
      if (done.has(doc.doc)) {
        assert.deepEqual(done.get(doc.doc), doc, `document ${doc.doc} after kill ${kill}`);
      }
    }
    await complete(args(out));
    const resumed = await readDocs(out);
    resumed.sort((a, b) => a.doc - b.doc);
    assert.deepEqual(resumed, expected, `final trace after kill ${kill} (${signal})`);
    await Deno.remove(out, { recursive: true });
  }
  console.log(`documents on disk at each kill: ${partialSizes.join(", ")} of ${expected.length}`);
  assert.ok(
    partialSizes.some((n) => n > 0 && n < expected.length),
    "at least one kill landed in the middle of the capture",
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("analyze and simulate killed at random points leave only whole files", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-interrupt-" });
  await writeSyntheticTrace(`${dir}/trace`, {
    numLayers: 8,
    tokensPerDoc: 400,
    probs: true,
    lookahead: 1,
    domains: [{ name: "A", docs: 30 }, { name: "B", docs: 30 }],
  });
  const commands: Record<string, (out: string) => string[]> = {
    analyze: (out) => ["analyze", `${dir}/trace`, "--out", out, "--bootstrap", "200"],
    simulate: (
      out,
    ) => ["simulate", `${dir}/trace`, "--out", out, "--policy", "lru,lfu,fifo,belady"],
  };
  for (const [name, args] of Object.entries(commands)) {
    await t.step(name, async () => {
      const start = performance.now();
      await complete(args(`${dir}/${name}-whole`));
      const wholeMs = performance.now() - start;
      const reference = new Map<string, Uint8Array>();
      for (const entry of Deno.readDirSync(`${dir}/${name}-whole`)) {
        if (entry.name.endsWith(".csv")) {
          reference.set(entry.name, await Deno.readFile(`${dir}/${name}-whole/${entry.name}`));
        }
      }
      const rng = new Rng(5);
      for (let kill = 0; kill < KILLS; kill++) {
        const out = `${dir}/${name}-killed-${kill}`;
        await killAfter(args(out), 200 + rng.next() * wholeMs, kill % 2 ? "SIGINT" : "SIGKILL");
        let entries: Deno.DirEntry[] = [];
        try {
          entries = [...Deno.readDirSync(out)];
        } catch {
          continue;
        }
        for (const entry of entries) {
          const expected = reference.get(entry.name);
          if (expected) {
            assert.deepEqual(
              await Deno.readFile(`${out}/${entry.name}`),
              expected,
              `${entry.name} after kill ${kill}`,
            );
          }
        }
      }
    });
  }
  await Deno.remove(dir, { recursive: true });
});
