/**
 * Reads a whole trace as `bench trace` does and prints what it took, as
 * JSON: run in a fresh process by `bench trace` for its memory figures, so
 * that each peak is that read's own and not memory an earlier read in the
 * same process left behind (V8 and the allocator hand freed memory back
 * lazily, so RSS only ever showed the largest of everything before).
 *
 *   deno run --allow-read --allow-env bench/read_memory.ts TRACE WORKERS
 */
import { rssMiB } from "./measure.ts";
import { TraceReader } from "../trace/mod.ts";

export interface ReadFigures {
  seconds: number;
  rows: number;
  peakMiB: number;
}

/** Reads every batch of `dir`, touching every expert id; RSS sampled after each batch. */
export async function readTrace(dir: string, workers?: number): Promise<ReadFigures> {
  const reader = await TraceReader.open(dir);
  const start = performance.now();
  let rows = 0;
  let checksum = 0;
  let peak = rssMiB();
  for await (const batch of reader.batches(workers === undefined ? {} : { workers })) {
    rows += batch.rows;
    // Touch every expert id so the read is not just a file load.
    const experts = batch.experts;
    for (let i = 0; i < experts.length; i++) checksum += experts[i]!;
    peak = Math.max(peak, rssMiB());
  }
  if (checksum < 0) console.log(checksum);
  return { seconds: (performance.now() - start) / 1000, rows, peakMiB: peak };
}

/** `readTrace` in a child process of its own. */
export async function readTraceInChild(dir: string, workers: number): Promise<ReadFigures> {
  const script = new URL(import.meta.url).pathname;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-env", script, dir, String(workers)],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!output.success) throw new Error(`bench trace: the memory read of ${dir} failed`);
  return JSON.parse(new TextDecoder().decode(output.stdout)) as ReadFigures;
}

if (import.meta.main) {
  const [dir, workers] = Deno.args;
  console.log(JSON.stringify(await readTrace(dir!, Number(workers))));
}
