/**
 * `moetrace bench cache`: the replay's speed on 1,000,000 tokens × 32 layers ×
 * top-2 (E = 8, sticky routing, speculative picks with lookahead 1), generated
 * in memory (cache/synthetic.ts) so the figures measure the simulator, not
 * trace decoding (`bench trace` measures that).
 *
 * MOETRACE_BENCH_CACHE_TOKENS changes the length, MOETRACE_BENCH_CACHE_SWEEP=0
 * skips the sweep (quick runs), MOETRACE_BENCH_CACHE_PROCESS=0 the whole-process
 * runs.
 *
 * Whole process (issue 19): the real CLI (`deno task moetrace simulate`, a
 * child process) replays LRU at 64 and 128 of the 256 experts (32 layers ×
 * E = 8) under a global budget on 1,000,000 tokens × 32 layers × top-2
 * written to disk as Parquet and as Arrow IPC: wall and CPU seconds from start to exit, and
 * the share of the wall spent reading the trace. libCacheSim (C, one thread)
 * took 4.6 s for the same replay on the machine; it cannot be
 * installed here (no network), so that figure is quoted, not measured.
 *
 * Targets (issue 6): ≥ 20,000,000 expert accesses/s for one LRU replay; a
 * sweep of 8 policies × 7 capacities × 3 prefetchers (none, speculative,
 * oracle) with one dtype and one machine in under 2 minutes. Batch-8 replay
 * (`simulate --batch 8`, issue 19) is reported beside them: trace accesses
 * consumed per second, and the cache accesses (the unions) it makes.
 */
import type { BenchOptions } from "../bench/measure.ts";
import { type Figure, medianSeconds, printFigures, rssMiB } from "../bench/measure.ts";
import { syntheticModel } from "../trace/synthetic.ts";
import { policyOptions } from "./expert_cache.ts";
import { createPolicy, POLICY_NAMES } from "./policies/mod.ts";
import { parsePrefetch } from "./prefetch/mod.ts";
import { replay } from "./replay.ts";
import { lruStackDistances } from "./stack_distance.ts";
import { runSweep } from "./sweep.ts";
import { batchSchedule, replayBatch } from "./batch.ts";
import { parallelStackDistances } from "./stack_parallel.ts";
import { syntheticAccessTrace } from "./synthetic.ts";
import { stepCosts } from "./costs.ts";
import { DTYPES } from "./dtypes.ts";
import { HARDWARE_PRESETS } from "./hardware.ts";
import { TraceWriter } from "../trace/mod.ts";
import { syntheticCapture } from "../trace/synthetic.ts";
import process from "node:process";
import { fileURLToPath } from "node:url";

/** CPU seconds of this process (all threads, workers included) spent in `fn`. */
async function cpuSeconds(fn: () => Promise<void> | void): Promise<number> {
  const start = process.cpuUsage();
  await fn();
  const used = process.cpuUsage(start);
  return (used.user + used.system) / 1e6;
}

const TOKENS = Number(Deno.env.get("MOETRACE_BENCH_CACHE_TOKENS") ?? 1_000_000);
const LAYERS = 32;
const EXPERTS = 8;
const TOP_K = 2;

export async function benchCache(options: BenchOptions): Promise<void> {
  const model = syntheticModel({ numLayers: LAYERS, numExperts: EXPERTS, topK: TOP_K });
  const generateStart = performance.now();
  const trace = syntheticAccessTrace({
    tokens: TOKENS,
    layers: LAYERS,
    experts: EXPERTS,
    topK: TOP_K,
    stickiness: 0.5,
    memory: "geometric",
    lookahead: 1,
    seed: 1,
  });
  const generateSeconds = (performance.now() - generateStart) / 1000;
  const accesses = trace.chosen.length;
  const costs = stepCosts(HARDWARE_PRESETS.pcie4!, DTYPES.bf16!, model);

  // One LRU replay at capacity 4 per layer (fresh policy per repeat), with its
  // timing model, and counting hits and misses only.
  const lruReplay = (timed: boolean) => () => {
    replay(trace, {
      policy: createPolicy(
        "lru",
        policyOptions({ layers: LAYERS, experts: EXPERTS, topK: TOP_K, capacity: 4 }),
      ),
      budget: "per-layer",
      prefetcher: null,
      costs: timed ? [costs] : [],
    });
  };
  const lruSeconds = await medianSeconds(3, lruReplay(true));
  const lruCpu = await cpuSeconds(lruReplay(true));
  const countSeconds = await medianSeconds(3, lruReplay(false));
  const stackSeconds = await medianSeconds(1, () => {
    lruStackDistances(trace, "per-layer");
  });
  // `simulate --batch 8`: the schedule (unions of 8 documents per step) is
  // built once per trace, then replayed by each policy, here LRU at 4 per layer
  // with its timing model.
  let schedule = batchSchedule(trace, 8);
  const scheduleSeconds = await medianSeconds(1, () => {
    schedule = batchSchedule(trace, 8);
  });
  const batchSeconds = await medianSeconds(3, () => {
    replayBatch(schedule, {
      policy: createPolicy(
        "lru",
        policyOptions({ layers: LAYERS, experts: EXPERTS, topK: TOP_K, capacity: 4 }),
      ),
      budget: "per-layer",
      costs: [costs],
      topK: TOP_K,
    });
  });
  // A global budget (one partition of 256 keys) counts with a Fenwick tree:
  // the pass a single-policy LRU simulate runs, whole and split over the cores.
  const cores = Math.max(2, navigator.hardwareConcurrency);
  const globalSeconds = await medianSeconds(3, () => {
    lruStackDistances(trace, "global");
  });
  const splitSeconds = await medianSeconds(3, async () => {
    await parallelStackDistances(trace, "global", cores);
  });
  const passFigures: Figure[] = [
    {
      name: "LRU stack distances, global budget, one pass",
      value: accesses / globalSeconds / 1e6,
      unit: "M accesses/s",
    },
    {
      name: `LRU stack distances, global budget, split over ${cores} workers`,
      value: accesses / splitSeconds / 1e6,
      unit: "M accesses/s",
    },
    {
      name: `batch-8 schedule (${schedule.steps} steps, ${
        (schedule.chosen.length / (schedule.steps * LAYERS)).toFixed(2)
      } experts per layer per step)`,
      value: accesses / scheduleSeconds / 1e6,
      unit: "M trace accesses/s",
    },
    {
      name: "batch-8 LRU replay with the timing model",
      value: accesses / batchSeconds / 1e6,
      unit: "M trace accesses/s",
    },
    {
      name: "batch-8 LRU replay, cache accesses (the unions)",
      value: schedule.chosen.length / batchSeconds / 1e6,
      unit: "M accesses/s",
    },
  ];

  if (Deno.env.get("MOETRACE_BENCH_CACHE_PROCESS") !== "0") {
    passFigures.push(...await wholeProcessFigures());
  }

  if (Deno.env.get("MOETRACE_BENCH_CACHE_SWEEP") === "0") {
    printFigures("bench cache (sweep skipped)", [
      {
        name: "LRU replay, hits and misses only",
        value: accesses / countSeconds / 1e6,
        unit: "M accesses/s",
      },
      {
        name: "LRU replay with the timing model",
        value: accesses / lruSeconds / 1e6,
        unit: "M accesses/s",
      },
      { name: "LRU replay per CPU second", value: accesses / lruCpu / 1e6, unit: "M accesses/s" },
      ...passFigures,
      { name: "load average (1 min) at the end", value: Deno.loadavg()[0]!, unit: "" },
    ], options.json);
    return;
  }
  const sweepStart = performance.now();
  const cpuStart = process.cpuUsage();
  const result = await runSweep(trace, model, {
    policies: [...POLICY_NAMES],
    capacities: Array.from({ length: 7 }, (_, i) => ({
      kind: "experts" as const,
      experts: i + 2,
      text: String(i + 2),
    })),
    prefetchers: ["none", "speculative", "oracle"].map((p) => parsePrefetch(p)!),
    dtypes: [DTYPES.bf16!],
    hardware: [HARDWARE_PRESETS.pcie4!],
    budget: "per-layer",
    seed: 0,
  }, {
    onProgress: (done, total) => {
      if (!options.json && Deno.stderr.isTerminal()) {
        Deno.stderr.writeSync(new TextEncoder().encode(`\rsweep ${done}/${total}`));
      }
    },
  });
  const sweepSeconds = (performance.now() - sweepStart) / 1000;
  const sweepCpu = process.cpuUsage(cpuStart);
  const sweepCpuSeconds = (sweepCpu.user + sweepCpu.system) / 1e6;
  const load = Deno.loadavg()[0]!;

  const figures: Figure[] = [
    { name: "trace generation", value: generateSeconds, unit: "s" },
    {
      name: "LRU replay, hits and misses only",
      value: accesses / countSeconds / 1e6,
      unit: "M accesses/s",
      target: 20,
      direction: "min",
    },
    {
      name: "LRU replay with the timing model",
      value: accesses / lruSeconds / 1e6,
      unit: "M accesses/s",
      target: 20,
      direction: "min",
    },
    {
      name: "LRU replay per CPU second (contention-free estimate)",
      value: accesses / lruCpu / 1e6,
      unit: "M accesses/s",
    },
    {
      name: "LRU stack distances (all capacities)",
      value: accesses / stackSeconds / 1e6,
      unit: "M accesses/s",
    },
    ...passFigures,
    {
      name:
        `sweep 8 policies × 7 capacities × 3 prefetchers (${result.combinations.length} combinations, ${result.replays} replays)`,
      value: sweepSeconds,
      unit: "s",
      target: 120,
      direction: "max",
    },
    {
      name: "sweep CPU time (all threads; ÷ 2 cores = idle-machine wall estimate)",
      value: sweepCpuSeconds,
      unit: "s",
    },
    { name: "load average (1 min) at the end", value: load, unit: "" },
    {
      name: "sweep throughput",
      value: (result.replays * accesses) / sweepSeconds / 1e6,
      unit: "M accesses/s over replays",
    },
    { name: "peak RSS", value: rssMiB(), unit: "MiB" },
  ];
  printFigures(
    `bench cache: ${TOKENS} tokens × ${LAYERS} layers × top-${TOP_K}, E = ${EXPERTS} (${accesses} accesses)`,
    figures,
    options.json,
  );
}

/** libCacheSim's LRU at both sizes, whole process, on issue 19's machine (s). */
const LIBCACHESIM_SECONDS = 4.6;

/**
 * `simulate --policy lru --capacity 64,128 --budget global` through the CLI
 * launcher on a trace of the benchmark's shape and generator (sticky, with
 * geometric memory) in documents of 1,000 tokens, without speculative picks,
 * written once per shard format first (not timed).
 */
async function wholeProcessFigures(): Promise<Figure[]> {
  const perDoc = 1000;
  const root = await Deno.makeTempDir({ prefix: "moetrace-bench-cache-" });
  const figures: Figure[] = [];
  try {
    // [T, M, k] sticky routing with memory, as the in-memory trace above.
    const trace = syntheticAccessTrace({
      tokens: TOKENS,
      layers: LAYERS,
      experts: EXPERTS,
      topK: TOP_K,
      stickiness: 0.5,
      memory: "geometric",
      tokensPerDoc: perDoc,
      seed: 1,
    });
    const shape = { numLayers: LAYERS, numExperts: EXPERTS, topK: TOP_K };
    const width = LAYERS * TOP_K;
    for (const format of ["parquet", "arrow"] as const) {
      const dir = `${root}/${format}`;
      const writer = await TraceWriter.open(dir, {
        model: syntheticModel(shape),
        capture: syntheticCapture(shape),
      }, { format });
      for (let d = 0, t = 0; t < trace.tokens; d++, t += perDoc) {
        const T = Math.min(perDoc, trace.tokens - t);
        await writer.add({
          doc: d,
          domain: "A",
          tokens: Uint32Array.from({ length: T }, (_, i) => i),
          pieces: Array.from({ length: T }, (_, i) => `p${i}`),
          experts: trace.chosen.slice(t * width, (t + T) * width),
          weights: new Float32Array(T * width).fill(1 / TOP_K),
        });
      }
      await writer.close();
      const run = await timedSimulate(dir, `${root}/${format}-out`);
      const name = `whole process: simulate LRU at 64 and 128 of ${LAYERS * EXPERTS}, global, ${
        format === "parquet" ? "Parquet" : "Arrow IPC"
      }`;
      figures.push(
        {
          name: `${name}, wall (libCacheSim ${LIBCACHESIM_SECONDS} s on issue 19's machine)`,
          value: run.wall,
          unit: "s",
          target: LIBCACHESIM_SECONDS,
          direction: "max",
        },
        { name: `${name}, CPU (all threads)`, value: run.cpu, unit: "s" },
        {
          name: `${name}, reading the trace`,
          value: (100 * run.read) / run.wall,
          unit: "% of wall",
        },
        { name: `${name}, tokens read/s`, value: TOKENS / run.read / 1e6, unit: "M tokens/s" },
      );
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
  return figures;
}

/** Runs `deno task moetrace simulate` on `trace`; its wall time and what its --json reports. */
async function timedSimulate(
  trace: string,
  out: string,
): Promise<{ wall: number; cpu: number; read: number }> {
  const root = fileURLToPath(new URL("..", import.meta.url));
  const start = performance.now();
  const child = await new Deno.Command(Deno.execPath(), {
    cwd: root,
    args: [
      "run",
      "--allow-run",
      "--allow-read",
      "--allow-env=TMPDIR,INIT_CWD,XDG_RUNTIME_DIR",
      "moetrace.ts",
      "simulate",
      trace,
      "--out",
      out,
      ...["--policy", "lru", "--capacity", "64,128", "--budget", "global"],
      ...["--prefetch", "none", "--bootstrap", "0", "--json"],
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const wall = (performance.now() - start) / 1000;
  if (!child.success) {
    throw new Error(`simulate failed: ${new TextDecoder().decode(child.stderr)}`);
  }
  const seconds = JSON.parse(new TextDecoder().decode(child.stdout)).seconds;
  return { wall, cpu: seconds.cpu, read: seconds.read };
}
