/**
 * The replay: one policy, one prefetcher and any number of timing models over
 * a whole AccessTrace.
 *
 * The loop is `ExpertCache`'s access loop (the online form the engine drives)
 * fused with the timing model, with its state in local variables: a sweep
 * replays 32 M steps per combination of its benchmark, so per-step overhead
 * counts. replay_test.ts checks it equals `ExpertCache` step by step for every
 * policy, prefetcher and budget.
 *
 * Order of one step (token t, layer l): the router's k experts are accessed
 * (hits, misses, evictions); the prefetcher observes them and predicts the
 * steps d = 1 .. depth ahead (layer l + d of the same token, or for the oracle
 * the first layers of the next token), which are prefetched; every timing
 * model then advances through the step.
 */
import type { AccessTrace } from "./access_trace.ts";
import type { Budget, CacheStats } from "./expert_cache.ts";
import { type CachePolicy, Guard, partitionTable, REFUSED } from "./policy.ts";
import type { Prefetcher } from "./prefetch/prefetcher.ts";
import { OracleShadow, type StepCosts, TimingModel } from "./timing.ts";

/** Prediction quality per target layer and lookahead, counted against the trace. */
export interface PrefetchAccuracy {
  depth: number;
  /** [M × depth], index target × depth + (d − 1): steps where a prediction for the target was asked. */
  opportunities: Float64Array;
  /** Experts predicted. */
  predicted: Float64Array;
  /** Predicted experts the target layer then chose. */
  correct: Float64Array;
}

export interface ReplayOptions {
  policy: CachePolicy;
  budget: Budget;
  prefetcher: Prefetcher | null;
  /** One timing model runs per entry. */
  costs: readonly StepCosts[];
  /** Count prediction precision and recall (default true). */
  accuracy?: boolean;
  /**
   * Timing models of the oracle prefetcher derived from this replay, which
   * must have no prefetcher and a per-layer budget (see `oracleShadowStats`).
   */
  oracleCosts?: readonly StepCosts[];
}

export interface ReplayResult {
  stats: CacheStats;
  timings: TimingModel[];
  /** Timing of the oracle prefetcher under each `oracleCosts` entry. */
  oracleTimings: TimingModel[];
  accuracy: PrefetchAccuracy | null;
  tokens: number;
}

export function replay(trace: AccessTrace, options: ReplayOptions): ReplayResult {
  const { layers: M, experts: E, topK: k, chosen, tokens: T } = trace;
  const policy = options.policy;
  const keys = M * E;
  const timings = options.costs.map((c) => new TimingModel(c, { layers: M, experts: E }));
  const pf = options.prefetcher;
  const depth = pf ? pf.depth : 0;
  const accuracy: PrefetchAccuracy | null = pf && (options.accuracy ?? true)
    ? {
      depth,
      opportunities: new Float64Array(M * depth),
      predicted: new Float64Array(M * depth),
      correct: new Float64Array(M * depth),
    }
    : null;
  const out = new Uint16Array(Math.max(k, 1));
  const nTimings = timings.length;
  // Oracle timing derived from this replay's misses (see OracleShadow).
  const shadow = options.oracleCosts && options.oracleCosts.length > 0
    ? new OracleShadow(options.oracleCosts, { layers: M, experts: E, topK: k })
    : null;
  if (shadow !== null && (pf !== null || options.budget !== "per-layer")) {
    throw new RangeError("oracle shadows need a per-layer replay without prefetch.");
  }
  const hits = new Float64Array(M);
  const misses = new Float64Array(M);
  const evictions = new Float64Array(M);
  const prefetchIssued = new Float64Array(M);
  const prefetchUsed = new Float64Array(M);
  const prefetchWasted = new Float64Array(M);
  // The step's k experts (so they never evict each other) and its prefetches.
  const guard = new Guard(keys);
  const layerOf = partitionTable(keys, E);
  // [keys] 1 while a key is cached because of a prefetch and not yet used.
  const prefetched = new Uint8Array(keys);
  // This step's demand loads (the oracle shadow derives its prefetches from them).
  const demand = new Int32Array(k);
  let position = 0;
  for (let t = 0; t < T; t++) {
    for (let l = 0; l < M; l++) {
      const offset = (t * M + l) * k;
      const base = l * E;
      guard.clear();
      for (let j = 0; j < k; j++) guard.add(base + chosen[offset + j]!);
      for (let i = 0; i < nTimings; i++) timings[i]!.begin();
      let missCount = 0;
      for (let j = 0; j < k; j++) {
        const key = base + chosen[offset + j]!;
        if (policy.has(key)) {
          policy.hit(key, position + j);
          if (prefetched[key] === 1) {
            prefetched[key] = 0;
            prefetchUsed[l]!++;
            for (let i = 0; i < nTimings; i++) timings[i]!.use(l, key);
          }
          continue;
        }
        const victim = policy.admit(key, position + j, true, guard);
        if (victim === REFUSED) {
          throw new RangeError(
            `${policy.name} cannot hold the ${k} experts layer ${l} needs at once (capacity ${policy.capacity}).`,
          );
        }
        if (victim >= 0) evicted(victim, layerOf, evictions, prefetched, prefetchWasted);
        demand[missCount++] = key;
        for (let i = 0; i < nTimings; i++) timings[i]!.load(key);
      }
      if (missCount < k) hits[l]! += k - missCount;
      if (missCount > 0) misses[l]! += missCount;
      position += k;
      if (pf !== null) {
        pf.observe(t, l);
        for (let d = 1; d <= depth; d++) {
          // The target step may be a layer of the next token (oracle only).
          const target = t * M + l + d;
          if (target >= T * M || (l + d >= M && !pf.crossesTokens)) break;
          const targetLayer = target % M;
          const n = pf.predict(t, l, d, out);
          if (accuracy !== null) {
            const slot = targetLayer * depth + d - 1;
            accuracy.opportunities[slot]!++;
            accuracy.predicted[slot]! += n;
            const truth = target * k;
            let correct = 0;
            for (let i = 0; i < n; i++) {
              for (let j = 0; j < k; j++) if (chosen[truth + j] === out[i]) correct++;
            }
            accuracy.correct[slot]! += correct;
          }
          if (n === 0) continue;
          const targetBase = targetLayer * E;
          // Prefetches issued together never evict each other.
          for (let i = 0; i < n; i++) guard.add(targetBase + out[i]!);
          for (let i = 0; i < n; i++) {
            const key = targetBase + out[i]!;
            if (policy.has(key)) continue;
            const victim = policy.admit(key, position, false, guard);
            if (victim === REFUSED) continue;
            if (victim >= 0) evicted(victim, layerOf, evictions, prefetched, prefetchWasted);
            prefetched[key] = 1;
            prefetchIssued[targetLayer]!++;
            for (let m = 0; m < nTimings; m++) timings[m]!.load(key);
          }
        }
      }
      for (let i = 0; i < nTimings; i++) timings[i]!.end(l, chosen, offset, k);
      if (shadow !== null) shadow.push(demand, missCount, chosen);
    }
    for (let i = 0; i < nTimings; i++) timings[i]!.endToken();
  }
  if (shadow !== null) shadow.finish(chosen);
  return {
    stats: { hits, misses, evictions, prefetchIssued, prefetchUsed, prefetchWasted },
    timings,
    oracleTimings: shadow ? shadow.timings : [],
    accuracy,
    tokens: T,
  };
}

/** Counts the eviction of `victim`, wasted when it was a prefetch never used. */
function evicted(
  victim: number,
  layerOf: Int32Array,
  evictions: Float64Array,
  prefetched: Uint8Array,
  prefetchWasted: Float64Array,
): void {
  const layer = layerOf[victim]!;
  evictions[layer]!++;
  if (prefetched[victim] === 1) {
    prefetched[victim] = 0;
    prefetchWasted[layer]!++;
  }
}

/**
 * The oracle prefetcher's counters derived from a per-layer replay without
 * prefetch: only the very first step's k experts are demand loads; every
 * other miss becomes a prefetch issued one step early and used at once.
 */
export function oracleShadowStats(stats: CacheStats, topK: number): CacheStats {
  const M = stats.hits.length;
  const misses = new Float64Array(M);
  misses[0] = topK;
  const issued = new Float64Array(M);
  const hits = new Float64Array(M);
  for (let l = 0; l < M; l++) {
    const accesses = stats.hits[l]! + stats.misses[l]!;
    issued[l] = stats.misses[l]! - misses[l]!;
    hits[l] = accesses - misses[l]!;
  }
  return {
    hits,
    misses,
    evictions: stats.evictions,
    prefetchIssued: issued,
    prefetchUsed: issued,
    prefetchWasted: new Float64Array(M),
  };
}
