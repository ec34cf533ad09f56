/** The cache policies, one per file, and a factory by name. */
import type { CachePolicy, PolicyOptions } from "../policy.ts";
import { BeladyPolicy } from "./belady.ts";
import { FifoPolicy } from "./fifo.ts";
import { LfruPolicy } from "./lfru.ts";
import { LfuPolicy } from "./lfu.ts";
import { LruPolicy } from "./lru.ts";
import { PinnedPolicy } from "./pinned.ts";
import { RandomPolicy } from "./random.ts";
import { SwapPolicy } from "./swap.ts";

export { BeladyPolicy, futureUses, traceFutureUses } from "./belady.ts";
export { FifoPolicy } from "./fifo.ts";
export { DEFAULT_HALF_LIFE_TOKENS, LfruPolicy } from "./lfru.ts";
export { LfuPolicy } from "./lfu.ts";
export { LruPolicy } from "./lru.ts";
export { PinnedPolicy } from "./pinned.ts";
export { RandomPolicy } from "./random.ts";
export { SwapPolicy } from "./swap.ts";

export const POLICY_NAMES = [
  "lru",
  "fifo",
  "lfu",
  "lfru",
  "random",
  "belady",
  "swap",
  "pinned",
] as const;
export type PolicyName = typeof POLICY_NAMES[number];

/** Policies that need the whole trace (future accesses or total counts) up front. */
export const OFFLINE_POLICIES: readonly PolicyName[] = ["belady", "pinned"];

export function isPolicyName(name: string): name is PolicyName {
  return (POLICY_NAMES as readonly string[]).includes(name);
}

/** A fresh policy; belady needs `options.future`, pinned `options.counts`. */
export function createPolicy(name: PolicyName, options: PolicyOptions): CachePolicy {
  switch (name) {
    case "lru":
      return new LruPolicy(options);
    case "fifo":
      return new FifoPolicy(options);
    case "lfu":
      return new LfuPolicy(options);
    case "lfru":
      return new LfruPolicy(options);
    case "random":
      return new RandomPolicy(options);
    case "belady":
      return new BeladyPolicy(options);
    case "swap":
      return new SwapPolicy(options);
    case "pinned":
      return new PinnedPolicy(options);
  }
}
