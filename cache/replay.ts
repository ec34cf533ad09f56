/**
 * The replay: one policy, one prefetcher and any number of timing models over
 * a whole AccessTrace.
 *
 * It iterates the trace and feeds `ExpertCache` one router decision at a time
 * (`access`, then `prefetch` for each prediction), as the engine's real
 * offloading does, so both count the same uploads. The timing models listen
 * to the cache's loads, prefetches and first uses; the replay gives them the
 * clock of the trace (each step's begin and end, each token's end).
 *
 * Order of one step (token t, layer l): the router's k experts are accessed
 * (hits, misses, evictions); the prefetcher observes them and predicts the
 * steps d = 1 .. depth ahead (layer l + d of the same token, or for the oracle
 * the first layers of the next token), which are prefetched; every timing
 * model then advances through the step.
 */
import type { AccessTrace } from "./access_trace.ts";
import { type Budget, type CacheStats, ExpertCache } from "./expert_cache.ts";
import type { CachePolicy } from "./policy.ts";
import type { Prefetcher } from "./prefetch/prefetcher.ts";
import type { StepCosts } from "./costs.ts";
import { OracleShadow } from "./oracle_shadow.ts";
import { TimingModel, timingNeedsHits } from "./timing.ts";

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
  const timings = options.costs.map((c) =>
    TimingModel.create(c, { layers: M, experts: E, topK: k })
  );
  // Every timing model hears each event through the first (TimingModel.chain).
  const timing = TimingModel.chain(timings);
  const cache = new ExpertCache(options.policy, { layers: M, experts: E, budget: options.budget }, {
    slots: false,
    listener: timing,
    hits: timingNeedsHits(options.costs),
  });
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
  // Oracle timing derived from this replay's misses (oracle_shadow.ts).
  const shadow = options.oracleCosts && options.oracleCosts.length > 0
    ? new OracleShadow(options.oracleCosts, { layers: M, topK: k })
    : null;
  if (shadow !== null && (pf !== null || options.budget !== "per-layer")) {
    throw new RangeError("oracle shadows need a per-layer replay without prefetch.");
  }
  for (let t = 0; t < T; t++) {
    for (let l = 0; l < M; l++) {
      timing?.begin();
      const misses = cache.access(l, chosen, (t * M + l) * k, k);
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
          if (n > 0) cache.prefetch(targetLayer, out, 0, n);
        }
      }
      timing?.end(l, k);
      if (shadow !== null) shadow.push(misses);
    }
    timing?.endToken();
  }
  if (shadow !== null) shadow.finish();
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
