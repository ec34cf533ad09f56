/**
 * Help texts of `moetrace simulate` flags that main.ts's COMMANDS table
 * shares between flags (and with `generate --offload`): kept here so main.ts
 * stays under the 800-line limit.
 */

/** simulate --batch and --bootstrap. */
export const BATCH_HELP =
  "Documents decoding in lockstep: each step reads the union of their experts once; a finished document's slot goes to the next (traces with arrival_step: in arrival order). Needs --prefetch none above 1.";
export const RESAMPLES_HELP =
  "Document-level bootstrap resamples for the hit-rate and ms/token intervals (0: none).";
export const SIM_SEED_HELP = "Seed for the random policy and the bootstrap.";
/** The policy names and what each does, for --policy and --offload help. */
export const POLICY_HELP =
  "lru (least recently used), fifo (first in, first out), lfu (least frequently used), lrfu (LRFU, Lee et al. 2001: each use adds 1 to a score that halves every 8 tokens and the lowest score is evicted, between lru and lfu), random (evicts a random resident expert), swap (CoSMoEs: swap whenever the chosen set changes)";
