/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * A worker beside the importer's thread in an SGLang import. Each message is
 * a task that threads share by claiming items from `claims` (a shared
 * Int32Array: [0] the next item, [1] set to 1 once any thread met a fault,
 * after which none claims more), so work spreads by itself:
 *   {op: "open", files, claims}       open files (sglang_rank.ts), answering
 *                                     {opened: file, rank} or {whole: file}
 *                                     (a compressed zip, left to the importer)
 *   {op: "shards", plan, jobs, claims} make shards (sglang_shard.ts),
 *                                     answering {written: ShardWritten}
 * and, for either, {failed: item, error, data} (data: a DataError) for a
 * fault, then {done: true} when no item is left to claim.
 */
import { DataError, messageOf } from "../../common/errors.ts";
import { openRank } from "./sglang_rank.ts";
import {
  claimJobs,
  READ_WINDOW,
  rehearse,
  type ShardJob,
  ShardMaker,
  type ShardPlan,
} from "./sglang_shard.ts";
import { Scratch } from "../../common/scratch.ts";

type Task =
  | { op: "open"; files: string[]; claims: Int32Array }
  | { op: "shards"; plan: ShardPlan; jobs: ShardJob[]; claims: Int32Array };

const scratch = new Scratch(READ_WINDOW);
rehearse(scratch);

self.onmessage = async (event: MessageEvent<Task>) => {
  const task = event.data;
  const fail = (item: number, error: unknown) =>
    self.postMessage({ failed: item, error: messageOf(error), data: error instanceof DataError });
  try {
    if (task.op === "open") {
      await claimJobs(task.files.map((_, i) => i), task.claims, async (file) => {
        try {
          const rank = await openRank(task.files[file]!, file, false);
          self.postMessage(rank ? { opened: file, rank } : { whole: file });
        } catch (error) {
          fail(file, error);
          throw error;
        }
      });
    } else {
      const maker = new ShardMaker(task.plan, [], scratch);
      try {
        await claimJobs(task.jobs, task.claims, async (job) => {
          try {
            self.postMessage({ written: await maker.make(job) });
          } catch (error) {
            fail(job.index, error);
            throw error;
          }
        });
      } finally {
        maker.close();
      }
    }
  } catch {
    // Reported above; the importer stops the other threads through `claims`.
  } finally {
    self.postMessage({ done: true });
  }
};
