/**
 * A sweep: every combination of policy × capacity × prefetcher × dtype ×
 * hardware over one AccessTrace held in memory.
 *
 * Work is shared wherever the results are provably identical:
 * - the timing models of all (dtype, hardware) pairs that share a cache
 *   configuration run inside one replay;
 * - LRU without prefetch comes for every capacity from one stack-distance
 *   pass, with the exact no-prefetch timing (stall = misses × upload time);
 * - a capacity that holds every key of a partition never evicts, so every
 *   policy behaves like LRU there (swap excepted: it keeps k per layer);
 * - swap ignores the capacity, so it runs once per prefetcher.
 * With `batch` above 1 every combination replays the batched schedule
 * (batch.ts) without prefetch; only the full-capacity shortcut holds there.
 */
import type { ModelFacts } from "../trace/mod.ts";
import { accessCounts, type AccessTrace } from "./access_trace.ts";
import { type Budget, type CacheStats, policyOptions } from "./expert_cache.ts";
import type { FutureUses } from "./policy.ts";
import { createPolicy, type PolicyName, traceFutureUses } from "./policies/mod.ts";
import { createPrefetcher, type PrefetchSpec } from "./prefetch/mod.ts";
import { type PrefetchAccuracy, replay } from "./replay.ts";
import {
  batchAccessCounts,
  batchFutureUses,
  type BatchSchedule,
  batchSchedule,
  replayBatch,
} from "./batch.ts";
import { lruHits, lruStackDistances, type StackDistances } from "./stack_distance.ts";
import { parallelStackDistances } from "./stack_parallel.ts";
import {
  type MissSetting,
  missSettingActive,
  type StepCosts,
  stepCosts,
  timedByReplay,
} from "./costs.ts";
import { type DtypeInfo, expertBytes } from "./dtypes.ts";
import type { Hardware } from "./hardware.ts";
import { oracleShadowStats } from "./oracle_shadow.ts";
import { type MissCounts, missCounts, type TimingModel } from "./timing.ts";

/** A capacity as given: a number of experts, or a byte budget. */
export type CapacitySpec = { kind: "experts"; experts: number; text: string } | {
  kind: "bytes";
  bytes: number;
  text: string;
};

export interface SweepSettings {
  policies: PolicyName[];
  capacities: CapacitySpec[];
  prefetchers: PrefetchSpec[];
  dtypes: DtypeInfo[];
  hardware: Hardware[];
  budget: Budget;
  seed: number;
  /** Documents decoding in lockstep (default 1: the plain replay). */
  batch?: number;
  /** What a miss does (--on-miss, --miss-dtype, --tier); default: uploaded and waited for. */
  miss?: MissSetting;
}

/** One combination's per-layer results under one (dtype, hardware). */
export interface Combination {
  policy: PolicyName;
  /** Experts per layer (per-layer budget) or in all (global) actually simulated. */
  capacity: number;
  capacityText: string;
  prefetch: string;
  dtype: string;
  hardware: string;
  costs: StepCosts;
  tokens: number;
  hits: Float64Array;
  misses: Float64Array;
  prefetchIssued: Float64Array;
  prefetchUsed: Float64Array;
  prefetchLate: Float64Array;
  prefetchWasted: Float64Array;
  stallMs: Float64Array;
  layerMs: Float64Array;
  /** Total ms of the whole replay, other_ms included. */
  totalMs: number;
  /** CPU-computed, tiered and degraded counts (absent when the timing came from counts alone). */
  miss?: MissCounts;
}

export interface SweepResult {
  combinations: Combination[];
  /** Prediction quality per prefetcher name (independent of the cache). */
  accuracy: Map<string, PrefetchAccuracy>;
  /** LRU at every capacity (null for a batched replay, where LRU rows come from its replays). */
  stackDistances: StackDistances | null;
  /** Replays actually run (after sharing). */
  replays: number;
  /** Steps replayed: tokens, or batched steps. */
  steps: number;
  /** [M] experts accessed per layer summed over steps (the unions of a batch; T × k otherwise). */
  unionSum: Float64Array;
}

/** Experts a capacity spec buys under a dtype: per layer or in all. */
export function capacityExperts(
  spec: CapacitySpec,
  dtype: DtypeInfo,
  model: ModelFacts,
  budget: Budget,
  layers: number,
): number {
  if (spec.kind === "experts") return spec.experts;
  const total = Math.floor(spec.bytes / expertBytes(model.expert_params, dtype));
  return budget === "global" ? total : Math.floor(total / layers);
}

interface Job {
  id: number;
  /** The policy actually run. */
  run: PolicyName;
  capacity: number;
  prefetch: PrefetchSpec;
  /** The combinations it answers. */
  targets: Target[];
  /** Oracle-prefetch combinations answered by the same replay (per-layer, no prefetch). */
  oracleTargets: Target[];
}

interface Target {
  policy: PolicyName;
  capacityText: string;
  dtype: DtypeInfo;
  hardware: Hardware;
}

/** What a replay job needs besides the trace: sent to workers. */
export interface JobSpec {
  id: number;
  run: PolicyName;
  capacity: number;
  prefetch: PrefetchSpec;
  costs: StepCosts[];
  /** Oracle timings derived from this replay (prefetch none, per-layer budget). */
  oracleCosts: StepCosts[];
  /** Whether to count prediction accuracy (once per prefetcher is enough). */
  accuracy: boolean;
}

export interface JobContext {
  trace: AccessTrace;
  budget: Budget;
  seed: number;
  /** The batched schedule replayed instead of the trace (null: the plain replay). */
  schedule?: BatchSchedule | null;
}

export interface WorkerRequest {
  context: JobContext;
  jobs: JobSpec[];
}

export interface JobTiming {
  late: Float64Array;
  stallMs: Float64Array;
  layerMs: Float64Array;
  totalMs: number;
  miss?: MissCounts;
}

export interface JobResult {
  id: number;
  stats: CacheStats;
  timings: JobTiming[];
  accuracy: PrefetchAccuracy | null;
  oracleTimings: JobTiming[];
}

/** Runs one replay job; `memo` keeps Belady's next uses and pinned's counts between jobs. */
export function runJob(
  context: JobContext,
  job: JobSpec,
  memo: { future?: FutureUses; counts?: Float64Array },
): JobResult {
  const { trace, budget, seed } = context;
  const schedule = context.schedule ?? null;
  const options = policyOptions({
    layers: trace.layers,
    experts: trace.experts,
    topK: trace.topK,
    capacity: job.capacity,
    budget,
    seed,
  });
  if (schedule !== null) {
    if (job.run === "belady") options.future = memo.future ??= batchFutureUses(schedule);
    if (job.run === "pinned") options.counts = memo.counts ??= batchAccessCounts(schedule);
    const batched = replayBatch(schedule, {
      policy: createPolicy(job.run, options),
      budget,
      costs: job.costs,
      topK: trace.topK,
    });
    return {
      id: job.id,
      stats: batched.stats,
      timings: batched.timings.map(jobTiming),
      accuracy: null,
      oracleTimings: [],
    };
  }
  if (job.run === "belady") options.future = memo.future ??= traceFutureUses(trace);
  if (job.run === "pinned") options.counts = memo.counts ??= accessCounts(trace);
  // Without prefetch the timing is exact from the counts, unless a miss may
  // be computed on the CPU, read from a tier or fetched in low precision.
  const none = job.prefetch.kind === "none" && !job.costs.some(timedByReplay);
  const result = replay(trace, {
    policy: createPolicy(job.run, options),
    budget,
    prefetcher: createPrefetcher(job.prefetch, trace),
    // Without prefetch the timing is exact from the counts (noPrefetchTiming).
    costs: none ? [] : job.costs,
    accuracy: job.accuracy,
    oracleCosts: job.oracleCosts,
  });
  const timings = none
    ? job.costs.map((c) => noPrefetchTiming(result.stats, c, trace))
    : result.timings.map(jobTiming);
  return {
    id: job.id,
    stats: result.stats,
    timings,
    accuracy: result.accuracy,
    oracleTimings: result.oracleTimings.map(jobTiming),
  };
}

function jobTiming(t: TimingModel): JobTiming {
  return {
    late: t.late,
    stallMs: t.stallMs,
    layerMs: t.layerMs,
    totalMs: t.now,
    miss: missCounts(t),
  };
}

export interface SweepOptions {
  /** Worker threads (default: one per logical core, or 0 to replay in this thread). */
  workers?: number;
  onProgress?: (done: number, total: number) => void;
}

export async function runSweep(
  trace: AccessTrace,
  model: ModelFacts,
  settings: SweepSettings,
  sweepOptions: SweepOptions = {},
): Promise<SweepResult> {
  const { layers: M, experts: E, topK: k } = trace;
  const partitionKeys = settings.budget === "global" ? M * E : E;
  const batch = settings.batch ?? 1;
  const schedule = batch > 1 ? batchSchedule(trace, batch) : null;
  if (schedule !== null && settings.prefetchers.some((p) => p.kind !== "none")) {
    throw new RangeError("a batched replay runs without prefetch.");
  }
  // The shortcuts below that rest on one token's k experts per step (stack
  // distances, capacity k, the oracle's shadow) hold for the plain replay only.
  const perLayer = settings.budget === "per-layer";
  // CPU compute, tiers or low-precision copies: the timing needs a replay.
  const replayTiming = missSettingActive(settings.miss);
  const jobs = new Map<string, Job>();
  for (const policy of settings.policies) {
    // Swap ignores the capacity: one set of rows, not one per requested capacity.
    const specs = policy === "swap" ? settings.capacities.slice(0, 1) : settings.capacities;
    for (const spec of specs) {
      for (const prefetch of settings.prefetchers) {
        for (const dtype of settings.dtypes) {
          for (const hardware of settings.hardware) {
            let capacity = capacityExperts(spec, dtype, model, settings.budget, M);
            if (policy === "swap") capacity = perLayer ? k : M * k;
            else capacity = Math.min(capacity, partitionKeys);
            // Per-layer oracle prefetch is derived from the replay without prefetch.
            // (Its timing from miss counts needs plain uploads: see oracle_shadow.ts.)
            const shadow = prefetch.kind === "oracle" && perLayer && !replayTiming;
            const kind = shadow ? "none" : prefetch.kind;
            const run = schedule !== null
              ? (capacity >= partitionKeys ? "lru" : policy)
              : effectivePolicy(policy, capacity, kind, k, partitionKeys, perLayer);
            const runPrefetch = shadow ? NO_PREFETCH : prefetch;
            const key = `${run}|${capacity}|${runPrefetch.name}`;
            let job = jobs.get(key);
            if (!job) {
              job = {
                id: jobs.size,
                run,
                capacity,
                prefetch: runPrefetch,
                targets: [],
                oracleTargets: [],
              };
              jobs.set(key, job);
            }
            (shadow ? job.oracleTargets : job.targets).push({
              policy,
              capacityText: spec.text,
              dtype,
              hardware,
            });
          }
        }
      }
    }
  }
  const all = [...jobs.values()];
  // Targets that share a (dtype, hardware) setting share one timing model:
  // where every policy is LRU (capacity k or E) one replay answers them all.
  const settingOf = (t: Target) =>
    settings.dtypes.indexOf(t.dtype) * settings.hardware.length +
    settings.hardware.indexOf(t.hardware);
  const settingsIn = (targets: Target[]) => [...new Set(targets.map(settingOf))];
  const costsOf = (targets: Target[]) =>
    settingsIn(targets).map((i) =>
      stepCosts(
        settings.hardware[i % settings.hardware.length]!,
        settings.dtypes[Math.floor(i / settings.hardware.length)]!,
        model,
        settings.miss,
      )
    );
  // LRU without prefetch: every capacity from the stack distances, and with a
  // per-layer budget the oracle timings from the same pass. Everything else
  // is replayed, in workers started before that pass so they overlap with it.
  const fromStack = (job: Job) =>
    schedule === null && !replayTiming && job.run === "lru" && job.prefetch.kind === "none";
  const results = new Map<number, JobResult>();
  const replayed: JobSpec[] = [];
  const accuracyWanted = new Set<string>();
  for (const job of all) {
    if (fromStack(job)) continue;
    const accuracy = job.prefetch.kind !== "none" && !accuracyWanted.has(job.prefetch.name);
    if (accuracy) accuracyWanted.add(job.prefetch.name);
    replayed.push({
      id: job.id,
      run: job.run,
      capacity: job.capacity,
      prefetch: job.prefetch,
      costs: costsOf(job.targets),
      oracleCosts: costsOf(job.oracleTargets),
      accuracy,
    });
  }
  let done = 0;
  const progress = () => sweepOptions.onProgress?.(done, all.length);
  const context: JobContext = { trace, budget: settings.budget, seed: settings.seed, schedule };
  const groups = groupByClass(replayed);
  // Replays are independent: one worker per core (the stack-distance pass on
  // this thread is short next to them).
  const workers = Math.min(sweepOptions.workers ?? navigator.hardwareConcurrency, groups.length);
  const running = workers <= 0
    ? Promise.resolve()
    : runPool(groups, workers, (group) =>
      runInWorker({ context, jobs: group }, (result) => {
        results.set(result.id, result);
        done++;
        progress();
      }));

  const stackJobs = all.filter((job) => fromStack(job) && job.oracleTargets.length > 0);
  // With nothing else to replay (LRU alone), the pass itself is split over
  // the cores (stack_parallel.ts); oracle shadows need it in one piece.
  const cores = sweepOptions.workers ?? navigator.hardwareConcurrency;
  const split = schedule === null && stackJobs.length === 0 && groups.length === 0 &&
    cores > 1 && trace.chosen.length >= PARALLEL_STACK_ACCESSES;
  const stackDistances = schedule !== null
    ? null
    : split
    ? await parallelStackDistances(trace, settings.budget, cores)
    : lruStackDistances(trace, settings.budget, {
      capacities: stackJobs.map((job) => job.capacity),
      costs: stackJobs.map((job) => costsOf(job.oracleTargets)),
    });
  for (const job of all) {
    if (!fromStack(job) || stackDistances === null) continue;
    const stats = lruStatsFromStack(stackDistances, job.capacity, M);
    const s = stackJobs.indexOf(job);
    const oracle = (stackDistances as { oracleTimings?: TimingModel[][] }).oracleTimings;
    results.set(job.id, {
      id: job.id,
      stats,
      timings: costsOf(job.targets).map((c) => noPrefetchTiming(stats, c, trace)),
      accuracy: null,
      oracleTimings: s >= 0 && oracle ? oracle[s]!.map(jobTiming) : [],
    });
    done++;
    progress();
  }
  if (workers <= 0) {
    const memo = {};
    for (const job of replayed) {
      results.set(job.id, runJob(context, job, memo));
      done++;
      progress();
    }
  }
  await running;
  const combinations: Combination[] = [];
  const accuracy = new Map<string, PrefetchAccuracy>();
  for (const job of all) {
    const result = results.get(job.id)!;
    if (result.accuracy) accuracy.set(job.prefetch.name, result.accuracy);
    const add = (targets: Target[], prefetch: string, stats: CacheStats, timings: JobTiming[]) => {
      const costs = costsOf(targets);
      const settingIndex = settingsIn(targets);
      targets.forEach((target) => {
        const i = settingIndex.indexOf(settingOf(target));
        const timing = timings[i]!;
        combinations.push({
          policy: target.policy,
          capacity: job.capacity,
          capacityText: target.capacityText,
          prefetch,
          dtype: target.dtype.name,
          hardware: target.hardware.name,
          costs: costs[i]!,
          tokens: trace.tokens,
          hits: stats.hits,
          misses: stats.misses,
          prefetchIssued: stats.prefetchIssued,
          prefetchUsed: stats.prefetchUsed,
          prefetchLate: timing.late,
          prefetchWasted: stats.prefetchWasted,
          stallMs: timing.stallMs,
          layerMs: timing.layerMs,
          totalMs: timing.totalMs,
          ...(timing.miss ? { miss: timing.miss } : {}),
        });
      });
    };
    add(job.targets, job.prefetch.name, result.stats, result.timings);
    if (job.oracleTargets.length > 0) {
      add(job.oracleTargets, "oracle", oracleShadowStats(result.stats, k), result.oracleTimings);
      if (!accuracy.has("oracle")) accuracy.set("oracle", oracleAccuracy(trace));
    }
  }
  combinations.sort((a, b) =>
    settings.policies.indexOf(a.policy) - settings.policies.indexOf(b.policy) ||
    a.capacity - b.capacity ||
    settings.prefetchers.findIndex((p) => p.name === a.prefetch) -
      settings.prefetchers.findIndex((p) => p.name === b.prefetch) ||
    settings.dtypes.findIndex((d) => d.name === a.dtype) -
      settings.dtypes.findIndex((d) => d.name === b.dtype) ||
    settings.hardware.findIndex((h) => h.name === a.hardware) -
      settings.hardware.findIndex((h) => h.name === b.hardware)
  );
  const unionSum = schedule !== null
    ? schedule.unionSum
    : new Float64Array(M).fill(trace.tokens * k);
  return {
    combinations,
    accuracy,
    stackDistances,
    replays: replayed.length,
    steps: schedule !== null ? schedule.steps : trace.tokens,
    unionSum,
  };
}

/**
 * Groups jobs by policy and prefetcher class, costliest group first. Each group
 * runs in a fresh worker: V8 specialises the replay loop for the classes it
 * has seen, and a loop that has met several policies runs up to 2× slower
 * (measured: LFU with speculative prefetch 2.0 s after other policies, 1.0 s
 * alone, on 200k tokens).
 */
function groupByClass(jobs: JobSpec[]): JobSpec[][] {
  const byClass = new Map<string, JobSpec[]>();
  for (const job of jobs) {
    const key = `${job.run}|${job.prefetch.kind}`;
    const list = byClass.get(key) ?? [];
    list.push(job);
    byClass.set(key, list);
  }
  // A replay with prefetch costs about twice one without.
  const cost = (group: JobSpec[]) => group.length * (group[0]!.prefetch.kind === "none" ? 1 : 2);
  return [...byClass.values()].sort((a, b) => cost(b) - cost(a));
}

/** Runs `task` on every group, at most `width` at a time, in order. */
async function runPool<T>(
  groups: T[],
  width: number,
  task: (group: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < groups.length) await task(groups[next++]!);
  };
  await Promise.all(Array.from({ length: width }, lane));
}

function runInWorker(request: WorkerRequest, onResult: (r: JobResult) => void): Promise<void> {
  const worker = new Worker(new URL("./sweep_worker.ts", import.meta.url).href, { type: "module" });
  return new Promise<void>((resolve, reject) => {
    worker.onmessage = (event) => {
      const message = event.data;
      if (message.kind === "result") onResult(message.result as JobResult);
      else if (message.kind === "done") {
        worker.terminate();
        resolve();
      } else {
        worker.terminate();
        reject(new Error(`sweep worker failed: ${message.message}`));
      }
    };
    worker.onerror = (event) => {
      event.preventDefault();
      worker.terminate();
      reject(new Error(`sweep worker failed: ${event.message}`));
    };
    worker.postMessage(request);
  });
}

/**
 * Traces from this many accesses split the stack-distance pass over the cores
 * when it is all there is to do (below it, starting workers costs more).
 */
const PARALLEL_STACK_ACCESSES = 8_000_000;

const NO_PREFETCH: PrefetchSpec = { name: "none", kind: "none", depth: 0 };

/**
 * The policy a combination actually needs: every policy is LRU where none of
 * them has a choice:
 * - the capacity holds every key of a partition: nothing is ever evicted;
 * - the capacity is k and every prediction is k distinct experts or none
 *   (no prefetch, oracle, speculative; `loadAccessTrace` checks the spec
 *   column): a full cache holds exactly the last k keys loaded or accessed, a
 *   step that needs m new ones finds exactly m unguarded keys and evicts them
 *   all (under a global budget a prefetch finds only the guarded current
 *   selection and is dropped).
 * Swap is per-layer LRU at k, so under a per-layer budget the same holds for it.
 */
function effectivePolicy(
  policy: PolicyName,
  capacity: number,
  prefetch: PrefetchSpec["kind"],
  k: number,
  partitionKeys: number,
  perLayer: boolean,
): PolicyName {
  const fullSets = prefetch !== "markov";
  if (policy === "swap") return perLayer && fullSets ? "lru" : "swap";
  if (capacity >= partitionKeys) return "lru";
  if (capacity === k && fullSets) return "lru";
  return policy;
}

/** The oracle's prediction counts: always the k true experts of the next step. */
export function oracleAccuracy(trace: AccessTrace): PrefetchAccuracy {
  const { layers: M, tokens: T, topK: k } = trace;
  const opportunities = new Float64Array(M);
  for (let l = 0; l < M; l++) opportunities[l] = l === 0 ? Math.max(0, T - 1) : T;
  const predicted = opportunities.map((n) => n * k);
  return { depth: 1, opportunities, predicted, correct: predicted.slice() };
}

/** LRU counters at one capacity from the stack-distance histogram. */
export function lruStatsFromStack(
  sd: StackDistances,
  capacity: number,
  layers: number,
): CacheStats {
  const hits = new Float64Array(layers);
  const misses = new Float64Array(layers);
  for (let l = 0; l < layers; l++) {
    hits[l] = lruHits(sd, l, capacity);
    misses[l] = sd.accesses[l]! - hits[l]!;
  }
  const zeros = new Float64Array(layers);
  return {
    hits,
    misses,
    evictions: zeros,
    prefetchIssued: zeros,
    prefetchUsed: zeros,
    prefetchWasted: zeros,
  };
}

/** Exact timing without prefetch: the queue is idle whenever a router decides. */
export function noPrefetchTiming(
  stats: CacheStats,
  costs: StepCosts,
  trace: AccessTrace,
): { late: Float64Array; stallMs: Float64Array; layerMs: Float64Array; totalMs: number } {
  const M = trace.layers;
  const stallMs = new Float64Array(M);
  const layerMs = new Float64Array(M);
  let totalMs = trace.tokens * costs.otherMs;
  for (let l = 0; l < M; l++) {
    stallMs[l] = stats.misses[l]! * costs.transferMs;
    layerMs[l] = trace.tokens * (costs.attentionMs + trace.topK * costs.expertMs) + stallMs[l]!;
    totalMs += layerMs[l]!;
  }
  return { late: new Float64Array(M), stallMs, layerMs, totalMs };
}
