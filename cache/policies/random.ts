/**
 * Random: evict a uniformly random unguarded cached key (seeded `Rng`, so a
 * run is reproducible). O(capacity) per miss up to 16 keys a partition, O(1)
 * expected above.
 */
import { Rng } from "../../common/random.ts";
import {
  type CachePolicy,
  checkPolicyOptions,
  type Guard,
  MemberLists,
  NONE,
  type PolicyOptions,
  REFUSED,
} from "../policy.ts";

/** Partitions up to this capacity draw a victim exactly, with one random number. */
const EXACT_DRAW_UP_TO = 16;

export class RandomPolicy implements CachePolicy {
  readonly name: string = "random";
  readonly capacity: number;
  #members: MemberLists;
  #rng: Rng;
  /** [capacity] scratch: the unguarded keys of the partition being drawn from. */
  #candidates: Int32Array;

  constructor(options: PolicyOptions) {
    checkPolicyOptions("random", options);
    this.capacity = options.capacity;
    this.#members = new MemberLists(options.keys, options.partitionKeys, options.capacity);
    this.#rng = new Rng(options.seed ?? 0);
    this.#candidates = new Int32Array(options.capacity);
  }

  has(key: number): boolean {
    return this.#members.where[key]! >= 0;
  }

  hit(_key: number, _now: number): void {}

  admit(key: number, _now: number, _demand: boolean, guard: Guard): number {
    const m = this.#members;
    const p = m.partitionOf(key);
    let victim = NONE;
    if (m.count[p]! >= this.capacity) {
      const base = p * this.capacity;
      // Small partitions: one draw among the unguarded keys, counted first.
      // Large ones: rejection sampling, since few of their keys are guarded.
      if (this.capacity > EXACT_DRAW_UP_TO) {
        for (let tries = 0; tries < 32 && victim < 0; tries++) {
          const candidate = m.list[base + this.#rng.int(this.capacity)]!;
          if (!guard.has(candidate)) victim = candidate;
        }
      }
      if (victim < 0) {
        const candidates = this.#candidates;
        let free = 0;
        for (let i = 0; i < this.capacity; i++) {
          const candidate = m.list[base + i]!;
          if (!guard.has(candidate)) candidates[free++] = candidate;
        }
        if (free === 0) return REFUSED;
        victim = candidates[this.#rng.int(free)]!;
      }
      m.remove(victim);
    }
    m.add(key);
    return victim;
  }
}
