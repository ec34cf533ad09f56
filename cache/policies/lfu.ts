/**
 * LFU with in-cache frequency: a key's count starts at 1 when a demand miss
 * brings it in (0 when a prefetch does), grows by 1 per hit and is forgotten
 * on eviction. The victim has the smallest count; ties go to the least
 * recently used. Eviction scans the partition's cached keys (O(capacity) per
 * miss, O(1) per hit).
 */
import {
  type CachePolicy,
  checkPolicyOptions,
  type Guard,
  MemberLists,
  NONE,
  type PolicyOptions,
  REFUSED,
} from "../policy.ts";

export class LfuPolicy implements CachePolicy {
  readonly name: string = "lfu";
  readonly capacity: number;
  #members: MemberLists;
  #count: Float64Array;
  #last: Float64Array;

  constructor(options: PolicyOptions) {
    checkPolicyOptions("lfu", options);
    this.capacity = options.capacity;
    this.#members = new MemberLists(options.keys, options.partitionKeys, options.capacity);
    this.#count = new Float64Array(options.keys);
    this.#last = new Float64Array(options.keys);
  }

  has(key: number): boolean {
    return this.#members.where[key]! >= 0;
  }

  hit(key: number, now: number): void {
    this.#count[key]!++;
    this.#last[key] = now;
  }

  admit(key: number, now: number, demand: boolean, guard: Guard): number {
    const m = this.#members;
    const p = m.partitionOf(key);
    let victim = NONE;
    if (m.count[p]! >= this.capacity) {
      victim = m.leastScored(p, this.#count, this.#last, guard);
      if (victim < 0) return REFUSED;
      m.remove(victim);
    }
    m.add(key);
    this.#count[key] = demand ? 1 : 0;
    this.#last[key] = now;
    return victim;
  }
}
