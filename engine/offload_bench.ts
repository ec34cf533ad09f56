/**
 * `moetrace bench offload [--large]`: issue 9's acceptance, end to end, on
 * fixtures/models/tiny-moe, or with `--large` on a Mixtral-shaped random
 * checkpoint whose expert uploads are a larger part of a token's time
 * (tiny-moe's 864 KiB experts take ~0.3 ms against ~59 ms of router readbacks
 * and compute per token, so there the transfer model is barely tested; on
 * llvmpipe no shape makes uploads dominate, README "Offloading with large
 * experts").
 *
 * 1. (`--large`) Writes the random checkpoint (LARGE: hidden 1024, FFN 3584,
 *    8 experts top-2, 44 MB per f32 expert) with tiny-moe's tokenizer into a
 *    temporary folder.
 * 2. Calibrates the machine as `bench engine --calibrate` does (engine/bench.ts
 *    `calibrate`, uploads timed at this checkpoint's expert size) and writes
 *    the hardware JSON into the temporary folder.
 * 3. Runs `generate` with every expert resident (the reference text and GPU
 *    memory), then `generate --offload lru:C [--prefetch speculative]` for C in
 *    k, k + 2, E, greedy, prompts × new tokens generated tokens each.
 * 4. Runs `simulate` on each offloaded trace with the calibrated hardware and
 *    the same policy, capacity, prefetch, budget and the checkpoint's dtype.
 *
 * Per setting it prints: uploads (measured.csv) against the simulation's
 * misses + prefetch_issued (targets: equal); the mean wall ms of the generated
 * tokens' decode steps (their sum is the decode's wall time, so this is the
 * statistic the simulation's ms_per_token = total / tokens predicts) against
 * the simulation's (target: within 20%), and their median; the predicted
 * share of a token spent uploading (the calibrated hardware file says
 * uploads do not overlap compute: the engine's single WebGPU queue runs them
 * before the layer's experts, prefetches included, and the simulator models
 * that); the generated token count (target ≥ 100); whether the text equals the
 * resident run's; the GPU memory for routed experts (MoeModel.expertGpuBytes:
 * the slots) against the resident run's (all E × M); and the load average
 * after it. Then, per setting with C < E, what it costs over lru:E (which
 * uploads each expert once), measured and predicted: the transfer model's
 * share of the error, with the compute calibration's cancelled.
 */
import { parse } from "csv-parse/sync";
import type { BenchOptions } from "../bench/measure.ts";
import { type Figure, printFigures } from "../bench/measure.ts";
import { DataError } from "../common/errors.ts";
import { pathExists } from "../common/fs.ts";
import { Rng } from "../common/random.ts";
import { simulateCommand } from "../cache/simulate.ts";
import { calibrate } from "./bench.ts";
import { writeRandomMixtral } from "./random_checkpoint.ts";
import { generate, type GenerateSummary } from "./generate.ts";
import { createGpuContext } from "./gpu.ts";
import { loadModel } from "./model.ts";
import type { OffloadSettings } from "./offload.ts";

const TINY_MOE = new URL("../fixtures/models/tiny-moe/", import.meta.url).pathname;

/** A checkpoint the benchmark runs on, and the generation it asks of it. */
interface Part {
  dir: string;
  /** How the figures' title names the checkpoint. */
  name: string;
  prompts: string[];
  newTokens: number;
}

/** Two prompts (prose and code) that tiny-moe continues for 64 greedy tokens without an end-of-sequence token. */
const TINY: Omit<Part, "dir"> = {
  name: "fixtures/models/tiny-moe",
  prompts: ["The history of the city", "function add(a, b) {"],
  newTokens: 64,
};

/**
 * `--large`: Mixtral's layout (8 experts, top-2, SwiGLU experts, grouped-query
 * attention) at hidden 1024, FFN 3584: one expert is 3 × 1024 × 3584 f32 =
 * 44 MB, which llvmpipe uploads in ~14 ms and computes in 18–27 ms for one
 * token, against ~12 ms per router readback. Two layers keep the checkpoint
 * at 0.75 GB and the part at ~3 minutes. Vocabulary 4096 = tiny-moe's, whose tokenizer it
 * borrows; the random weights make arbitrary text, which only has to be the
 * same with and without offloading. The same two prompts, 50 tokens each: no
 * end-of-sequence token in them for seed 1 (the generated-token target
 * checks it).
 */
const LARGE_SHAPE = {
  hidden: 1024,
  ffn: 3584,
  layers: 2,
  heads: 16,
  kvHeads: 4,
  experts: 8,
  topK: 2,
  vocab: 4096,
  seed: 1,
};
const LARGE: Omit<Part, "dir"> = {
  name: "random Mixtral-shaped checkpoint (hidden 1024, FFN 3584, 2 layers, 44 MB f32 experts)",
  prompts: TINY.prompts,
  newTokens: 50,
};
/** simulate --dtype of each checkpoint dtype (the expert bytes the engine actually moves). */
const SIM_DTYPE: Record<string, string> = { float32: "fp32", float16: "fp16", bfloat16: "bf16" };

/** Median of a non-empty list. */
function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 === 1 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
}

type Csv = Record<string, string>[];

async function readCsv(path: string): Promise<Csv> {
  return parse(await Deno.readTextFile(path), { columns: true }) as Csv;
}

/** Prints the figures (and returns them, for `bench gpu`). */
export async function benchOffload(options: BenchOptions): Promise<Figure[]> {
  Deno.env.set("XDG_RUNTIME_DIR", Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp");
  const needs = options.large ? "tokenizer.json" : "model.safetensors";
  if (!(await pathExists(`${TINY_MOE}${needs}`))) {
    throw new DataError(
      `bench offload needs the fixture ${TINY_MOE}${needs}; run deno task fixtures.`,
    );
  }
  const root = await Deno.makeTempDir({ prefix: "moetrace-bench-offload-" });
  try {
    if (!options.large) return await runPart({ ...TINY, dir: TINY_MOE }, root, options);
    const dir = `${root}/large`;
    await writeRandomMixtral(dir, LARGE_SHAPE);
    for (const file of ["tokenizer.json", "tokenizer_config.json"]) {
      await Deno.copyFile(`${TINY_MOE}${file}`, `${dir}/${file}`);
    }
    return await runPart({ ...LARGE, dir }, root, options);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

/** Steps 2–4 of the header on one checkpoint, temporary files under `root`. */
async function runPart(part: Part, root: string, options: BenchOptions): Promise<Figure[]> {
  // ---- 2. calibration
  const probe = await createGpuContext();
  const adapter = probe.adapterName;
  probe.device.destroy();
  const resident = await loadModel(part.dir, { maxBatchTokens: 2048 });
  const { top_k: k, num_experts: E, dtype } = resident.facts;
  const M = resident.facts.moe_layers.length;
  const rng = new Rng(3);
  const prompt = Uint32Array.from({ length: 16 }, () => 3 + rng.int(resident.vocabSize - 3));
  const hardware = await calibrate(resident, prompt, {
    adapter,
    modelName: part.name,
    by: "bench offload",
  });
  resident.destroy();
  const hardwareFile = `${root}/hardware.json`;
  await Deno.writeTextFile(hardwareFile, JSON.stringify(hardware, null, 2) + "\n");
  const simDtype = SIM_DTYPE[dtype];
  if (simDtype === undefined) {
    throw new DataError(`${part.name} has dtype ${dtype}, expected f32/16.`);
  }

  // ---- 3. the resident reference, then the offloaded runs and 4. their simulation
  const prompts = `${root}/prompts.txt`;
  await Deno.writeTextFile(prompts, part.prompts.join("\n") + "\n");
  const run = (out: string, offload?: OffloadSettings): Promise<GenerateSummary> =>
    generate({
      model: part.dir,
      prompts,
      out,
      chat: false,
      maxNewTokens: part.newTokens,
      temperature: 0,
      seed: 0,
      print: false,
      ...(offload ? { offload } : {}),
    });
  const reference = await run(`${root}/resident`);
  const mib = (bytes: number) => bytes / 2 ** 20;
  const figures: Figure[] = [
    { name: "calibrated upload bandwidth", value: hardware.bandwidth_gb_s, unit: "GB/s" },
    { name: "calibrated upload latency", value: hardware.latency_us, unit: "µs" },
    {
      name: "calibrated attention + router per layer",
      value: hardware.attention_ms_per_layer!,
      unit: "ms",
    },
    { name: "calibrated one active expert", value: hardware.expert_ms!, unit: "ms" },
    {
      name: "calibrated embedding + LM head + sampling",
      value: hardware.other_ms_per_token!,
      unit: "ms",
    },
    {
      name: "calibrated router readback per MoE layer",
      value: hardware.readback_ms_per_layer!,
      unit: "ms",
    },
    {
      name: "resident: GPU memory for routed experts (E × M)",
      value: mib(reference.expertGpuBytes),
      unit: "MiB",
    },
    { name: "resident: GPU memory in all", value: mib(reference.gpuBytes), unit: "MiB" },
  ];
  /** Mean measured and predicted ms/token per setting, for the differences against lru:E. */
  const means = new Map<string, { measured: number; predicted: number }>();
  for (const capacity of [k, k + 2, E]) {
    for (const prefetch of ["none", "speculative"] as const) {
      const name = `lru:${capacity} ${prefetch}`;
      const settings: OffloadSettings = {
        policy: "lru",
        capacity,
        prefetch,
        budget: "per-layer",
      };
      const trace = `${root}/trace-${capacity}-${prefetch}`;
      const summary = await run(trace, settings);
      const sim = `${root}/sim-${capacity}-${prefetch}`;
      await simulateCommand(trace, {
        out: sim,
        policy: "lru",
        capacity: String(capacity),
        prefetch,
        hardware: hardwareFile,
        dtype: simDtype,
        budget: "per-layer",
        seed: 0,
      });
      const measured = await readCsv(`${trace}/measured.csv`);
      const uploads = measured.reduce((a, r) => a + Number(r.uploads), 0);
      const steps = measured.filter((r) => r.phase === "1").map((r) => Number(r.ms));
      const row = (await readCsv(`${sim}/simulation.csv`)).find((r) => r.layer === "all")!;
      const loads = Number(row.misses) + Number(row.prefetch_issued);
      const predicted = Number(row.ms_per_token);
      // Every upload's time per token, as the simulation charges each: latency + bytes / bandwidth.
      const transferMs = Number(row.loads_per_token) * hardware.latency_us / 1000 +
        Number(row.bytes_per_token) / (hardware.bandwidth_gb_s * 1e6);
      const meanMs = steps.reduce((a, b) => a + b, 0) / steps.length;
      const same = summary.completions.every((c, i) => c === reference.completions[i]);
      means.set(name, { measured: meanMs, predicted });
      figures.push(
        {
          name: `${name}: generated tokens`,
          value: steps.length,
          unit: "",
          target: 100,
          direction: "min",
        },
        { name: `${name}: uploads`, value: uploads, unit: "" },
        { name: `${name}: simulated misses + prefetches`, value: loads, unit: "" },
        {
          name: `${name}: |uploads − simulated|`,
          value: Math.abs(uploads - loads),
          unit: "",
          target: 0,
          direction: "max",
        },
        { name: `${name}: measured median ms/token`, value: median(steps), unit: "ms" },
        { name: `${name}: measured mean ms/token`, value: meanMs, unit: "ms" },
        { name: `${name}: predicted ms/token`, value: predicted, unit: "ms" },
        { name: `${name}: predicted / measured mean`, value: predicted / meanMs, unit: "" },
        {
          name: `${name}: |predicted − measured mean| / measured mean`,
          value: 100 * Math.abs(predicted - meanMs) / meanMs,
          unit: "%",
          target: 20,
          direction: "max",
        },
        {
          name: `${name}: predicted upload time / predicted ms`,
          value: 100 * transferMs / predicted,
          unit: "%",
        },
        {
          name: `${name}: text differs from resident run`,
          value: same ? 0 : 1,
          unit: "",
          target: 0,
          direction: "max",
        },
        {
          name: `${name}: GPU memory for routed experts`,
          value: mib(summary.expertGpuBytes),
          unit: "MiB",
        },
        {
          name: `${name}: expert memory / resident (C/E = ${(capacity / E).toFixed(3)})`,
          value: summary.expertGpuBytes / reference.expertGpuBytes,
          unit: "",
          target: capacity / E,
          direction: "max",
        },
        { name: `${name}: GPU memory in all`, value: mib(summary.gpuBytes), unit: "MiB" },
        // Compute runs on the shared CPU cores here: another job's load slows it between settings.
        { name: `${name}: load average (1 min) after it`, value: Deno.loadavg()[0]!, unit: "" },
      );
    }
  }
  // What the uploads added: each setting against lru:E with the same prefetch, which uploads
  // only the first E × M experts, measured and predicted (compute calibration errors cancel).
  for (const capacity of [k, k + 2]) {
    for (const prefetch of ["none", "speculative"] as const) {
      const at = means.get(`lru:${capacity} ${prefetch}`)!;
      const all = means.get(`lru:${E} ${prefetch}`)!;
      figures.push(
        {
          name: `lru:${capacity} ${prefetch} − lru:${E}: measured ms/token`,
          value: at.measured - all.measured,
          unit: "ms",
        },
        {
          name: `lru:${capacity} ${prefetch} − lru:${E}: predicted ms/token`,
          value: at.predicted - all.predicted,
          unit: "ms",
        },
      );
    }
  }
  printFigures(
    `bench offload: ${part.name} (${M} MoE layers, ${E} experts, top-${k}) on ${adapter}, ${part.prompts.length} prompts × ${part.newTokens} greedy tokens per setting`,
    figures,
    options.json,
  );
  return figures;
}
