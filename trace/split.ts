/**
 * Captures split across GPUs and machines: `capture --shard i/n` keeps the
 * i-th of n contiguous blocks of the selected documents, and `merge` checks
 * that parts cover the selection exactly once. Blocks are contiguous so that
 * the parts, merged in index order, list the documents in the order one
 * capture would have written them.
 */
import { UsageError } from "../common/errors.ts";

/** Part `index` (0-based) of `count`. */
export interface ShardSpec {
  index: number;
  count: number;
}

/**
 * Parses `i/n` (0 ≤ i < n), as Slurm's `$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`
 * (for `--array=0-N`) and Kubernetes' `$JOB_COMPLETION_INDEX` give it.
 */
export function parseShardSpec(text: string, flag = "--shard"): ShardSpec {
  const match = /^(\d+)\/(\d+)$/.exec(text.trim());
  const index = match ? Number(match[1]) : NaN;
  const count = match ? Number(match[2]) : NaN;
  if (!match || count < 1 || index >= count || !Number.isSafeInteger(count)) {
    throw new UsageError(
      `${flag} must be i/n with 0 ≤ i < n (part i of n, counted from 0), got "${text}".`,
    );
  }
  return { index, count };
}

export function formatShardSpec(spec: ShardSpec): string {
  return `${spec.index}/${spec.count}`;
}

/** The selection positions [start, end) that part `spec` of `total` documents takes. */
export function shardRange(total: number, spec: ShardSpec): [number, number] {
  return [
    Math.floor(spec.index * total / spec.count),
    Math.floor((spec.index + 1) * total / spec.count),
  ];
}
