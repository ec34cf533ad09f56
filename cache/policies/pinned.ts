/**
 * Pinned: in each partition (a layer, or everything under a global budget)
 * the capacity − k most used keys are pinned, loaded on first use and never
 * evicted; the remaining k slots stream every other expert, LRU among them
 * (k slots rather than one, because a layer may need k unpinned experts at
 * once and the current selection is never evicted to make room for itself).
 * "Most used" comes from a profile of access counts per key (`options.counts`;
 * the simulator uses the trace itself, an offline choice; the engine can pass
 * counts from an earlier trace). Ties go to the lower key.
 */
import {
  type CachePolicy,
  checkPolicyOptions,
  type Guard,
  KeyLists,
  NONE,
  partitionTable,
  type PolicyOptions,
  REFUSED,
} from "../policy.ts";

export class PinnedPolicy implements CachePolicy {
  readonly name: string = "pinned";
  readonly capacity: number;
  /** [keys] 1 for pinned keys. */
  readonly pinned: Uint8Array;
  #lists: KeyLists;
  #cached: Uint8Array;
  /** [partitions] streamed keys cached. */
  #streamed: Int32Array;
  #slots: number;
  #partition: Int32Array;

  constructor(options: PolicyOptions) {
    checkPolicyOptions("pinned", options);
    if (!options.counts || options.counts.length !== options.keys) {
      throw new RangeError(`pinned needs access counts for all ${options.keys} keys.`);
    }
    this.capacity = options.capacity;
    this.#partition = partitionTable(options.keys, options.partitionKeys);
    this.#slots = Math.min(options.topK, options.capacity);
    this.#lists = new KeyLists(options.keys, options.partitionKeys);
    this.#cached = new Uint8Array(options.keys);
    this.#streamed = new Int32Array(options.keys / options.partitionKeys);
    this.pinned = new Uint8Array(options.keys);
    const pins = Math.max(0, options.capacity - this.#slots);
    const counts = options.counts;
    for (let start = 0; start < options.keys; start += options.partitionKeys) {
      const order = Array.from({ length: options.partitionKeys }, (_, i) => start + i);
      order.sort((a, b) => counts[b]! - counts[a]! || a - b);
      for (let i = 0; i < Math.min(pins, order.length); i++) this.pinned[order[i]!] = 1;
    }
  }

  has(key: number): boolean {
    return this.#cached[key] === 1;
  }

  hit(key: number, _now: number): void {
    if (this.pinned[key] === 0) this.#lists.moveToFront(key);
  }

  admit(key: number, _now: number, _demand: boolean, guard: Guard): number {
    if (this.pinned[key] === 1) {
      this.#cached[key] = 1;
      return NONE;
    }
    const p = this.#partition[key]!;
    let victim = NONE;
    if (this.#streamed[p]! >= this.#slots) {
      victim = this.#lists.lastUnguarded(key, guard);
      if (victim < 0) return REFUSED;
      this.#lists.unlink(victim);
      this.#cached[victim] = 0;
    } else {
      this.#streamed[p]!++;
    }
    this.#lists.pushFront(key);
    this.#cached[key] = 1;
    return victim;
  }
}
