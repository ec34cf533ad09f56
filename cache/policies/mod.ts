/** The cache policies, one per file, and a factory by name. */
import type { CachePolicy, PolicyOptions } from "../policy.ts";
import { BeladyPolicy } from "./belady.ts";
import { FifoPolicy } from "./fifo.ts";
import { LrfuPolicy } from "./lrfu.ts";
import { LfuPolicy } from "./lfu.ts";
import { LruPolicy } from "./lru.ts";
import { PinnedPolicy } from "./pinned.ts";
import { RandomPolicy } from "./random.ts";
import { SwapPolicy } from "./swap.ts";

export { BeladyPolicy, futureUses, traceFutureUses } from "./belady.ts";
export { FifoPolicy } from "./fifo.ts";
export { DEFAULT_HALF_LIFE_TOKENS, LrfuPolicy } from "./lrfu.ts";
export { LfuPolicy } from "./lfu.ts";
export { LruPolicy } from "./lru.ts";
export { PinnedPolicy } from "./pinned.ts";
export { RandomPolicy } from "./random.ts";
export { SwapPolicy } from "./swap.ts";

export const POLICY_NAMES = [
  "lru",
  "fifo",
  "lfu",
  "lrfu",
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

/** Old names still accepted on the command line: the policy each means and why it changed. */
const DEPRECATED_NAMES: Readonly<Record<string, { policy: PolicyName; why: string }>> = {
  lfru: { policy: "lrfu", why: "it names LRFU (Lee et al. 2001)" },
};

/**
 * The policy a command-line value names, or null when it names none. A
 * deprecated name prints a one-line warning to stderr, e.g. "--policy lfru is
 * deprecated: it names LRFU (Lee et al. 2001); use lrfu.", and means the
 * policy it was renamed to; `flag` is the flag the value came from.
 */
export function policyByName(name: string, flag: string): PolicyName | null {
  if (isPolicyName(name)) return name;
  const old = DEPRECATED_NAMES[name];
  if (old === undefined) return null;
  console.error(`${flag} ${name} is deprecated: ${old.why}; use ${old.policy}.`);
  return old.policy;
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
    case "lrfu":
      return new LrfuPolicy(options);
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
