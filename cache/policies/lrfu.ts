/**
 * LRFU, frequency and recency mixed (Lee et al., IEEE Trans. Computers
 * 2001; not LFRU, a different policy that splits the cache into a
 * privileged LRU part and an unprivileged LFU part): each key carries a combined recency-frequency value
 * CRF = Σ over its demand accesses since it entered the cache of 2^(−age/H),
 * where age is counted in tokens and H is the half-life (default 8 tokens).
 * The victim has the smallest CRF now; ties go to the least recently used.
 * H → 0 gives LRU, H → ∞ gives in-cache LFU. A prefetched key enters with
 * CRF 0. Eviction scans the partition (O(capacity) per miss).
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

export const DEFAULT_HALF_LIFE_TOKENS = 8;

export class LrfuPolicy implements CachePolicy {
  readonly name: string = "lrfu";
  readonly capacity: number;
  #members: MemberLists;
  /**
   * [keys] CRF scaled to time `#base`: Σ 2^((t_i − base)/H). CRF now is
   * weight × 2^((base − now)/H), a factor common to all keys, so evictions
   * compare weights directly (no power per candidate).
   */
  #weight: Float64Array;
  #last: Float64Array;
  #base = 0;
  /** Half-life in access positions. */
  #halfLife: number;
  /** Positions after `#base` at which the weights are rebased (exponent 512). */
  #rebaseAfter: number;
  /** [H] 2^(r/H) for an integer H, else null. */
  #fraction: Float64Array | null;
  /** [513] 2^q. */
  #powers: Float64Array;
  /** The last call's now − base, and its quotient and remainder by H. */
  #elapsed = 0;
  #q = 0;
  #r = 0;

  constructor(options: PolicyOptions) {
    checkPolicyOptions("lrfu", options);
    this.capacity = options.capacity;
    this.#members = new MemberLists(options.keys, options.partitionKeys, options.capacity);
    this.#weight = new Float64Array(options.keys);
    this.#last = new Float64Array(options.keys);
    this.#halfLife = (options.halfLifeTokens ?? DEFAULT_HALF_LIFE_TOKENS) *
      options.accessesPerToken;
    this.#rebaseAfter = 512 * this.#halfLife;
    const H = this.#halfLife;
    this.#fraction = Number.isInteger(H) && H <= 1 << 20
      ? Float64Array.from({ length: H }, (_, r) => 2 ** (r / H))
      : null;
    this.#powers = Float64Array.from({ length: 513 }, (_, q) => 2 ** q);
  }

  has(key: number): boolean {
    return this.#members.where[key]! >= 0;
  }

  /**
   * 2^((now − base)/H), rebasing every weight first when it would grow too
   * large. For an integer H it is 2^q · 2^(r/H) with now − base = qH + r, both
   * factors from tables: a power per access cost more than the rest of the
   * policy.
   */
  #unit(now: number): number {
    const elapsed = now - this.#base;
    if (elapsed > this.#rebaseAfter) {
      const scale = 2 ** (-elapsed / this.#halfLife);
      for (let i = 0; i < this.#weight.length; i++) this.#weight[i]! *= scale;
      this.#base = now;
      return 1;
    }
    const fraction = this.#fraction;
    if (fraction === null) return 2 ** (elapsed / this.#halfLife);
    // Positions only grow, and by little between calls: step the quotient
    // and remainder of the last call forward instead of dividing again.
    const H = fraction.length;
    let q = this.#q;
    let r = this.#r + elapsed - this.#elapsed;
    if (r < 0 || r >= 2 * H) {
      q = Math.floor(elapsed / H);
      r = elapsed - q * H;
    } else if (r >= H) {
      r -= H;
      q++;
    }
    this.#q = q;
    this.#r = r;
    this.#elapsed = elapsed;
    return this.#powers[q]! * fraction[r]!;
  }

  hit(key: number, now: number): void {
    // The unit first: it may rebase every weight, this key's included, and
    // `weight[key] += unit(now)` would read the key's weight before that.
    const unit = this.#unit(now);
    this.#weight[key]! += unit;
    this.#last[key] = now;
  }

  admit(key: number, now: number, demand: boolean, guard: Guard): number {
    const m = this.#members;
    const p = m.partitionOf(key);
    let victim = NONE;
    if (m.count[p]! >= this.capacity) {
      victim = m.leastScored(p, this.#weight, this.#last, guard);
      if (victim < 0) return REFUSED;
      m.remove(victim);
    }
    m.add(key);
    this.#weight[key] = demand ? this.#unit(now) : 0;
    this.#last[key] = now;
    return victim;
  }
}
