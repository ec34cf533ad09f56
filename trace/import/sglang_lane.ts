/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * A worker making shards of an SGLang import (sglang_shard.ts) beside the
 * importer's thread. One message starts it:
 *   {plan, jobs, claims}
 * `claims` is a shared Int32Array: [0] the next job to claim, [1] set to 1
 * when any thread met a fault (no more jobs are claimed). Every thread
 * claims jobs by an atomic add, so work spreads by itself however long each
 * shard takes. The worker answers, as it goes:
 *   {written: ShardWritten}              a shard is in the staging trace
 *   {failed: index, error, data}         a shard's fault (data: a DataError)
 *   {done: true}                         no more jobs to claim
 */
import { DataError, messageOf } from "../../common/errors.ts";
import { claimJobs, type ShardJob, ShardMaker, type ShardPlan } from "./sglang_shard.ts";

self.onmessage = async (
  event: MessageEvent<{ plan: ShardPlan; jobs: ShardJob[]; claims: Int32Array }>,
) => {
  const { plan, jobs, claims } = event.data;
  const maker = new ShardMaker(plan);
  try {
    await claimJobs(jobs, claims, async (job) => {
      try {
        self.postMessage({ written: await maker.make(job) });
      } catch (error) {
        self.postMessage({
          failed: job.index,
          error: messageOf(error),
          data: error instanceof DataError,
        });
        throw error;
      }
    });
  } catch {
    // Reported above; the importer stops the other threads through `claims`.
  } finally {
    maker.close();
    self.postMessage({ done: true });
  }
};
