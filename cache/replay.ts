/**
 * The replay: one policy, one prefetcher and any number of timing models over
 * a whole AccessTrace.
 *
 * It drives `ExpertCache` key by key (`demandKey`, `prefetchKey`: the same
 * steps its online `access` and `prefetch` take, so the engine and the
 * simulator count the same uploads) and tells the timing models each load as
 * the cache decides it. replay_test.ts checks it equals `ExpertCache.access`
 * and `prefetch` step by step for every policy, prefetcher and budget.
 *
 * Order of one step (token t, layer l): the router's k experts are accessed
 * (hits, misses, evictions); the prefetcher observes them and predicts the
 * steps d = 1 .. depth ahead (layer l + d of the same token, or for the oracle
 * the first layers of the next token), which are prefetched; every timing
 * model then advances through the step.
 */
import type { AccessTrace } from "./access_trace.ts";
import { type Budget, type CacheStats, ExpertCache, HIT, MISS } from "./expert_cache.ts";
import type { CachePolicy } from "./policy.ts";
import type { Prefetcher } from "./prefetch/prefetcher.ts";
import type { StepCosts } from "./costs.ts";
import { OracleShadow } from "./oracle_shadow.ts";
import { TimingModel } from "./timing.ts";

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
   * must have no prefetcher and a per-layer budget (see oracle_shadow.ts).
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
  const cache = new ExpertCache(options.policy, { layers: M, experts: E, budget: options.budget }, {
    slots: false,
  });
  const guard = cache.guard;
  const timings = options.costs.map((c) => new TimingModel(c, { layers: M, experts: E }));
  // Every timing model sees each event through the first (TimingModel.chain).
  const timing = TimingModel.chain(timings);
  const pf = options.prefetcher;
  const depth = pf ? pf.depth : 0;
  const crossesTokens = pf ? pf.crossesTokens : false;
  const accuracy: PrefetchAccuracy | null = pf && (options.accuracy ?? true)
    ? {
      depth,
      opportunities: new Float64Array(M * depth),
      predicted: new Float64Array(M * depth),
      correct: new Float64Array(M * depth),
    }
    : null;
  const out = new Uint16Array(Math.max(k, 1));
  // Oracle timing derived from this replay's misses (see OracleShadow).
  const shadow = options.oracleCosts && options.oracleCosts.length > 0
    ? new OracleShadow(options.oracleCosts, { layers: M, experts: E, topK: k })
    : null;
  if (shadow !== null && (pf !== null || options.budget !== "per-layer")) {
    throw new RangeError("oracle shadows need a per-layer replay without prefetch.");
  }
  let position = 0;
  for (let t = 0; t < T; t++) {
    for (let l = 0; l < M; l++) {
      const offset = (t * M + l) * k;
      const base = l * E;
      guard.clear();
      timing?.begin();
      let misses = 0;
      if (k === 2) {
        // Mixtral's top-2 written out: its replays run about 15% faster than
        // through the loop below.
        const a = base + chosen[offset]!;
        const b = base + chosen[offset + 1]!;
        guard.add(a);
        guard.add(b);
        misses = demandStep(cache, a, position, l, timing, misses);
        misses = demandStep(cache, b, position + 1, l, timing, misses);
      } else {
        for (let j = 0; j < k; j++) guard.add(base + chosen[offset + j]!);
        for (let j = 0; j < k; j++) {
          misses = demandStep(cache, base + chosen[offset + j]!, position + j, l, timing, misses);
        }
      }
      position += k;
      if (pf !== null) {
        pf.observe(t, l);
        for (let d = 1; d <= depth; d++) {
          // The target step may be a layer of the next token (oracle only).
          let targetLayer = l + d;
          if (targetLayer >= M) {
            if (!crossesTokens || t + 1 >= T) break;
            targetLayer -= M;
          }
          const n = pf.predict(t, l, d, out);
          if (accuracy !== null) {
            countAccuracy(accuracy, chosen, (t * M + l + d) * k, targetLayer, d, out, n, k);
          }
          if (n === 0) continue;
          const targetBase = targetLayer * E;
          // Prefetches issued together never evict each other: all are
          // guarded first. Two written out, as for the demand accesses.
          if (n === 2) {
            const a = targetBase + out[0]!;
            const b = targetBase + out[1]!;
            guard.add(a);
            guard.add(b);
            if (cache.prefetchKey(a, position)) {
              timing?.prefetch(a);
            }
            if (cache.prefetchKey(b, position)) {
              timing?.prefetch(b);
            }
            continue;
          }
          for (let i = 0; i < n; i++) guard.add(targetBase + out[i]!);
          for (let i = 0; i < n; i++) {
            const key = targetBase + out[i]!;
            if (!cache.prefetchKey(key, position)) continue;
            timing?.prefetch(key);
          }
        }
      }
      timing?.end(l, k);
      if (shadow !== null) shadow.push(misses);
    }
    timing?.endToken();
  }
  if (shadow !== null) shadow.finish();
  for (let l = 0; l < M; l++) cache.countAccesses(l, T * k);
  return {
    stats: cache.stats,
    timings,
    oracleTimings: shadow ? shadow.timings : [],
    accuracy,
    tokens: T,
  };
}

/** Counts one prediction `out[0..n)` for the step `d` ahead, whose k true experts start at `truth`. */
function countAccuracy(
  accuracy: PrefetchAccuracy,
  chosen: Uint16Array,
  truth: number,
  targetLayer: number,
  d: number,
  out: Uint16Array,
  n: number,
  k: number,
): void {
  const slot = targetLayer * accuracy.depth + d - 1;
  accuracy.opportunities[slot]!++;
  accuracy.predicted[slot]! += n;
  let correct = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < k; j++) if (chosen[truth + j] === out[i]) correct++;
  }
  accuracy.correct[slot]! += correct;
}

/**
 * One demand access of a step and what the timing models see of it: a miss
 * is loaded now, a prefetched key's first use may find it still in flight.
 * Returns the step's misses so far.
 */
function demandStep(
  cache: ExpertCache,
  key: number,
  position: number,
  layer: number,
  timing: TimingModel | null,
  misses: number,
): number {
  const result = cache.demandKey(key, position);
  if (result === HIT) return misses;
  if (result === MISS) {
    misses++;
    timing?.load(key);
  } else {
    timing?.use(layer, key);
  }
  return misses;
}
