/**
 * A sweep worker: runs replay jobs on a trace shared through
 * SharedArrayBuffers and posts each job's counters back. Each worker gets the
 * jobs of one policy and one prefetcher class, so its replay loop stays
 * monomorphic.
 */
/// <reference lib="deno.worker" />
import { runJob, type WorkerRequest } from "./sweep.ts";

self.onmessage = (event: MessageEvent<WorkerRequest>) => {
  const request = event.data;
  try {
    const cache = {};
    for (const job of request.jobs) {
      self.postMessage({ kind: "result", result: runJob(request.context, job, cache) });
    }
    self.postMessage({ kind: "done" });
  } catch (error) {
    self.postMessage({
      kind: "error",
      message: error instanceof Error ? error.stack ?? error.message : String(error),
    });
  }
};
