/**
 * The access loop, written once (libCacheSim's `cache_get_base`): an expert
 * cache over a `CachePolicy`. The engine's real offloading drives it one
 * router decision at a time (`request` or `access`, then `prefetch`), and so
 * does the simulator's replay (replay.ts), which iterates the trace and feeds
 * it; both therefore count the same uploads. What the cache does is told to a
 * `CacheListener` as it happens: the replay's timing model is one.
 *
 * Keys are `layer × E + expert`. Each call to `access` is one router decision:
 * the k experts of one layer for one token, first choice first. All of them are
 * guarded while they are loaded, so they never evict each other, and they
 * stay guarded through the `prefetch` calls that follow until the next
 * `access`. Hits and misses are processed in the order given.
 *
 * Online use (engine):
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
import { NO_EXPERT } from "../trace/mod.ts";
import { type CachePolicy, Guard, partitionTable, type PolicyOptions, REFUSED } from "./policy.ts";

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

/**
 * What the cache tells a listener, as it decides (the timing model listens).
 * Within one router decision: `load` and `use` for its experts in their order,
 * then `prefetch` for each key the following `prefetch` calls load.
 */
export interface CacheListener {
  /** The current access loads `key` on demand. */
  load(key: number): void;
  /** A prefetch loads `key`. */
  prefetch(key: number): void;
  /** The current access, at `layer`, is the first use of the prefetched `key`. */
  use(layer: number, key: number): void;
  /**
   * The current access hits `key`, not as a first use (told only when the
   * cache is built with `hits: true`: `simulate --miss-dtype` counts uses of
   * low-precision copies).
   */
  hit?(key: number): void;
}

export class ExpertCache {
  readonly policy: CachePolicy;
  readonly layers: number;
  readonly experts: number;
  /** Told every load, prefetch and first use (null: nobody listens). */
  readonly listener: CacheListener | null;
  /** The listener when it is also told hits (option `hits`), else null. */
  #hitListener: CacheListener | null;
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
  /** Keys evicted since the last `access` began (kept only with slots). */
  readonly evictedKeys: Int32Array;
  evictedCount = 0;
  /** [keys] slot of each cached key in its partition, -1 when not cached. */
  readonly slotOf: Int32Array;
  /** Access position: advances by the number of experts of each `access`. */
  position = 0;
  /** [keys] layer of each key. */
  #layerOf: Int32Array;
  /** [keys] partition of each key: its layer, or 0 under a global budget. */
  #partitionOf: Int32Array;
  /** Whether slots (`slotOf`, `evictedKeys`, `slotsUsed`) are kept: the engine's uploads need them, a replay does not. */
  #slots: boolean;
  /** Whether an expert that finds only guarded victims is streamed (loaded, used, not kept) instead of an error. */
  #stream: boolean;
  #stats: CacheStats;
  /** [M] demand accesses: hits are accesses − misses, so a hit counts nothing. */
  #accesses: Float64Array;
  // The counters of `stats`, held directly: one load fewer per update.
  #misses: Float64Array;
  #prefetchIssued: Float64Array;
  #prefetchUsed: Float64Array;
  #evictions: Float64Array;
  #prefetchWasted: Float64Array;
  #slotsUsed: Int32Array;

  constructor(
    policy: CachePolicy,
    shape: { layers: number; experts: number; budget?: Budget },
    options: {
      /** Keep slot numbers for uploads (default true; a replay needs none). */
      slots?: boolean;
      /** Default null. */
      listener?: CacheListener | null;
      /**
       * Stream what does not fit (default false: an error). A batched replay
       * (batch.ts) accesses the union of several tokens' experts at once,
       * which may exceed the capacity: the experts that find every victim
       * guarded are uploaded and used but not cached (a miss each).
       */
      stream?: boolean;
      /** Also tell the listener every hit that is not a first use (default false). */
      hits?: boolean;
    } = {},
  ) {
    this.policy = policy;
    this.layers = shape.layers;
    this.experts = shape.experts;
    this.listener = options.listener ?? null;
    this.#hitListener = options.hits === true ? this.listener : null;
    const keys = shape.layers * shape.experts;
    const M = shape.layers;
    this.#slots = options.slots ?? true;
    this.#stream = options.stream ?? false;
    this.#accesses = new Float64Array(M);
    this.#stats = {
      hits: new Float64Array(M),
      misses: new Float64Array(M),
      evictions: new Float64Array(M),
      prefetchIssued: new Float64Array(M),
      prefetchUsed: new Float64Array(M),
      prefetchWasted: new Float64Array(M),
    };
    this.#misses = this.#stats.misses;
    this.#prefetchIssued = this.#stats.prefetchIssued;
    this.#prefetchUsed = this.#stats.prefetchUsed;
    this.#evictions = this.#stats.evictions;
    this.#prefetchWasted = this.#stats.prefetchWasted;
    this.guard = new Guard(keys);
    this.prefetched = new Uint8Array(keys);
    this.missKeys = new Int32Array(keys);
    this.usedKeys = new Int32Array(keys);
    this.issuedKeys = new Int32Array(keys);
    this.evictedKeys = new Int32Array(keys);
    this.slotOf = new Int32Array(keys).fill(-1);
    const partitionKeys = (shape.budget ?? "per-layer") === "global" ? keys : shape.experts;
    this.#layerOf = partitionTable(keys, shape.experts);
    this.#partitionOf = partitionTable(keys, partitionKeys);
    this.#slotsUsed = new Int32Array(keys / partitionKeys);
  }

  /** The counters so far (hits derived from the accesses counted). */
  get stats(): CacheStats {
    const stats = this.#stats;
    for (let l = 0; l < this.layers; l++) stats.hits[l] = this.#accesses[l]! - stats.misses[l]!;
    return stats;
  }

  /**
   * One router decision: `count` experts of `layer` from `experts[offset..]`.
   * Returns the number of misses (demand loads); see `missKeys`.
   */
  access(layer: number, experts: ArrayLike<number>, offset: number, count: number): number {
    const guard = this.guard;
    guard.clear();
    const base = layer * this.experts;
    this.missCount = 0;
    this.usedCount = 0;
    this.issuedCount = 0;
    this.evictedCount = 0;
    const position = this.position;
    if (count === 2) {
      // Mixtral's top-2 written out, the one fast path: V8 unrolls neither
      // loop, and a replay of top-2 (the benchmark's shape) ran 2-9% faster
      // this way (CPU time, 200k tokens × 32 layers, LRU and LFU).
      const a = base + experts[offset]!;
      const b = base + experts[offset + 1]!;
      guard.add(a);
      guard.add(b);
      this.#demand(a, position, layer);
      this.#demand(b, position + 1, layer);
    } else {
      for (let j = 0; j < count; j++) guard.add(base + experts[offset + j]!);
      for (let j = 0; j < count; j++) {
        this.#demand(base + experts[offset + j]!, position + j, layer);
      }
    }
    this.position = position + count;
    this.#accesses[layer]! += count;
    return this.missCount;
  }

  /**
   * Prefetches `count` experts of `layer` from `experts[offset..]` (NO_EXPERT
   * entries are skipped). Experts already cached are left as they are; the
   * others are admitted unless only guarded victims remain. The keys being
   * prefetched are guarded until the next `access`. Returns how many were
   * loaded; see `issuedKeys`.
   */
  prefetch(layer: number, experts: ArrayLike<number>, offset: number, count: number): number {
    const guard = this.guard;
    const base = layer * this.experts;
    // Prefetches issued together never evict each other: all are guarded first.
    for (let j = 0; j < count; j++) {
      const e = experts[offset + j]!;
      if (e !== NO_EXPERT) guard.add(base + e);
    }
    const before = this.issuedCount;
    for (let j = 0; j < count; j++) {
      const e = experts[offset + j]!;
      if (e !== NO_EXPERT) this.#prefetch(base + e);
    }
    return this.issuedCount - before;
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

  /** A demand access to the guarded `key` of `layer` at access position `now`. */
  #demand(key: number, now: number, layer: number): void {
    const policy = this.policy;
    if (policy.has(key)) {
      policy.hit(key, now);
      if (this.prefetched[key] === 1) {
        this.prefetched[key] = 0;
        this.#prefetchUsed[layer]!++;
        this.usedKeys[this.usedCount++] = key;
        this.listener?.use(layer, key);
      } else if (this.#hitListener !== null) this.#hitListener.hit!(key);
      return;
    }
    const victim = policy.admit(key, now, true, this.guard);
    if (victim === REFUSED) {
      if (!this.#stream) this.#refused(key);
    } else {
      this.#placed(key, victim);
    }
    this.#misses[layer]!++;
    this.missKeys[this.missCount++] = key;
    this.listener?.load(key);
  }

  /** Prefetches the guarded `key` unless it is cached or only guarded victims remain. */
  #prefetch(key: number): void {
    const policy = this.policy;
    if (policy.has(key)) return;
    const victim = policy.admit(key, this.position, false, this.guard);
    if (victim === REFUSED) return;
    this.#placed(key, victim);
    this.prefetched[key] = 1;
    this.#prefetchIssued[this.#layerOf[key]!]!++;
    this.issuedKeys[this.issuedCount++] = key;
    this.listener?.prefetch(key);
  }

  // Out of `#demand`: a throw with its message is large bytecode, and V8
  // inlines small callees only.
  #refused(key: number): never {
    const policy = this.policy;
    throw new RangeError(
      `${policy.name} cannot hold the experts layer ${
        this.#layerOf[key]
      } needs at once (capacity ${policy.capacity}).`,
    );
  }

  #placed(key: number, victim: number): void {
    if (victim >= 0) {
      const layer = this.#layerOf[victim]!;
      this.#evictions[layer]!++;
      if (this.prefetched[victim] === 1) {
        this.prefetched[victim] = 0;
        this.#prefetchWasted[layer]!++;
      }
      if (this.#slots) this.#moveSlot(key, victim);
    } else if (this.#slots) {
      const p = this.#partitionOf[key]!;
      this.slotOf[key] = this.#slotsUsed[p]!++;
    }
  }

  /** `key` takes the slot of the evicted `victim`. */
  #moveSlot(key: number, victim: number): void {
    this.evictedKeys[this.evictedCount++] = victim;
    this.slotOf[key] = this.slotOf[victim]!;
    this.slotOf[victim] = -1;
  }
}
