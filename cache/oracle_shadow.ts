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

/** Steps an OracleShadow buffers before taking them. */
const SHADOW_CHUNK = 4096;

/**
 * Timing of the oracle prefetcher from the miss counts of a per-layer cache
 * without prefetch. The counts are enough: every other expert a step needs
 * was waited for at an earlier step, so only the uploads issued for this step
 * can still be in flight. Feed every step's miss count in order with `push`,
 * then call `finish`.
 */
export class OracleShadow {
  readonly timings: TimingModel[];
  #layers: number;
  #topK: number;
  /**
   * Miss counts of the steps pushed and not yet taken. A step is taken once
   * the next one's count is known, a chunk at a time: one tight loop per
   * timing model instead of a chain of calls per step.
   */
  #pending = new Uint16Array(SHADOW_CHUNK);
  #count = 0;
  /** Steps taken so far. */
  #taken = 0;
  /** Per timing model: [k] when the uploads for the next step to take complete, ms. */
  #done: Float64Array[];

  constructor(
    costs: readonly StepCosts[],
    shape: { layers: number; experts: number; topK: number },
  ) {
    this.timings = costs.map((c) => new TimingModel(c, shape));
    this.#layers = shape.layers;
    this.#topK = shape.topK;
    this.#done = costs.map(() => new Float64Array(shape.topK));
  }

  /** The number of misses of the next step (the one after the last pushed). */
  push(misses: number): void {
    this.#pending[this.#count++] = misses;
    if (this.#count === SHADOW_CHUNK) {
      // All but the last step know their successor's count: take them.
      const n = SHADOW_CHUNK - 1;
      this.#take(n, this.#pending[n]!);
      this.#pending[0] = this.#pending[n]!;
      this.#count = 1;
    }
  }

  /** Takes the remaining steps (nothing left to prefetch after the last). */
  finish(): void {
    this.#take(this.#count, 0);
    this.#count = 0;
  }

  /** Takes the first `n` pending steps; the step after the last of them needs `lastNext` uploads. */
  #take(n: number, lastNext: number): void {
    if (n === 0) return;
    const first = this.#taken === 0;
    const layer0 = this.#taken % this.#layers;
    for (let i = 0; i < this.timings.length; i++) {
      this.timings[i]!.oracleSteps(
        this.#pending,
        n,
        lastNext,
        first,
        layer0,
        this.#layers,
        this.#done[i]!,
        this.#topK,
      );
    }
    this.#taken += n;
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
