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
 */
import type { ModelFacts } from "../engine/trace.ts";
import { accessCounts, type AccessTrace } from "./access_trace.ts";
import { type Budget, type CacheStats, policyOptions } from "./expert_cache.ts";
import type { FutureUses } from "./policy.ts";
import { createPolicy, type PolicyName, traceFutureUses } from "./policies/mod.ts";
import { createPrefetcher, type PrefetchSpec } from "./prefetch/mod.ts";
import { type PrefetchAccuracy, replay } from "./replay.ts";
import { lruHits, lruStackDistances, type StackDistances } from "./stack_distance.ts";
import { type DtypeInfo, expertBytes, type Hardware, type StepCosts, stepCosts } from "./timing.ts";

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
}

export interface SweepResult {
  combinations: Combination[];
  /** Prediction quality per prefetcher name (independent of the cache). */
  accuracy: Map<string, PrefetchAccuracy>;
  stackDistances: StackDistances;
  /** Replays actually run (after sharing). */
  replays: number;
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
  /** The policy actually run. */
  run: PolicyName;
  capacity: number;
  prefetch: PrefetchSpec;
  /** The combinations it answers. */
  targets: { policy: PolicyName; capacityText: string; dtype: DtypeInfo; hardware: Hardware }[];
}

export function runSweep(
  trace: AccessTrace,
  model: ModelFacts,
  settings: SweepSettings,
  onProgress?: (done: number, total: number) => void,
): SweepResult {
  const { layers: M, experts: E, topK: k } = trace;
  const partitionKeys = settings.budget === "global" ? M * E : E;
  const jobs = new Map<string, Job>();
  for (const policy of settings.policies) {
    for (const spec of settings.capacities) {
      for (const prefetch of settings.prefetchers) {
        for (const dtype of settings.dtypes) {
          for (const hardware of settings.hardware) {
            let capacity = capacityExperts(spec, dtype, model, settings.budget, M);
            let run: PolicyName = policy;
            if (policy === "swap") capacity = settings.budget === "global" ? M * k : k;
            else if (capacity >= partitionKeys) {
              capacity = partitionKeys;
              run = "lru";
            }
            const key = `${run}|${capacity}|${prefetch.name}|${policy === "swap" ? "swap" : ""}`;
            let job = jobs.get(key);
            if (!job) {
              job = { run, capacity, prefetch, targets: [] };
              jobs.set(key, job);
            }
            job.targets.push({ policy, capacityText: spec.text, dtype, hardware });
          }
        }
      }
    }
  }
  const stackDistances = lruStackDistances(trace, settings.budget);
  let future: FutureUses | null = null;
  let counts: Float64Array | null = null;
  const combinations: Combination[] = [];
  const accuracy = new Map<string, PrefetchAccuracy>();
  let replays = 0;
  let done = 0;
  // Run jobs grouped by policy so each replay loop sees few policy classes.
  const ordered = [...jobs.values()].sort((a, b) =>
    a.run === b.run ? a.capacity - b.capacity : a.run < b.run ? -1 : 1
  );
  for (const job of ordered) {
    const costs = job.targets.map((t) => stepCosts(t.hardware, t.dtype, model));
    const fromStack = job.run === "lru" && job.prefetch.kind === "none";
    let stats: CacheStats;
    let perTarget: { late: Float64Array; stallMs: Float64Array; layerMs: Float64Array; totalMs: number }[];
    if (fromStack) {
      stats = lruStatsFromStack(stackDistances, job.capacity, M);
      perTarget = costs.map((c) => noPrefetchTiming(stats, c, trace));
    } else {
      const options = policyOptions({
        layers: M,
        experts: E,
        topK: k,
        capacity: job.capacity,
        budget: settings.budget,
        seed: settings.seed,
      });
      if (job.run === "belady") options.future = future ??= traceFutureUses(trace);
      if (job.run === "pinned") options.counts = counts ??= accessCounts(trace);
      const result = replay(trace, {
        policy: createPolicy(job.run, options),
        budget: settings.budget,
        prefetcher: createPrefetcher(job.prefetch, trace),
        costs,
      });
      replays++;
      stats = result.stats;
      if (result.accuracy && !accuracy.has(job.prefetch.name)) {
        accuracy.set(job.prefetch.name, result.accuracy);
      }
      perTarget = result.timings.map((t) => ({
        late: t.late,
        stallMs: t.stallMs,
        layerMs: t.layerMs,
        totalMs: t.now,
      }));
    }
    job.targets.forEach((target, i) => {
      const timing = perTarget[i]!;
      combinations.push({
        policy: target.policy,
        capacity: job.capacity,
        capacityText: target.capacityText,
        prefetch: job.prefetch.name,
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
      });
    });
    onProgress?.(++done, ordered.length);
  }
  return { combinations, accuracy, stackDistances, replays };
}

/** LRU counters at one capacity from the stack-distance histogram. */
export function lruStatsFromStack(sd: StackDistances, capacity: number, layers: number): CacheStats {
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
