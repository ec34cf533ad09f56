/**
 * `moetrace bench offload`: issue 9's acceptance, end to end, on
 * fixtures/models/tiny-moe.
 *
 * 1. Calibrates the machine as `bench engine --calibrate` does (engine/bench.ts
 *    `calibrate`) and writes the hardware JSON into a temporary folder.
 * 2. Runs `generate` with every expert resident (the reference text and GPU
 *    memory), then `generate --offload lru:C [--prefetch speculative]` for C in
 *    k, k + 2, E, greedy, PROMPTS × NEW_TOKENS generated tokens each.
 * 3. Runs `simulate` on each offloaded trace with the calibrated hardware and
 *    the same policy, capacity, prefetch, budget and the checkpoint's dtype.
 *
 * Per setting it prints: uploads (measured.csv) against the simulation's
 * misses + prefetch_issued (targets: equal), the median wall ms of the
 * generated tokens' decode steps against the simulation's ms/token (target:
 * within 20%), the generated token count (target ≥ 100), whether the text
 * equals the resident run's, and the GPU memory for routed experts
 * (MoeModel.expertGpuBytes: the slots) against the resident run's (all E × M).
 */
import { parse } from "csv-parse/sync";
import type { BenchOptions } from "../bench/bench.ts";
import { type Figure, printFigures } from "../bench/measure.ts";
import { DataError } from "../common/errors.ts";
import { pathExists } from "../common/fs.ts";
import { Rng } from "../common/random.ts";
import { simulateCommand } from "../cache/simulate.ts";
import { calibrate } from "./bench.ts";
import { generate, type GenerateSummary } from "./generate.ts";
import { createGpuContext } from "./gpu.ts";
import { loadModel } from "./model.ts";
import type { OffloadSettings } from "./offload.ts";

const TINY_MOE = new URL("../fixtures/models/tiny-moe/", import.meta.url).pathname;
/** Two prompts (prose and code) that tiny-moe continues for NEW_TOKENS greedy tokens without an end-of-sequence token. */
const PROMPTS = ["The history of the city", "function add(a, b) {"];
const NEW_TOKENS = 64;
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

export async function benchOffload(options: BenchOptions): Promise<void> {
  Deno.env.set("XDG_RUNTIME_DIR", Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp");
  if (!(await pathExists(`${TINY_MOE}model.safetensors`))) {
    throw new DataError(
      `bench offload needs the trained fixture ${TINY_MOE}model.safetensors; run deno task fixtures.`,
    );
  }
  const root = await Deno.makeTempDir({ prefix: "moetrace-bench-offload-" });
  try {
    // ---- 1. calibration
    const probe = await createGpuContext();
    const adapter = probe.adapterName;
    probe.device.destroy();
    const resident = await loadModel(TINY_MOE, { maxBatchTokens: 2048 });
    const { top_k: k, num_experts: E, dtype } = resident.facts;
    const M = resident.facts.moe_layers.length;
    const rng = new Rng(3);
    const prompt = Uint32Array.from({ length: 16 }, () => 3 + rng.int(resident.vocabSize - 3));
    const hardware = await calibrate(resident, prompt, {
      adapter,
      modelName: "fixtures/models/tiny-moe",
      by: "bench offload",
    });
    resident.destroy();
    const hardwareFile = `${root}/hardware.json`;
    await Deno.writeTextFile(hardwareFile, JSON.stringify(hardware, null, 2) + "\n");
    const simDtype = SIM_DTYPE[dtype];
    if (simDtype === undefined) {
      throw new DataError(`tiny-moe has dtype ${dtype}, expected f32/16.`);
    }

    // ---- 2. the resident reference, then the offloaded runs and 3. their simulation
    const prompts = `${root}/prompts.txt`;
    await Deno.writeTextFile(prompts, PROMPTS.join("\n") + "\n");
    const run = (out: string, offload?: OffloadSettings): Promise<GenerateSummary> =>
      generate({
        model: TINY_MOE,
        prompts,
        out,
        chat: false,
        maxNewTokens: NEW_TOKENS,
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
        const measuredMs = median(steps);
        const same = summary.completions.every((c, i) => c === reference.completions[i]);
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
          { name: `${name}: measured median ms/token`, value: measuredMs, unit: "ms" },
          { name: `${name}: predicted ms/token`, value: predicted, unit: "ms" },
          { name: `${name}: predicted / measured`, value: predicted / measuredMs, unit: "" },
          {
            name: `${name}: |predicted − measured| / measured`,
            value: 100 * Math.abs(predicted - measuredMs) / measuredMs,
            unit: "%",
            target: 20,
            direction: "max",
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
        );
      }
    }
    printFigures(
      `bench offload: fixtures/models/tiny-moe (${M} MoE layers, ${E} experts, top-${k}) on ${adapter}, ${PROMPTS.length} prompts × ${NEW_TOKENS} greedy tokens per setting`,
      figures,
      options.json,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}
