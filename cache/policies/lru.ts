/**
 * LRU: evict the least recently used key (demand accesses and prefetch
 * inserts both count as uses). O(1) per access: an intrusive doubly linked
 * list per partition over Int32Arrays, most recent at the head.
 */
import {
  type CachePolicy,
  checkPolicyOptions,
  KeyLists,
  NONE,
  type PolicyOptions,
  REFUSED,
} from "../policy.ts";

export class LruPolicy implements CachePolicy {
  readonly name: string = "lru";
  readonly capacity: number;
  #lists: KeyLists;
  #cached: Uint8Array;
  #size: Int32Array;
  #partitionKeys: number;

  constructor(options: PolicyOptions) {
    checkPolicyOptions("lru", options);
    this.capacity = options.capacity;
    this.#partitionKeys = options.partitionKeys;
    this.#lists = new KeyLists(options.keys, options.partitionKeys);
    this.#cached = new Uint8Array(options.keys);
    this.#size = new Int32Array(options.keys / options.partitionKeys);
  }

  has(key: number): boolean {
    return this.#cached[key] === 1;
  }

  hit(key: number, _now: number): void {
    this.#lists.moveToFront(key);
  }

  admit(key: number, _now: number, _demand: boolean, guard: Uint8Array): number {
    const p = (key / this.#partitionKeys) | 0;
    let victim = NONE;
    if (this.#size[p]! >= this.capacity) {
      victim = this.#lists.lastUnguarded(key, guard);
      if (victim < 0) return REFUSED;
      this.#lists.unlink(victim);
      this.#cached[victim] = 0;
    } else {
      this.#size[p]!++;
    }
    this.#lists.pushFront(key);
    this.#cached[key] = 1;
    return victim;
  }
}
