/**
 * The cache-policy interface (libCacheSim-style: one policy per file in
 * `policies/`, the access loop written once in `expert_cache.ts`).
 *
 * A policy manages integer keys `0..keys-1`; moetrace uses
 * `key = layer × E + expert`. Keys are grouped into partitions of
 * `partitionKeys` consecutive keys: `E` for a per-layer budget (one partition
 * per layer), `layers × E` for a global budget (one partition). Each partition
 * holds at most `capacity` keys.
 *
 * A policy never allocates per access; all state lives in typed arrays sized
 * at construction. `now` is the access position (the index of the access in
 * the stream: (token × layers + layer) × k + rank for a trace); policies that
 * need time (recency, decay, next use) read it, the others ignore it.
 */

/**
 * The keys that may not be evicted now: the experts of the current router
 * decision (so they never evict each other) and the prefetches issued with
 * it. Keys are stamped with the current step, so releasing them all is one
 * increment instead of a loop.
 */
export class Guard {
  /** [keys] the step at which each key was last guarded. */
  readonly stamp: Int32Array;
  /** Keys stamped with this value are guarded. */
  step = 1;

  constructor(keys: number) {
    this.stamp = new Int32Array(keys);
  }

  has(key: number): boolean {
    return this.stamp[key] === this.step;
  }

  add(key: number): void {
    this.stamp[key] = this.step;
  }

  /** Releases every key. */
  clear(): void {
    if (this.step === 0x7fffffff) {
      this.stamp.fill(0);
      this.step = 0;
    }
    this.step++;
  }
}

/** Returned by `admit` when nothing had to be evicted. */
export const NONE = -1;
/** Returned by `admit` when the partition is full of guarded keys: the key was not inserted. */
export const REFUSED = -2;

export interface CachePolicy {
  /** The policy's name as given to `--policy`. */
  readonly name: string;
  /** Keys one partition holds at most. */
  readonly capacity: number;
  /** True when `key` is cached. Changes nothing. */
  has(key: number): boolean;
  /** A demand access to a cached `key` at position `now`. */
  hit(key: number, now: number): void;
  /**
   * Inserts `key` (not cached), first evicting one key of its partition when
   * the partition is full. Keys in `guard` are never evicted (the experts the
   * current layer needs, and prefetches being issued together).
   * `demand` is false for a prefetch. Returns the evicted key, `NONE` when no
   * eviction was needed, or `REFUSED` when every candidate victim is guarded;
   * then `key` was not inserted.
   */
  admit(key: number, now: number, demand: boolean, guard: Guard): number;
}

/** Next-use oracle for offline policies (Belady): built from the whole access stream. */
export interface FutureUses {
  /** For every access position i, the position of the next access to the same key, or NEVER. */
  next: Int32Array;
  /** For every key, the position of its first access, or NEVER. */
  first: Int32Array;
}

/** A position after every access. */
export const NEVER = 0x7fffffff;

export interface PolicyOptions {
  /** Number of keys: layers × experts. */
  keys: number;
  /** Keys per partition: E for a per-layer budget, layers × E for a global one. */
  partitionKeys: number;
  /** Keys each partition may hold (≥ 1; the cache requires ≥ k). */
  capacity: number;
  /** E, experts per layer (swap keeps a per-layer selection whatever the budget). */
  experts: number;
  /** k, experts chosen per token and layer. */
  topK: number;
  /** Accesses per token, layers × k (lrfu's half-life is in tokens). */
  accessesPerToken: number;
  /** random: seed (default 0). */
  seed?: number;
  /** belady: the whole access stream's next uses (offline only). */
  future?: FutureUses;
  /** pinned: accesses per key in a profile (the trace itself when simulating). */
  counts?: ArrayLike<number>;
  /** lrfu: half-life of an access's weight, in tokens (default 8). */
  halfLifeTokens?: number;
}

/** [keys] the partition of each key: a table lookup is cheaper than a division per access. */
export function partitionTable(keys: number, partitionKeys: number): Int32Array {
  const table = new Int32Array(keys);
  for (let key = 0; key < keys; key++) table[key] = Math.floor(key / partitionKeys);
  return table;
}

/**
 * The keys of each partition as a dense list, so policies that scan their
 * contents (lfu, lrfu, belady, random) touch only cached keys.
 */
export class MemberLists {
  /** [partitions × capacity] the cached keys of each partition, first `count[p]` valid. */
  readonly list: Int32Array;
  /** [partitions] */
  readonly count: Int32Array;
  /** [keys] index of the key in its partition's list, -1 when not cached. */
  readonly where: Int32Array;
  readonly capacity: number;
  readonly partitionKeys: number;
  /** [keys] partition of each key. */
  readonly partition: Int32Array;

  constructor(keys: number, partitionKeys: number, capacity: number) {
    const partitions = Math.ceil(keys / partitionKeys);
    this.partition = partitionTable(keys, partitionKeys);
    this.list = new Int32Array(partitions * capacity);
    this.count = new Int32Array(partitions);
    this.where = new Int32Array(keys).fill(-1);
    this.capacity = capacity;
    this.partitionKeys = partitionKeys;
  }

  has(key: number): boolean {
    return this.where[key]! >= 0;
  }

  partitionOf(key: number): number {
    return this.partition[key]!;
  }

  isFull(partition: number): boolean {
    return this.count[partition]! >= this.capacity;
  }

  add(key: number): void {
    const p = this.partition[key]!;
    const n = this.count[p]!;
    this.list[p * this.capacity + n] = key;
    this.where[key] = n;
    this.count[p] = n + 1;
  }

  /**
   * The unguarded cached key of `partition` with the smallest `score`, ties
   * to the smallest `last` (least recently used); NONE when all are guarded.
   * The victim rule of the frequency policies (lfu, lrfu).
   */
  leastScored(
    partition: number,
    score: ArrayLike<number>,
    last: ArrayLike<number>,
    guard: Guard,
  ): number {
    const base = partition * this.capacity;
    let victim = NONE;
    let best = Infinity;
    let bestLast = Infinity;
    for (let i = 0; i < this.count[partition]!; i++) {
      const candidate = this.list[base + i]!;
      if (guard.has(candidate)) continue;
      const value = score[candidate]!;
      const t = last[candidate]!;
      if (value < best || (value === best && t < bestLast)) {
        best = value;
        bestLast = t;
        victim = candidate;
      }
    }
    return victim;
  }

  remove(key: number): void {
    const p = this.partition[key]!;
    const base = p * this.capacity;
    const i = this.where[key]!;
    const last = this.count[p]! - 1;
    const moved = this.list[base + last]!;
    this.list[base + i] = moved;
    this.where[moved] = i;
    this.where[key] = -1;
    this.count[p] = last;
  }
}

/**
 * A doubly linked list per partition over Int32Arrays (intrusive: node = key;
 * one sentinel per partition at index keys + partition). Head = most recent.
 */
export class KeyLists {
  readonly prev: Int32Array;
  readonly next: Int32Array;
  /** [keys] the sentinel of each key's partition (a table: cheaper than a division). */
  readonly sentinelOf: Int32Array;
  readonly keys: number;
  readonly partitionKeys: number;

  constructor(keys: number, partitionKeys: number) {
    const partitions = Math.ceil(keys / partitionKeys);
    this.keys = keys;
    this.partitionKeys = partitionKeys;
    this.prev = new Int32Array(keys + partitions).fill(-1);
    this.next = new Int32Array(keys + partitions).fill(-1);
    this.sentinelOf = new Int32Array(keys);
    for (let key = 0; key < keys; key++) {
      this.sentinelOf[key] = keys + Math.floor(key / partitionKeys);
    }
    for (let p = 0; p < partitions; p++) {
      this.prev[keys + p] = keys + p;
      this.next[keys + p] = keys + p;
    }
  }

  sentinel(key: number): number {
    return this.sentinelOf[key]!;
  }

  pushFront(key: number): void {
    const s = this.sentinelOf[key]!;
    const first = this.next[s]!;
    this.prev[key] = s;
    this.next[key] = first;
    this.prev[first] = key;
    this.next[s] = key;
  }

  unlink(key: number): void {
    const p = this.prev[key]!;
    const n = this.next[key]!;
    this.next[p] = n;
    this.prev[n] = p;
    this.prev[key] = -1;
    this.next[key] = -1;
  }

  moveToFront(key: number): void {
    const s = this.sentinelOf[key]!;
    if (this.next[s] === key) return;
    const p = this.prev[key]!;
    const n = this.next[key]!;
    this.next[p] = n;
    this.prev[n] = p;
    const first = this.next[s]!;
    this.prev[key] = s;
    this.next[key] = first;
    this.prev[first] = key;
    this.next[s] = key;
  }

  /** The least recent unguarded key of the partition of `key`, or -1. */
  lastUnguarded(key: number, guard: Guard): number {
    const s = this.sentinelOf[key]!;
    let node = this.prev[s]!;
    while (node !== s) {
      if (!guard.has(node)) return node;
      node = this.prev[node]!;
    }
    return -1;
  }
}

/** Throws when options cannot make a working cache. */
export function checkPolicyOptions(name: string, o: PolicyOptions): void {
  if (!Number.isInteger(o.capacity) || o.capacity < 1) {
    throw new RangeError(`${name}: capacity must be a positive integer, got ${o.capacity}.`);
  }
  if (o.keys % o.partitionKeys !== 0) {
    throw new RangeError(
      `${name}: ${o.keys} keys do not split into partitions of ${o.partitionKeys}.`,
    );
  }
}

/**
 * A cache kept as one list per partition, newest key at the head, evicting
 * the last unguarded key: FIFO as it is, LRU by moving a hit to the head
 * (override `hit`), swap as FIFO with k slots per layer.
 */
export class ListPolicy implements CachePolicy {
  readonly name: string;
  readonly capacity: number;
  protected readonly lists: KeyLists;
  #cached: Uint8Array;
  #size: Int32Array;
  #partition: Int32Array;

  constructor(name: string, options: PolicyOptions) {
    checkPolicyOptions(name, options);
    this.name = name;
    this.capacity = options.capacity;
    this.#partition = partitionTable(options.keys, options.partitionKeys);
    this.lists = new KeyLists(options.keys, options.partitionKeys);
    this.#cached = new Uint8Array(options.keys);
    this.#size = new Int32Array(options.keys / options.partitionKeys);
  }

  has(key: number): boolean {
    return this.#cached[key] === 1;
  }

  hit(_key: number, _now: number): void {}

  admit(key: number, _now: number, _demand: boolean, guard: Guard): number {
    const p = this.#partition[key]!;
    let victim = NONE;
    if (this.#size[p]! >= this.capacity) {
      victim = this.lists.lastUnguarded(key, guard);
      if (victim < 0) return REFUSED;
      this.lists.unlink(victim);
      this.#cached[victim] = 0;
    } else {
      this.#size[p]!++;
    }
    this.lists.pushFront(key);
    this.#cached[key] = 1;
    return victim;
  }
}
