/**
 * Belady's MIN: evict the key whose next use is farthest in the future (never
 * used again counts as farthest). With demand loads only it is the optimal
 * offline policy, the bound every online policy is measured against.
 *
 * Offline only: it needs the whole access stream up front (`options.future`,
 * from `futureUses`), so the engine cannot use it for real offloading. The
 * positions passed as `now` must be the stream positions `future` was built
 * from. Eviction scans the partition (O(capacity) per miss).
 */
import {
  type CachePolicy,
  checkPolicyOptions,
  type FutureUses,
  type Guard,
  MemberLists,
  NEVER,
  NONE,
  type PolicyOptions,
  REFUSED,
} from "../policy.ts";

export class BeladyPolicy implements CachePolicy {
  readonly name: string = "belady";
  readonly capacity: number;
  #members: MemberLists;
  /** [keys] position of each key's next use from now. */
  #nextUse: Int32Array;
  #future: FutureUses;

  constructor(options: PolicyOptions) {
    checkPolicyOptions("belady", options);
    if (!options.future) {
      throw new RangeError("belady needs the whole access stream (options.future).");
    }
    this.capacity = options.capacity;
    this.#members = new MemberLists(options.keys, options.partitionKeys, options.capacity);
    this.#future = options.future;
    this.#nextUse = Int32Array.from(options.future.first);
  }

  has(key: number): boolean {
    return this.#members.where[key]! >= 0;
  }

  hit(key: number, now: number): void {
    this.#nextUse[key] = this.#future.next[now]!;
  }

  admit(key: number, now: number, demand: boolean, guard: Guard): number {
    const m = this.#members;
    const p = m.partitionOf(key);
    let victim = NONE;
    if (m.count[p]! >= this.capacity) {
      const base = p * this.capacity;
      let farthest = -1;
      for (let i = 0; i < this.capacity; i++) {
        const candidate = m.list[base + i]!;
        if (guard.has(candidate)) continue;
        const next = this.#nextUse[candidate]!;
        if (next > farthest) {
          farthest = next;
          victim = candidate;
        }
      }
      if (victim < 0) return REFUSED;
      m.remove(victim);
    }
    m.add(key);
    if (demand) this.#nextUse[key] = this.#future.next[now]!;
    return victim;
  }
}

/**
 * Next uses of a stream of keys, computed in one backward pass. `keyAt(i)`
 * gives the key at position i; positions run 0..length-1.
 */
export function futureUses(
  length: number,
  keys: number,
  keyAt: (i: number) => number,
): FutureUses {
  if (length >= NEVER) throw new RangeError(`belady handles streams below ${NEVER} accesses.`);
  const next = new Int32Array(length);
  const first = new Int32Array(keys).fill(NEVER);
  for (let i = length - 1; i >= 0; i--) {
    const key = keyAt(i);
    next[i] = first[key]!;
    first[key] = i;
  }
  return { next, first };
}

/** Next uses over a trace's access positions ((t × M + l) × k + rank). */
export function traceFutureUses(
  trace: { layers: number; experts: number; topK: number; chosen: Uint16Array },
): FutureUses {
  const { layers: M, experts: E, topK: k, chosen } = trace;
  return futureUses(chosen.length, M * E, (i) => (((i / k) | 0) % M) * E + chosen[i]!);
}
