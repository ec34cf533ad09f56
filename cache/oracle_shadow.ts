/**
 * The oracle prefetcher derived instead of replayed. With a per-layer budget
 * the oracle's cache evolves exactly like the same cache without prefetch
 * (each layer's cache is only touched by its own accesses and, just before
 * them, by the prefetch of exactly those experts), so its uploads at step s
 * are the misses of step s + 1, issued one step early; only the very first
 * step loads on demand. A sweep therefore gets the oracle's counters
 * (`oracleShadowStats`) and timing (`OracleShadow`) from the replay without
 * prefetch, and for LRU from the stack-distance pass; timing_test.ts checks
 * both against replaying the oracle prefetcher.
 */
import type { CacheStats } from "./expert_cache.ts";
import type { StepCosts } from "./costs.ts";
import { TimingModel } from "./timing.ts";

/**
 * Timing of the oracle prefetcher from the miss counts of a per-layer cache
 * without prefetch, told to TimingModels as the events a replay of the oracle
 * would send. The counts are enough: every other expert a step needs was
 * waited for at an earlier step, so only the uploads issued for this step can
 * still be in flight. Those uploads are told by their rank in the step (keys
 * 0..k−1 of a model of k "experts" per layer): a step first reads the ready
 * times of its own uploads (`use`), then overwrites them with the next step's
 * (`prefetch`). Feed every step's miss count in order with `push`, then call
 * `finish`.
 */
export class OracleShadow {
  readonly timings: TimingModel[];
  /** The first of `timings`, chained to the others. */
  #timing: TimingModel | null;
  #layers: number;
  #topK: number;
  /** Misses of the step pushed last, taken once the next one's are known; −1 before the first. */
  #pending = -1;
  /** Layer of the pending step. */
  #layer = 0;
  /** Whether the pending step is the very first (its uploads are demand loads). */
  #first = true;

  constructor(costs: readonly StepCosts[], shape: { layers: number; topK: number }) {
    this.timings = costs.map((c) =>
      new TimingModel(c, { layers: shape.layers, experts: shape.topK })
    );
    this.#timing = TimingModel.chain(this.timings);
    this.#layers = shape.layers;
    this.#topK = shape.topK;
  }

  /** The number of misses of the next step (the one after the last pushed). */
  push(misses: number): void {
    if (this.#pending >= 0) this.#take(this.#pending, misses);
    this.#pending = misses;
  }

  /** Takes the last step (nothing left to prefetch after it). */
  finish(): void {
    if (this.#pending >= 0) this.#take(this.#pending, 0);
    this.#pending = -1;
  }

  /** A step that needs `count` uploads and issues the `next` step's. */
  #take(count: number, next: number): void {
    const timing = this.#timing;
    if (timing === null) return;
    const layer = this.#layer;
    timing.begin();
    if (this.#first) {
      for (let i = 0; i < count; i++) timing.load(i);
      this.#first = false;
    } else {
      for (let i = 0; i < count; i++) timing.use(layer, i);
    }
    for (let i = 0; i < next; i++) timing.prefetch(i);
    timing.end(layer, this.#topK);
    if (++this.#layer === this.#layers) {
      this.#layer = 0;
      timing.endToken();
    }
  }
}

/**
 * The oracle prefetcher's counters from a per-layer replay without prefetch:
 * only the very first step's k experts are demand loads; every other miss
 * becomes a prefetch issued one step early and used at once.
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
