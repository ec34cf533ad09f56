/**
 * LRU: evict the least recently used key (demand accesses and prefetch
 * inserts both count as uses). O(1) per access: an intrusive doubly linked
 * list per partition over Int32Arrays, most recent at the head.
 */
import { ListPolicy, type PolicyOptions } from "../policy.ts";

export class LruPolicy extends ListPolicy {
  constructor(options: PolicyOptions) {
    super("lru", options);
  }

  override hit(key: number, _now: number): void {
    this.lists.moveToFront(key);
  }
}
