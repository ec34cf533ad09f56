/**
 * Fuzz targets past single files in process (issue 20): sharded checkpoint
 * indexes, corpus folders, every `report` input, symlinks in traces, file
 * system errors (a real file-size limit in a child process, and files or
 * folders in the way), concurrent writers of one trace, and the launcher.
 */
import { dirname, resolve } from "node:path";
import { DataError } from "../../common/errors.ts";
import { lockFolder, pathExists } from "../../common/fs.ts";
import { readCorpus } from "../../corpus/corpus.ts";
import { readAll, writeSafetensors } from "../../engine/safetensors.ts";
import { importJsonl } from "../../trace/import/interchange.ts";
import { syntheticCapture, syntheticDocs, syntheticModel } from "../../trace/synthetic.ts";
import { type TraceDoc, TraceReader, TraceWriter } from "../../trace/mod.ts";
import { runCli } from "../cli_helpers.ts";
import { type FuzzTarget, mutateBytes, mutateJson, pick } from "./fuzz.ts";

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), "../..");
const MODEL = `${ROOT}/fixtures/models/tiny-mixtral-swa`;
const encoder = new TextEncoder();

/** Opens a checkpoint and reads every tensor the config expects, as the engine does. */
async function loadWeights(dir: string): Promise<void> {
  const { openCheckpoint, readFloat32, expectedTensors } = await import(
    "../../engine/checkpoint.ts"
  );
  const checkpoint = await openCheckpoint(dir);
  for (const t of expectedTensors(checkpoint.config)) await readFloat32(checkpoint, t.name);
}

/** A checkpoint split into two safetensors shards and an index, its entries mutated. */
export async function shardedIndexTarget(): Promise<FuzzTarget> {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-fuzz-index-" });
  const tensors = await readAll(`${MODEL}/model.safetensors`);
  const names = [...tensors.keys()];
  const halves = [names.slice(0, names.length >> 1), names.slice(names.length >> 1)];
  const files = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
  const source = `${dir}/source`;
  await Deno.mkdir(source);
  for (let s = 0; s < 2; s++) {
    await writeSafetensors(
      `${source}/${files[s]}`,
      Object.fromEntries(halves[s]!.map((n) => {
        const t = tensors.get(n)!;
        return [n, { shape: [...t.shape], dtype: t.dtype, bytes: t.bytes }];
      })),
    );
  }
  const index = {
    metadata: { total_size: 0 },
    weight_map: Object.fromEntries(names.map((n, i) => [n, files[i < halves[0]!.length ? 0 : 1]])),
  };
  const entries = [".", "", "..", "shards", "/etc/passwd", "../x.safetensors", files[0]!, "a\\b"];
  return {
    name: "sharded checkpoint index (model.safetensors.index.json)",
    make: async (rng, i) => {
      const model = `${dir}/case${i}`;
      await Deno.mkdir(`${model}/shards`, { recursive: true });
      await Deno.copyFile(`${MODEL}/config.json`, `${model}/config.json`);
      for (const f of files) await Deno.copyFile(`${source}/${f}`, `${model}/${f}`);
      let indexText = JSON.stringify(index);
      let label: string;
      const kind = rng.int(4);
      if (kind === 0) {
        const m = mutateJson(rng, index);
        indexText = JSON.stringify(m.value);
        label = `index ${m.label}`;
      } else if (kind === 1) {
        const copy = structuredClone(index);
        const name = pick(rng, names);
        const entry = pick(rng, entries);
        copy.weight_map[name] = entry;
        indexText = JSON.stringify(copy);
        label = `weight_map[${name}] = ${JSON.stringify(entry)}`;
      } else if (kind === 2) {
        const which = rng.int(2);
        const m = mutateBytes(rng, await Deno.readFile(`${source}/${files[which]}`));
        await Deno.writeFile(`${model}/${files[which]}`, m.bytes);
        label = `${files[which]} ${m.label}`;
      } else {
        const which = rng.int(2);
        await Deno.remove(`${model}/${files[which]}`);
        if (rng.next() < 0.5) await Deno.mkdir(`${model}/${files[which]}`);
        label = `${files[which]} missing or a folder`;
      }
      await Deno.writeTextFile(`${model}/model.safetensors.index.json`, indexText);
      return { label, run: () => loadWeights(model) };
    },
    teardown: () => Deno.remove(dir, { recursive: true }),
  };
}

/** Corpus folders: domain folders and files mutated, replaced, linked in and out. */
export async function corpusFolderTarget(): Promise<FuzzTarget> {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-fuzz-corpusdir-" });
  await Deno.writeTextFile(`${dir}/outside.txt`, "a file outside the corpus");
  return {
    name: "corpus folders (capture --corpus DIR)",
    make: async (rng, i) => {
      const corpus = `${dir}/case${i}`;
      const domains = ["ArXiv", "Github", "all"].slice(0, 1 + rng.int(3));
      for (const d of domains) {
        await Deno.mkdir(`${corpus}/${d}`, { recursive: true });
        for (let f = 0; f < 1 + rng.int(3); f++) {
          await Deno.writeTextFile(`${corpus}/${d}/${f}.txt`, `Document ${f} of ${d}. `.repeat(3));
        }
      }
      const d = pick(rng, domains);
      const labels: string[] = [];
      for (let n = 1 + rng.int(2); n > 0; n--) {
        try {
          const kind = rng.int(8);
          const file = `${corpus}/${d}/${rng.int(4)}.txt`;
          if (kind === 0) {
            const bytes = await Deno.readFile(file).catch(() => encoder.encode("text"));
            const m = mutateBytes(rng, bytes);
            await Deno.writeFile(file, m.bytes);
            labels.push(`${d}/${file.split("/").pop()} ${m.label}`);
          } else if (kind === 1) {
            await Deno.remove(file).catch(() => {});
            await Deno.symlink(`${dir}/outside.txt`, file);
            labels.push(`${d} file linked outside`);
          } else if (kind === 2) {
            await Deno.remove(file).catch(() => {});
            await Deno.symlink(`${corpus}/${d}/missing.txt`, file);
            labels.push(`${d} dangling link`);
          } else if (kind === 3) {
            await Deno.symlink(`${corpus}/${d}`, `${corpus}/Linked${rng.int(100)}`).catch(() => {});
            labels.push("domain linked inside");
          } else if (kind === 4) {
            await Deno.symlink(dir, `${corpus}/Escape${rng.int(100)}`).catch(() => {});
            labels.push("domain linked outside");
          } else if (kind === 5) {
            await Deno.mkdir(`${corpus}/${d}/nested`, { recursive: true });
            labels.push(`${d}/nested folder`);
          } else if (kind === 6) {
            for (const x of domains) await Deno.remove(`${corpus}/${x}`, { recursive: true });
            await Deno.writeTextFile(`${corpus}/loose.txt`, "no domain folders");
            labels.push("no domain folders");
          } else {
            const big = await Deno.open(file, { create: true, write: true, truncate: true });
            await big.truncate(pick(rng, [0, 2 ** 28 + 1, 2 ** 30]));
            big.close();
            labels.push(`${d} sparse large file`);
          }
        } catch {
          labels.push("(a mutation that no longer applied)");
        }
      }
      return {
        label: `corpus folder: ${labels.join(", ")}`,
        run: async () => {
          for await (const _ of readCorpus(corpus)) { /* read every document */ }
        },
      };
    },
    teardown: () => Deno.remove(dir, { recursive: true }),
  };
}

/** One small synthetic trace's documents, written by TraceWriter. */
async function writeTrace(dir: string, rowsPerShard = 16, docs?: TraceDoc[]): Promise<void> {
  const options = { numLayers: 2, numExperts: 4, topK: 2, tokensPerDoc: 6, seed: 4 };
  const writer = await TraceWriter.open(dir, {
    model: syntheticModel(options),
    capture: syntheticCapture(options),
  }, { rowsPerShard, encoders: 0, resume: true });
  for (const doc of docs ?? syntheticDocs(options)) {
    if (!writer.completedDocs.has(doc.doc)) await writer.add(doc);
  }
  await writer.close();
}

/** Traces whose shards, shards folder or manifest are symlinks, read and resumed. */
export async function symlinkTarget(): Promise<FuzzTarget> {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-fuzz-links-" });
  const original = `${dir}/original`;
  await writeTrace(original);
  const outside = `${dir}/outside`;
  await Deno.mkdir(outside);
  await Deno.writeTextFile(`${outside}/secret.txt`, "SECRET 1234567890");
  await Deno.writeTextFile(`${outside}/keep.tmp-1`, "not moetrace's");
  const snapshot = async () =>
    [...Deno.readDirSync(outside)].map((e) => e.name).sort().join(",") +
    (await Deno.readTextFile(`${outside}/secret.txt`));
  const before = await snapshot();
  const manifest = JSON.parse(await Deno.readTextFile(`${original}/manifest.json`));
  const shards = manifest.shards.map((s: { file: string }) => s.file) as string[];
  return {
    name: "symlinks in traces (read and resumed capture)",
    make: async (rng, i) => {
      const copy = `${dir}/case${i}`;
      await Deno.mkdir(`${copy}/shards`, { recursive: true });
      await Deno.copyFile(`${original}/manifest.json`, `${copy}/manifest.json`);
      for (const f of shards) await Deno.copyFile(`${original}/${f}`, `${copy}/${f}`);
      const kind = rng.int(6);
      const shard = pick(rng, shards);
      let label: string;
      if (kind === 0) {
        await Deno.remove(`${copy}/${shard}`);
        await Deno.symlink(`${outside}/secret.txt`, `${copy}/${shard}`);
        label = `${shard} linked to a file outside`;
      } else if (kind === 1) {
        await Deno.remove(`${copy}/shards`, { recursive: true });
        await Deno.symlink(outside, `${copy}/shards`);
        label = "shards folder linked outside";
      } else if (kind === 2) {
        await Deno.remove(`${copy}/${shard}`);
        await Deno.symlink(`${copy}/${shard}`, `${copy}/${shard}`);
        label = `${shard} a link to itself`;
      } else if (kind === 3) {
        await Deno.rename(`${copy}/${shard}`, `${copy}/kept.parquet`);
        await Deno.symlink("../kept.parquet", `${copy}/${shard}`);
        label = `${shard} linked inside the trace`;
      } else if (kind === 4) {
        await Deno.remove(`${copy}/manifest.json`);
        await Deno.symlink(`${outside}/secret.txt`, `${copy}/manifest.json`);
        label = "manifest.json linked outside";
      } else {
        await Deno.symlink(`${outside}/keep.tmp-1`, `${copy}/shards/x.parquet.tmp-${Deno.pid}`);
        label = "a temporary name linked outside";
      }
      const resume = rng.next() < 0.5;
      return {
        label: `${label}, ${resume ? "resumed" : "read"}`,
        run: async () => {
          try {
            if (resume) await writeTrace(copy, 8);
            const reader = await TraceReader.open(copy);
            for await (const _ of reader.batches()) { /* read every shard */ }
          } catch (error) {
            if (error instanceof DataError && /SECRET|1234567890/.test(error.message)) {
              throw new Error(`an error quoted a file outside the trace: ${error.message}`);
            }
            throw error;
          } finally {
            if ((await snapshot()) !== before) {
              // deno-lint-ignore no-unsafe-finally -- the finding must win over any error
              throw new Error("a file outside the trace was written or deleted");
            }
          }
        },
      };
    },
    teardown: () => Deno.remove(dir, { recursive: true }),
  };
}

/** analyze and simulate outputs, one file in them mutated, given to `report`. */
export async function reportInputsTarget(): Promise<FuzzTarget> {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-fuzz-report-" });
  const options = {
    numLayers: 2,
    numExperts: 4,
    topK: 2,
    tokensPerDoc: 16,
    domains: [{ name: "A", docs: 4 }, { name: "B", docs: 4 }],
  };
  const writer = await TraceWriter.open(`${dir}/t`, {
    model: syntheticModel(options),
    capture: syntheticCapture(options),
  });
  for (const doc of syntheticDocs(options)) await writer.add(doc);
  await writer.close();
  for (
    const args of [
      ["analyze", `${dir}/t`, "--out", `${dir}/a`, "--bootstrap", "0"],
      ["simulate", `${dir}/t`, "--out", `${dir}/s`, "--bootstrap", "0"],
    ]
  ) {
    const result = await runCli(args);
    if (result.code !== 0) throw new Error(`${args[0]} failed: ${result.stderr}`);
  }
  const inputs: [string, string][] = [];
  for (const folder of ["a", "s"]) {
    for (const entry of Deno.readDirSync(`${dir}/${folder}`)) {
      if (entry.isFile && !entry.name.endsWith(".svg")) inputs.push([folder, entry.name]);
    }
  }
  inputs.sort();
  return {
    name: "report inputs (figures.json, analysis.json, simulation.json, CSVs)",
    make: async (rng, i) => {
      const copy = `${dir}/case${i}`;
      for (const folder of ["a", "s"]) {
        await Deno.mkdir(`${copy}/${folder}`, { recursive: true });
        for (const entry of Deno.readDirSync(`${dir}/${folder}`)) {
          await Deno.copyFile(`${dir}/${folder}/${entry.name}`, `${copy}/${folder}/${entry.name}`);
        }
      }
      const [folder, name] = pick(rng, inputs);
      const path = `${copy}/${folder}/${name}`;
      let label: string;
      const text = await Deno.readTextFile(path);
      if (name.endsWith(".json") && rng.next() < 0.7) {
        const m = mutateJson(rng, JSON.parse(text));
        await Deno.writeTextFile(path, JSON.stringify(m.value));
        label = `${folder}/${name} ${m.label}`;
      } else if (name.endsWith(".csv") && rng.next() < 0.5) {
        const rows = text.split("\n");
        const r = rng.int(rows.length);
        const cells = rows[r]!.split(",");
        const c = rng.int(cells.length);
        cells[c] = pick(rng, ["", "NaN", "-1", "1e400", '=HYPERLINK("x")', "\u001b[2J", "a,b"]);
        rows[r] = cells.join(",");
        await Deno.writeTextFile(path, rows.join("\n"));
        label = `${folder}/${name} row ${r} cell ${c} = ${JSON.stringify(cells[c])}`;
      } else if (rng.next() < 0.2) {
        await Deno.remove(path);
        await Deno.symlink(`${dir}/t/manifest.json`, path);
        label = `${folder}/${name} linked outside`;
      } else {
        const m = mutateBytes(rng, encoder.encode(text));
        await Deno.writeFile(path, m.bytes);
        label = `${folder}/${name} ${m.label}`;
      }
      const out = `${copy}/report.html`;
      return {
        label: `report: ${label}`,
        run: async () => {
          const result = await runCli([
            "report",
            "--analysis",
            `${copy}/a`,
            "--simulation",
            `${copy}/s`,
            "--out",
            out,
          ]);
          if (result.code === 0) return;
          const message = result.stderr.trim().replace(/^moetrace: /, "");
          if (result.code === 1 && !message.includes("\n")) throw new DataError(message);
          throw new Error(`exit ${result.code}: ${result.stderr}`);
        },
        clean: () =>
          Promise.resolve(![...Deno.readDirSync(copy)].some((e) => e.name.startsWith("report"))),
      };
    },
    teardown: () => Deno.remove(dir, { recursive: true }),
  };
}

/** An interchange log of `docs` documents with seeded choices (so it does not compress away). */
function interchangeLog(docs: number, tokens: number): string {
  const lines = [JSON.stringify({ moetrace_import: 1, num_layers: 4, num_experts: 16, top_k: 2 })];
  for (let d = 0; d < docs; d++) {
    const experts = Array.from({ length: tokens }, (_, t) =>
      Array.from({ length: 4 }, (_, l) => {
        const a = (d * 7919 + t * 104729 + l * 1299709) % 16;
        return [a, (a + 1 + ((d * 31 + t * 17 + l) % 15)) % 16];
      }));
    const weights = experts.map((layers, t) =>
      layers.map((_, l) => {
        const w = 0.5 + ((d * 13 + t * 7 + l) % 97) / 200;
        return [w, 1 - w];
      })
    );
    const ids = Array.from({ length: tokens }, (_, t) => (d * 7 + t) % 1000);
    lines.push(JSON.stringify({ domain: d % 2 ? "A" : "B", tokens: ids, experts, weights }));
  }
  return lines.join("\n") + "\n";
}

/**
 * File-system errors: a file-size limit (`ulimit -f`, SIGXFSZ ignored: writes
 * fail with EFBIG as on a full disk) in a child `import`, `analyze` or trace
 * writer; or a file or folder in the way of an output in process. Either
 * way: one sentence, and no partial output.
 */
export async function fsErrorTarget(): Promise<FuzzTarget> {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-fuzz-fs-" });
  await Deno.writeTextFile(`${dir}/log.jsonl`, interchangeLog(120, 100));
  await Deno.writeTextFile(`${dir}/small.jsonl`, interchangeLog(3, 5));
  const child = async (kib: number, args: string[]) => {
    const { code, stderr } = await new Deno.Command("bash", {
      args: [
        "-c",
        `trap '' XFSZ; ulimit -f ${kib}; exec "$0" run --no-check -A "$@"`,
        Deno.execPath(),
        `${ROOT}/main.ts`,
        ...args,
      ],
      stdout: "null",
      stderr: "piped",
      env: { NO_COLOR: "1", XDG_RUNTIME_DIR: "/tmp" },
    }).output();
    const text = new TextDecoder().decode(stderr).trim().replace(/^moetrace: /, "");
    if (code === 0) return;
    if (code === 1 && !text.includes("\n")) throw new DataError(text);
    throw new Error(`exit ${code}: ${text}`);
  };
  return {
    name: "file-system errors (a file-size limit, files in the way)",
    make: async (rng, i) => {
      const out = `${dir}/case${i}`;
      const kind = rng.int(5);
      if (kind === 0) {
        const kib = pick(rng, [8, 32, 64, 128, 4096]);
        return {
          label: `import under ulimit -f ${kib}`,
          run: () => child(kib, ["import", `${dir}/log.jsonl`, "--out", out]),
          clean: async () => !(await pathExists(out)) && !(await pathExists(`${out}.partial`)),
        };
      }
      if (kind === 1) {
        const kib = pick(rng, [4, 16, 64]);
        await importJsonl(`${dir}/log.jsonl`, `${out}-trace`);
        return {
          label: `analyze under ulimit -f ${kib}`,
          run: () => child(kib, ["analyze", `${out}-trace`, "--out", out, "--bootstrap", "0"]),
          // Staged: a failed analyze leaves no folder, or only what an earlier run completed.
          clean: async () => !(await pathExists(out)),
        };
      }
      // In process: something in the way of the output.
      const obstacle = pick(rng, ["out is a file", "parent is a file", "shards is a file"]);
      if (obstacle === "out is a file") await Deno.writeTextFile(out, "x");
      else if (obstacle === "parent is a file") await Deno.writeTextFile(`${out}-parent`, "x");
      else {
        await Deno.mkdir(out);
        await Deno.writeTextFile(`${out}/shards`, "x");
      }
      const target = obstacle === "parent is a file" ? `${out}-parent/t` : out;
      const writer = rng.next() < 0.5;
      return {
        label: `${writer ? "trace writer" : "import"}: ${obstacle}`,
        run: async () => {
          if (writer) await writeTrace(target);
          else await importJsonl(`${dir}/small.jsonl`, target);
        },
      };
    },
    teardown: () => Deno.remove(dir, { recursive: true }),
  };
}

/**
 * Concurrent writers of one trace, each holding the folder's lock as capture
 * does, with different shard sizes and random pauses: every run either
 * finishes or is refused in one sentence, and the trace is always whole.
 */
export async function concurrentTarget(): Promise<FuzzTarget> {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-fuzz-concurrent-" });
  const options = { numLayers: 2, numExperts: 4, topK: 2, tokensPerDoc: 5, seed: 9 };
  const docs = [...syntheticDocs({ ...options, domains: [{ name: "A", docs: 12 }] })];
  return {
    name: "concurrent captures into one --out (lock, resume)",
    validInputs: true,
    make: async (rng, i) => {
      const out = `${dir}/case${i}`;
      await Deno.mkdir(out);
      const runs = 2 + rng.int(3);
      const plans = Array.from({ length: runs }, () => ({
        rows: pick(rng, [5, 10, 20]),
        pause: rng.int(4),
      }));
      const capture = async (plan: { rows: number; pause: number }) => {
        await new Promise((r) => setTimeout(r, plan.pause));
        const lock = await lockFolder(out, "capture");
        try {
          const writer = await TraceWriter.open(out, {
            model: syntheticModel(options),
            capture: { ...syntheticCapture(options), settings: { shard_rows: 10 } },
          }, { rowsPerShard: plan.rows, encoders: 0, resume: true });
          for (const doc of docs) {
            if (writer.completedDocs.has(doc.doc)) continue;
            await writer.add(doc);
            if (plan.pause) await new Promise((r) => setTimeout(r, 0));
          }
          await writer.close();
        } finally {
          lock.release();
        }
      };
      return {
        label: `${runs} writers ${JSON.stringify(plans)}`,
        run: async () => {
          const results = await Promise.allSettled(plans.map(capture));
          for (const r of results) {
            if (r.status === "rejected" && !(r.reason instanceof DataError)) throw r.reason;
          }
          if (results.every((r) => r.status === "rejected")) {
            throw (results[0] as PromiseRejectedResult).reason;
          }
          // Whatever interleaving: the trace holds every document exactly once.
          const seen: number[] = [];
          const reader = await TraceReader.open(out);
          for await (const batch of reader.batches()) {
            for (let r = 0; r < batch.rows; r++) {
              if (r === 0 || batch.doc[r] !== batch.doc[r - 1]) seen.push(batch.doc[r]!);
            }
          }
          const expected = docs.map((d) => d.doc).join(",");
          if (
            seen.sort((a, b) => a - b).join(",") !== expected || !reader.manifest.capture.complete
          ) {
            throw new Error(`the trace holds documents ${seen.join(",")}, expected ${expected}`);
          }
        },
      };
    },
    teardown: () => Deno.remove(dir, { recursive: true }),
  };
}

/**
 * The launcher as a user runs it: fuzzed commands and paths (commas, spaces,
 * `..`, symlinks, files where folders belong). Every run exits 0, 1 or 2,
 * with one line on error and no stack trace, and nothing outside the case's
 * folder changes.
 */
export async function launcherTarget(): Promise<FuzzTarget> {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-fuzz-launcher-" });
  await writeTrace(`${dir}/trace`);
  await Deno.writeTextFile(`${dir}/sentinel.txt`, "untouched");
  const paths = [
    `${dir}/trace`,
    `${dir}/out`,
    `${dir}/out,${dir}/elsewhere`,
    `${dir}/with space`,
    `${dir}/sentinel.txt`,
    `${dir}/missing/deeper`,
    `${dir}/trace/../trace`,
    `${dir}/link`,
    "relative/out",
    "",
  ];
  await Deno.symlink(`${dir}/trace`, `${dir}/link`);
  const commands: string[][] = [
    ["inspect", "P"],
    ["analyze", "P", "--out", "P", "--bootstrap", "0"],
    ["simulate", "P", "--out", "P", "--bootstrap", "0", "--hardware", "P"],
    ["import", "P", "--out", "P"],
    ["merge", "P", "P", "--out", "P"],
    ["report", "--analysis", "P", "--simulation", "P", "--out", "P"],
  ];
  return {
    name: "the launcher (deno task moetrace)",
    make: async (rng, i) => {
      const work = `${dir}/case${i}`;
      await Deno.mkdir(work);
      const argv = pick(rng, commands).map((a) => a === "P" ? pick(rng, paths) : a);
      if (rng.next() < 0.2) argv.push(pick(rng, ["--bogus", "--json", "-h", "--seed", "x"]));
      return {
        label: `moetrace ${argv.map((a) => JSON.stringify(a)).join(" ")}`,
        run: async () => {
          const { code, stderr } = await new Deno.Command(Deno.execPath(), {
            args: [
              "run",
              "--no-check",
              "--allow-run",
              "--allow-read",
              "--allow-env",
              `${ROOT}/moetrace.ts`,
              ...argv,
            ],
            cwd: work,
            stdout: "null",
            stderr: "piped",
            env: { NO_COLOR: "1", XDG_RUNTIME_DIR: "/tmp" },
          }).output();
          const text = new TextDecoder().decode(stderr).trim();
          if ((await Deno.readTextFile(`${dir}/sentinel.txt`)) !== "untouched") {
            throw new Error("a file outside the outputs was written");
          }
          if (await pathExists(`${dir}/elsewhere`)) {
            throw new Error("a comma in --out granted a second folder");
          }
          if (code === 0) return;
          const lines = text.split("\n").filter((l) => !/^\w+: \[[#.]*\]/.test(l));
          if ((code === 1 || code === 2) && lines.length <= 1 && !/Uncaught|^\s+at /m.test(text)) {
            throw new DataError(lines[0]?.replace(/^moetrace: /, "") || "refused.");
          }
          throw new Error(`exit ${code}: ${text.slice(0, 400)}`);
        },
      };
    },
    teardown: () => Deno.remove(dir, { recursive: true }),
  };
}

/** The targets of this file with the share of the run's cases each gets (slow ones fewer). */
export async function moreTargets(): Promise<{ target: FuzzTarget; share: number }[]> {
  return [
    { target: await shardedIndexTarget(), share: 0.4 },
    { target: await corpusFolderTarget(), share: 0.4 },
    { target: await symlinkTarget(), share: 0.4 },
    { target: await reportInputsTarget(), share: 0.1 },
    { target: await fsErrorTarget(), share: 0.04 },
    { target: await concurrentTarget(), share: 0.2 },
    { target: await launcherTarget(), share: 0.04 },
  ];
}
