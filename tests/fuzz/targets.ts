/**
 * Fuzz targets: for each input moetrace accepts from strangers, a valid
 * example, a way to mutate it, and the call that must either succeed or fail
 * with one clean sentence.
 */
import { Rng } from "../../common/random.ts";
import { readCorpus } from "../../corpus/corpus.ts";
import { importJsonl } from "../../trace/import/interchange.ts";
import { writeSyntheticTrace } from "../../trace/synthetic.ts";
import { TraceReader } from "../../trace/mod.ts";
import { parseCommand } from "../../main.ts";
import { type FuzzTarget, mutateBytes, mutateJson, pick } from "./fuzz.ts";
import { DataError } from "../../common/errors.ts";
import { pathExists } from "../../common/fs.ts";
import { moreTargets } from "./targets_more.ts";

const encoder = new TextEncoder();

/** Mutates one line of a JSONL text, as JSON or as bytes. */
function mutateJsonl(rng: Rng, lines: unknown[]): { text: Uint8Array; label: string } {
  const index = rng.int(lines.length);
  if (rng.next() < 0.6) {
    const { value, label } = mutateJson(rng, lines[index]);
    const copy = [...lines];
    copy[index] = value;
    return {
      text: encoder.encode(copy.map((l) => JSON.stringify(l)).join("\n") + "\n"),
      label: `line ${index + 1}: ${label}`,
    };
  }
  const { bytes, label } = mutateBytes(
    rng,
    encoder.encode(lines.map((l) => JSON.stringify(l)).join("\n") + "\n"),
  );
  return { text: bytes, label };
}

export async function interchangeTarget(): Promise<FuzzTarget> {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-fuzz-import-" });
  const rng = new Rng(99);
  const lines: unknown[] = [{ moetrace_import: 1, num_layers: 2, num_experts: 6, top_k: 2 }];
  for (let d = 0; d < 3; d++) {
    const T = 2 + d;
    lines.push({
      domain: ["ArXiv", "Github", "EuroParl"][d],
      tokens: Array.from({ length: T }, () => rng.int(100)),
      experts: Array.from({ length: T }, () => [[0, 1], [2 + rng.int(2), 5]]),
      weights: Array.from({ length: T }, () => [[0.7, 0.3], [0.5, 0.5]]),
    });
  }
  return {
    name: "interchange JSONL (import)",
    make: async (caseRng, i) => {
      const { text, label } = mutateJsonl(caseRng, lines);
      const file = `${dir}/case${i}.jsonl`;
      const out = `${dir}/case${i}-trace`;
      await Deno.writeFile(file, text);
      return {
        label: `import ${label}`,
        run: async () => {
          await importJsonl(file, out);
        },
        clean: async () => !(await pathExists(out)) && !(await pathExists(`${out}.partial`)),
      };
    },
    teardown: () => Deno.remove(dir, { recursive: true }),
  };
}

export async function traceTarget(): Promise<FuzzTarget> {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-fuzz-trace-" });
  const original = `${dir}/original`;
  await writeSyntheticTrace(original, {
    numLayers: 2,
    numExperts: 4,
    topK: 2,
    tokensPerDoc: 8,
    probs: true,
    lookahead: 1,
    domains: [{ name: "A", docs: 3 }, { name: "B", docs: 3 }],
  }, { rowsPerShard: 20 });
  const manifest = JSON.parse(await Deno.readTextFile(`${original}/manifest.json`));
  const shards = manifest.shards.map((s: { file: string }) => s.file) as string[];
  const shardBytes = await Promise.all(shards.map((f) => Deno.readFile(`${original}/${f}`)));
  return {
    name: "trace directory (reader)",
    make: async (rng, i) => {
      const copy = `${dir}/case${i}`;
      await Deno.mkdir(`${copy}/shards`, { recursive: true });
      let manifestValue: unknown = manifest;
      const files: Uint8Array[] = shardBytes.map((b) => b);
      let label: string;
      const kind = rng.int(3);
      if (kind === 0) {
        const m = mutateJson(rng, manifest);
        manifestValue = m.value;
        label = `manifest: ${m.label}`;
      } else if (kind === 1) {
        const which = rng.int(files.length);
        const m = mutateBytes(rng, files[which]!);
        files[which] = m.bytes;
        label = `${shards[which]}: ${m.label}`;
      } else {
        const which = rng.int(files.length);
        files[which] = new Uint8Array(0);
        label = `${shards[which]}: deleted`;
      }
      await Deno.writeTextFile(`${copy}/manifest.json`, JSON.stringify(manifestValue));
      for (let s = 0; s < shards.length; s++) {
        if (files[s]!.length > 0 || kind !== 2) {
          await Deno.writeFile(`${copy}/${shards[s]}`, files[s]!);
        }
      }
      return {
        label,
        run: async () => {
          const reader = await TraceReader.open(copy);
          for await (const _ of reader.documents()) { /* read every row */ }
        },
      };
    },
    teardown: () => Deno.remove(dir, { recursive: true }),
  };
}

export async function pileTarget(): Promise<FuzzTarget> {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-fuzz-pile-" });
  const source = new URL("../data/mini-pile.jsonl", import.meta.url).pathname;
  const lines = (await Deno.readTextFile(source)).trim().split("\n").map((l) => JSON.parse(l));
  const zst = await Deno.readFile(`${source}.zst`);
  return {
    name: "Pile JSONL and .jsonl.zst (corpus)",
    make: async (rng, i) => {
      let path: string;
      let label: string;
      if (rng.next() < 0.3) {
        const m = mutateBytes(rng, zst);
        path = `${dir}/case${i}.jsonl.zst`;
        await Deno.writeFile(path, m.bytes);
        label = `zst ${m.label}`;
      } else {
        const m = mutateJsonl(rng, lines);
        path = `${dir}/case${i}.jsonl`;
        await Deno.writeFile(path, m.text);
        label = `jsonl ${m.label}`;
      }
      return {
        label,
        run: async () => {
          for await (const _ of readCorpus(path)) { /* read every document */ }
        },
      };
    },
    teardown: () => Deno.remove(dir, { recursive: true }),
  };
}

const COMMAND_WORDS = [
  "capture",
  "generate",
  "import",
  "inspect",
  "analyze",
  "simulate",
  "report",
  "bench",
];
const FLAG_WORDS = [
  "--out",
  "--model",
  "--corpus",
  "--max-tokens",
  "--batch-tokens",
  "--probs",
  "--lookahead",
  "--seed",
  "--bootstrap",
  "--policy",
  "--capacity",
  "--budget",
  "--temperature",
  "--chat",
  "--json",
  "--bogus",
  "-x",
  "--",
  "--help",
];
const VALUE_WORDS = [
  "1",
  "0",
  "-1",
  "1e9",
  "NaN",
  "x",
  "",
  "lru,belady",
  "2,4",
  "per-layer",
  "global",
  "3.5",
  "a b",
];

export function cliTarget(): FuzzTarget {
  return {
    name: "command-line flags (parse)",
    // deno-lint-ignore require-await
    make: async (rng) => {
      const argv = [pick(rng, COMMAND_WORDS)];
      const n = rng.int(7);
      for (let j = 0; j < n; j++) {
        argv.push(rng.next() < 0.5 ? pick(rng, FLAG_WORDS) : pick(rng, VALUE_WORDS));
      }
      return {
        label: `moetrace ${argv.join(" ")}`,
        // deno-lint-ignore require-await
        run: async () => {
          parseCommand(argv[0]!, argv.slice(1));
        },
      };
    },
  };
}

/**
 * Every target, for the fuzz test and `deno task fuzz`, with the share of a
 * run's cases per target each gets: 1 for the in-process single-file targets,
 * less for those that start processes or write whole outputs.
 */
export async function allTargets(): Promise<{ target: FuzzTarget; share: number }[]> {
  const single = [
    await interchangeTarget(),
    await traceTarget(),
    await pileTarget(),
    cliTarget(),
    await safetensorsTarget(),
    await configTarget(),
    await hardwareTarget(),
  ];
  return [
    ...single.map((target) => ({ target, share: 1 })),
    // Each chat template case starts a process (see tokenizerTarget).
    { target: await tokenizerTarget(), share: 0.4 },
    ...(await moreTargets()),
  ];
}

/** The cases a target gets in a run of `cases` per target: its share, at least 2. */
export function casesFor(cases: number, share: number): number {
  return Math.max(2, Math.round(cases * share));
}

const SOURCE_MODEL = new URL("../../fixtures/models/tiny-mixtral-swa/", import.meta.url).pathname;

/** A fresh copy of the small fixture checkpoint for one case. */
async function copyModel(to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for (
    const name of ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
  ) {
    await Deno.copyFile(`${SOURCE_MODEL}${name}`, `${to}/${name}`);
  }
}

/** Opens a checkpoint and reads every tensor the config expects, as the engine does. */
async function loadWeights(dir: string): Promise<void> {
  const { openCheckpoint, readFloat32, expectedTensors } = await import(
    "../../engine/checkpoint.ts"
  );
  const checkpoint = await openCheckpoint(dir);
  for (const t of expectedTensors(checkpoint.config)) await readFloat32(checkpoint, t.name);
}

export async function safetensorsTarget(): Promise<FuzzTarget> {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-fuzz-st-" });
  const original = await Deno.readFile(`${SOURCE_MODEL}model.safetensors`);
  const headerLength = Number(new DataView(original.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(original.subarray(8, 8 + headerLength)));
  const body = original.subarray(8 + headerLength);
  return {
    name: "safetensors headers and bodies (checkpoint)",
    make: async (rng, i) => {
      const model = `${dir}/case${i}`;
      await copyModel(model);
      let bytes: Uint8Array;
      let label: string;
      const kind = rng.int(5);
      if (kind === 4) {
        bytes = original.slice();
        const at = 8 + headerLength + 4 * rng.int(body.length / 4);
        const value = pick(rng, [0x7fc00000, 0x7f800000, 0xff800000]);
        new DataView(bytes.buffer).setUint32(at, value, true);
        label = `weight at byte ${at} = ${value.toString(16)} (NaN/Inf)`;
      } else if (kind === 0) {
        const m = mutateJson(rng, header);
        const json = encoder.encode(JSON.stringify(m.value));
        bytes = new Uint8Array(8 + json.length + body.length);
        new DataView(bytes.buffer).setBigUint64(0, BigInt(json.length), true);
        bytes.set(json, 8);
        bytes.set(body, 8 + json.length);
        label = `header ${m.label}`;
      } else if (kind === 1) {
        const m = mutateBytes(rng, original.subarray(0, 8 + headerLength));
        bytes = new Uint8Array(m.bytes.length + body.length);
        bytes.set(m.bytes);
        bytes.set(body, m.bytes.length);
        label = `header bytes ${m.label}`;
      } else if (kind === 2) {
        const at = rng.int(original.length);
        bytes = original.slice(0, at);
        label = `truncate at ${at}`;
      } else {
        bytes = original.slice();
        const value = pick(rng, [2 ** 40, 2 ** 62, 0, headerLength + 1, headerLength - 1]);
        new DataView(bytes.buffer).setBigUint64(0, BigInt(value), true);
        label = `header length ${value}`;
      }
      await Deno.writeFile(`${model}/model.safetensors`, bytes);
      return { label, run: () => loadWeights(model) };
    },
    teardown: () => Deno.remove(dir, { recursive: true }),
  };
}

export async function configTarget(): Promise<FuzzTarget> {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-fuzz-config-" });
  const config = JSON.parse(await Deno.readTextFile(`${SOURCE_MODEL}config.json`));
  return {
    name: "config.json (checkpoint)",
    make: async (rng, i) => {
      const model = `${dir}/case${i}`;
      await copyModel(model);
      const m = mutateJson(rng, config);
      await Deno.writeTextFile(`${model}/config.json`, JSON.stringify(m.value));
      return { label: `config ${m.label}`, run: () => loadWeights(model) };
    },
    teardown: () => Deno.remove(dir, { recursive: true }),
  };
}

export async function tokenizerTarget(): Promise<FuzzTarget> {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-fuzz-tok-" });
  const tokenizer = JSON.parse(await Deno.readTextFile(`${SOURCE_MODEL}tokenizer.json`));
  const tokenizerConfig = JSON.parse(
    await Deno.readTextFile(`${SOURCE_MODEL}tokenizer_config.json`),
  );
  const templates = [
    "{% for m in messages %}{{ m.content }}{% endfor %}",
    "{% for i in range(1000000000) %}x{% endfor %}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "{{ raise_exception('no system role') }}",
    "{{ messages[5].content }}",
    "{% if %}",
    "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}",
  ];
  const { TextTokenizer } = await import("../../engine/tokenizer.ts");
  // Chat templates run in a child process, as the CLI runs them: Deno cannot interrupt a
  // worker's synchronous code, so a template that loops keeps its stopped worker's thread
  // (and the memory it goes on allocating) until the process exits; in this harness's one
  // process that grew past 20 GiB in 40 cases.
  const child = `${dir}/render.ts`;
  await Deno.writeTextFile(
    child,
    `import { TextTokenizer } from ${
      JSON.stringify(new URL("../../engine/tokenizer.ts", import.meta.url).href)
    };
     import { isUserError } from ${
      JSON.stringify(new URL("../../common/errors.ts", import.meta.url).href)
    };
     try {
       const t = await TextTokenizer.load(Deno.args[0]);
       if (t.hasChatTemplate) await t.encodeChat([{ role: "user", content: "hi" }], 1000);
     } catch (error) {
       if (!isUserError(error)) throw error;
       console.error(error.message);
       Deno.exit(1);
     }
     Deno.exit(0);`,
  );
  const config = new URL("../../deno.json", import.meta.url).pathname;
  const render = async (model: string) => {
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-check", "-A", "--config", config, child, model],
      stdout: "null",
      stderr: "piped",
      env: { NO_COLOR: "1", XDG_RUNTIME_DIR: "/tmp" },
    }).output();
    const text = new TextDecoder().decode(stderr).split("\n")
      .filter((l) => l !== "" && !l.includes("Blocking waiting for file lock")).join("\n");
    if (code === 0) return;
    if (code === 1 && !text.includes("\n")) throw new DataError(text);
    throw new Error(`exit ${code}: ${text.slice(0, 300)}`);
  };
  return {
    name: "tokenizer files and chat templates",
    make: async (rng, i) => {
      const model = `${dir}/case${i}`;
      await Deno.mkdir(model, { recursive: true });
      let tokenizerText = JSON.stringify(tokenizer);
      let configValue: unknown = tokenizerConfig;
      let label: string;
      const kind = rng.int(3);
      if (kind === 0) {
        const m = mutateJson(rng, tokenizer);
        tokenizerText = JSON.stringify(m.value);
        label = `tokenizer.json ${m.label}`;
      } else if (kind === 1) {
        const m = mutateJson(rng, tokenizerConfig);
        configValue = m.value;
        label = `tokenizer_config.json ${m.label}`;
      } else {
        const template = pick(rng, templates);
        configValue = { ...tokenizerConfig, chat_template: template };
        label = `chat template ${JSON.stringify(template)}`;
      }
      await Deno.writeTextFile(`${model}/tokenizer.json`, tokenizerText);
      await Deno.writeTextFile(`${model}/tokenizer_config.json`, JSON.stringify(configValue));
      return {
        label,
        run: async () => {
          const t = await TextTokenizer.load(model);
          t.encode("The router sends each token to two experts.");
          if (t.hasChatTemplate) await render(model);
        },
      };
    },
    teardown: () => Deno.remove(dir, { recursive: true }),
  };
}

export async function hardwareTarget(): Promise<FuzzTarget> {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-fuzz-hw-" });
  const { HARDWARE_PRESETS, loadHardware } = await import("../../cache/hardware.ts");
  const valid = Object.values(HARDWARE_PRESETS)[0];
  return {
    name: "hardware JSON (simulate --hardware)",
    make: async (rng, i) => {
      const path = `${dir}/case${i}.json`;
      let label: string;
      if (rng.next() < 0.8) {
        const m = mutateJson(rng, valid);
        await Deno.writeTextFile(path, JSON.stringify(m.value));
        label = m.label;
      } else {
        const m = mutateBytes(rng, encoder.encode(JSON.stringify(valid)));
        await Deno.writeFile(path, m.bytes);
        label = m.label;
      }
      return {
        label: `hardware ${label}`,
        run: async () => {
          await loadHardware(path);
        },
      };
    },
    teardown: () => Deno.remove(dir, { recursive: true }),
  };
}
