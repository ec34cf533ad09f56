/**
 * FIFO: evict the key that entered the cache first; hits change nothing.
 * Same intrusive list as LRU, but only insertion moves a key to the head.
 */
import {
  type CachePolicy,
  checkPolicyOptions,
  KeyLists,
  NONE,
  type PolicyOptions,
  REFUSED,
} from "../policy.ts";

export class FifoPolicy implements CachePolicy {
  readonly name: string = "fifo";
  readonly capacity: number;
  #lists: KeyLists;
  #cached: Uint8Array;
  #size: Int32Array;
  #partitionKeys: number;

  constructor(options: PolicyOptions) {
    checkPolicyOptions("fifo", options);
    this.capacity = options.capacity;
    this.#partitionKeys = options.partitionKeys;
    this.#lists = new KeyLists(options.keys, options.partitionKeys);
    this.#cached = new Uint8Array(options.keys);
    this.#size = new Int32Array(options.keys / options.partitionKeys);
  }

  has(key: number): boolean {
    return this.#cached[key] === 1;
  }

  hit(_key: number, _now: number): void {}

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
