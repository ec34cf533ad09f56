/**
 * A bootstrap worker: replays whole document resamples (bootstrap.ts) through
 * the sweep in its own thread and posts each resample's values back. The
 * trace's expert columns arrive on SharedArrayBuffers, once per worker.
 */
/// <reference lib="deno.worker" />
import { type BootstrapWorkerSetup, replayResample } from "./bootstrap.ts";

let setup: BootstrapWorkerSetup | null = null;

self.onmessage = async (
  event: MessageEvent<
    { kind: "setup"; setup: BootstrapWorkerSetup } | {
      kind: "resample";
      b: number;
      order: Int32Array;
    }
  >,
) => {
  const message = event.data;
  if (message.kind === "setup") {
    setup = message.setup;
    return;
  }
  try {
    const { trace, starts, model, settings } = setup!;
    // The sweep stays in this thread: the workers already fill the cores.
    const values = await replayResample(trace, starts, message.order, model, settings, {
      workers: 0,
    });
    self.postMessage({ kind: "result", b: message.b, values });
  } catch (error) {
    self.postMessage({
      kind: "error",
      message: error instanceof Error ? error.stack ?? error.message : String(error),
    });
  }
};
