/**
 * A stack-distance worker (stack_parallel.ts): one chunk of whole tokens of a
 * trace shared through a SharedArrayBuffer, measured from an empty stack, with
 * its first accesses recorded for the merge.
 */
/// <reference lib="deno.worker" />
import type { AccessTrace } from "./access_trace.ts";
import type { Budget } from "./expert_cache.ts";
import { lruStackDistances } from "./stack_distance.ts";

self.onmessage = (
  event: MessageEvent<
    {
      trace: Pick<AccessTrace, "tokens" | "layers" | "experts" | "topK" | "chosen">;
      budget: Budget;
      from: number;
      to: number;
    }
  >,
) => {
  const { trace, budget, from, to } = event.data;
  try {
    const { histogram, cold, accesses, maxDistance, chunk } = lruStackDistances(
      { ...trace, lookahead: 0, spec: null, doc: new Uint32Array(0) },
      budget,
      undefined,
      { from, to, firsts: true },
    );
    self.postMessage({
      kind: "result",
      result: { histogram, cold, accesses, maxDistance, chunk },
    });
  } catch (error) {
    self.postMessage({
      kind: "error",
      message: error instanceof Error ? error.stack ?? error.message : String(error),
    });
  }
};
