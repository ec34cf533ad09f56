/**
 * The access loop (libCacheSim's `cache_get_base`): an expert cache over a
 * `CachePolicy`, driven by the engine's real offloading one router decision
 * at a time. The simulator's replay runs the same loop fused with its timing
 * model (replay.ts; replay_test.ts checks the two agree step by step), so both
 * count the same uploads.
 *
 * Keys are `layer × E + expert`. Each call to `access` is one router decision:
 * the k experts of one layer for one token, first choice first. All of them are
 * guarded while they are loaded, so they never evict each other, and they
 * stay guarded through the `prefetch` calls that follow until the next
 * `access`. Hits and misses are processed in the order given.
 *
 * Online use (engine, issue 9):
 *
 * ```ts
 * const cache = new ExpertCache(createPolicy("lru", policyOptions({ layers, experts, topK, capacity })), { layers, experts });
 * // at every MoE layer, once the router has chosen `chosen` (expert ids):
 * const { misses, slots, evicted } = cache.request(layer, chosen);
 * // upload expert misses[i] of `layer` into slot slots[i] (slots count per layer for a
 * // per-layer budget, over all layers for a global one); evicted[i] left the cache.
 * ```
 *
 * `access` is the allocation-free form; its results are in
 * `missKeys[0..missCount)`, `evictedKeys[0..evictedCount)` and so on.
 */
import { type CachePolicy, Guard, type PolicyOptions, REFUSED } from "./policy.ts";

/** Marks a missing speculative pick in trace arrays (engine/trace.ts NO_EXPERT). */
const NO_EXPERT = 65535;

export type Budget = "per-layer" | "global";

/** Policy options for a model shape: partitions per layer or one global partition. */
export function policyOptions(o: {
  layers: number;
  experts: number;
  topK: number;
  /** Experts per layer (per-layer budget) or in all (global). */
  capacity: number;
  /** Default "per-layer". */
  budget?: Budget;
  seed?: number;
}): PolicyOptions {
  const keys = o.layers * o.experts;
  const options: PolicyOptions = {
    keys,
    partitionKeys: (o.budget ?? "per-layer") === "global" ? keys : o.experts,
    capacity: o.capacity,
    experts: o.experts,
    topK: o.topK,
    accessesPerToken: o.layers * o.topK,
  };
  if (o.seed !== undefined) options.seed = o.seed;
  return options;
}

/** Counters per layer (the layer of the key), as float64 so they never overflow. */
export interface CacheStats {
  hits: Float64Array;
  misses: Float64Array;
  evictions: Float64Array;
  /** Experts loaded by prefetch. */
  prefetchIssued: Float64Array;
  /** Prefetched experts whose first demand access came before their eviction. */
  prefetchUsed: Float64Array;
  /** Prefetched experts evicted before any demand access. */
  prefetchWasted: Float64Array;
}

export class ExpertCache {
  readonly policy: CachePolicy;
  readonly layers: number;
  readonly experts: number;
  readonly stats: CacheStats;
  /** Keys that may not be evicted: the last access's experts and the prefetches since. */
  readonly guard: Guard;
  /** [keys] 1 while a key sits in the cache because of a prefetch, not yet used. */
  readonly prefetched: Uint8Array;
  /** Keys loaded on demand by the last `access`. */
  readonly missKeys: Int32Array;
  missCount = 0;
  /** Prefetched keys whose first use was the last `access`. */
  readonly usedKeys: Int32Array;
  usedCount = 0;
  /** Keys loaded by the `prefetch` calls since the last `access`. */
  readonly issuedKeys: Int32Array;
  issuedCount = 0;
  /** Keys evicted since the last `access` began. */
  readonly evictedKeys: Int32Array;
  evictedCount = 0;
  /** [keys] slot of each cached key in its partition, -1 when not cached. */
  readonly slotOf: Int32Array;
  /** Access position: advances by the number of experts of each `access`. */
  position = 0;
  /** The last access's keys, in order. */
  #keys: Int32Array;
  // The counters of `stats`, held directly: one load fewer per update.
  #hits: Float64Array;
  #misses: Float64Array;
  #prefetchIssued: Float64Array;
  #prefetchUsed: Float64Array;
  #slotsUsed: Int32Array;
  #partitionKeys: number;

  constructor(
    policy: CachePolicy,
    shape: { layers: number; experts: number; budget?: Budget },
  ) {
    this.policy = policy;
    this.layers = shape.layers;
    this.experts = shape.experts;
    const keys = shape.layers * shape.experts;
    const M = shape.layers;
    this.stats = {
      hits: new Float64Array(M),
      misses: new Float64Array(M),
      evictions: new Float64Array(M),
      prefetchIssued: new Float64Array(M),
      prefetchUsed: new Float64Array(M),
      prefetchWasted: new Float64Array(M),
    };
    this.#hits = this.stats.hits;
    this.#misses = this.stats.misses;
    this.#prefetchIssued = this.stats.prefetchIssued;
    this.#prefetchUsed = this.stats.prefetchUsed;
    this.guard = new Guard(keys);
    this.prefetched = new Uint8Array(keys);
    this.missKeys = new Int32Array(keys);
    this.usedKeys = new Int32Array(keys);
    this.issuedKeys = new Int32Array(keys);
    this.evictedKeys = new Int32Array(keys);
    this.slotOf = new Int32Array(keys).fill(-1);
    this.#keys = new Int32Array(keys);
    this.#partitionKeys = (shape.budget ?? "per-layer") === "global" ? keys : shape.experts;
    this.#slotsUsed = new Int32Array(keys / this.#partitionKeys);
  }

  /**
   * One router decision: `count` experts of `layer` from `experts[offset..]`.
   * Returns the number of misses (demand loads); see `missKeys`.
   */
  access(layer: number, experts: ArrayLike<number>, offset: number, count: number): number {
    const guard = this.guard;
    const keys = this.#keys;
    guard.clear();
    const base = layer * this.experts;
    for (let j = 0; j < count; j++) {
      const key = base + experts[offset + j]!;
      guard.add(key);
      keys[j] = key;
    }
    this.usedCount = 0;
    this.issuedCount = 0;
    this.evictedCount = 0;
    const policy = this.policy;
    const position = this.position;
    const prefetched = this.prefetched;
    let misses = 0;
    for (let j = 0; j < count; j++) {
      const key = keys[j]!;
      if (policy.has(key)) {
        policy.hit(key, position + j);
        if (prefetched[key] === 1) {
          prefetched[key] = 0;
          this.#prefetchUsed[layer]!++;
          this.usedKeys[this.usedCount++] = key;
        }
      } else {
        const victim = policy.admit(key, position + j, true, guard);
        if (victim === REFUSED) {
          throw new RangeError(
            `${policy.name} cannot hold the ${count} experts layer ${layer} needs at once (capacity ${policy.capacity}).`,
          );
        }
        this.#placed(key, victim);
        this.missKeys[misses++] = key;
      }
    }
    this.missCount = misses;
    if (misses < count) this.#hits[layer]! += count - misses;
    if (misses > 0) this.#misses[layer]! += misses;
    this.position = position + count;
    return misses;
  }

  /**
   * Prefetches `count` experts of `layer` from `experts[offset..]` (NO_EXPERT
   * entries are skipped). Experts already cached are left as they are; the
   * others are admitted unless only guarded victims remain. The keys being
   * prefetched are guarded until the next `access`. Returns how many were
   * loaded; see `issuedKeys`.
   */
  prefetch(layer: number, experts: ArrayLike<number>, offset: number, count: number): number {
    const policy = this.policy;
    const guard = this.guard;
    const base = layer * this.experts;
    for (let j = 0; j < count; j++) {
      const e = experts[offset + j]!;
      if (e !== NO_EXPERT) guard.add(base + e);
    }
    let issued = 0;
    for (let j = 0; j < count; j++) {
      const e = experts[offset + j]!;
      if (e === NO_EXPERT) continue;
      const key = base + e;
      if (policy.has(key)) continue;
      const victim = policy.admit(key, this.position, false, guard);
      if (victim === REFUSED) continue;
      this.#placed(key, victim);
      this.prefetched[key] = 1;
      this.issuedKeys[this.issuedCount++] = key;
      issued++;
    }
    if (issued > 0) this.#prefetchIssued[layer]! += issued;
    return issued;
  }

  /** Convenience form of `access` for the engine: expert ids in, fresh arrays out. */
  request(layer: number, experts: ArrayLike<number>): {
    misses: number[];
    slots: number[];
    evicted: number[];
  } {
    this.access(layer, experts, 0, experts.length);
    const misses: number[] = [];
    const slots: number[] = [];
    const evicted: number[] = [];
    for (let i = 0; i < this.missCount; i++) {
      const key = this.missKeys[i]!;
      misses.push(key - layer * this.experts);
      slots.push(this.slotOf[key]!);
    }
    for (let i = 0; i < this.evictedCount; i++) {
      const key = this.evictedKeys[i]!;
      evicted.push(key % this.experts);
    }
    return { misses, slots, evicted };
  }

  /** Whether expert `expert` of `layer` is cached. */
  has(layer: number, expert: number): boolean {
    return this.policy.has(layer * this.experts + expert);
  }

  /** Slots ever used in a partition (layer, or 0 under a global budget): the buffer size needed. */
  slotsUsed(partition: number): number {
    return this.#slotsUsed[partition]!;
  }

  #placed(key: number, victim: number): void {
    if (victim >= 0) {
      const layer = (victim / this.experts) | 0;
      this.stats.evictions[layer]!++;
      if (this.prefetched[victim] === 1) {
        this.prefetched[victim] = 0;
        this.stats.prefetchWasted[layer]!++;
      }
      this.evictedKeys[this.evictedCount++] = victim;
      this.slotOf[key] = this.slotOf[victim]!;
      this.slotOf[victim] = -1;
    } else {
      const p = (key / this.#partitionKeys) | 0;
      this.slotOf[key] = this.#slotsUsed[p]!++;
    }
  }
}
