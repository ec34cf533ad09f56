/**
 * The LRU stack-distance pass split over cores, with the same result as
 * one pass (stack_distance.ts).
 *
 * The trace is cut into chunks of whole tokens; each chunk's pass starts from
 * an empty stack in a worker. An access whose key was already used in its
 * chunk has all of its distance inside the chunk, so the chunk measures it
 * exactly. Only each key's first access in a chunk is measured as cold there;
 * merging the chunks in order fixes those: with F the keys of its partition
 * the chunk used before the access's step (`firstBefore` of them, the first
 * ones of `firstKey`), the key's true distance is 1 + |F| + the keys of the
 * partition outside F used, before the chunk, after the key's own last use;
 * a key never used before is cold. At most one such access per key and
 * chunk, so the merge costs keys × partition size per chunk.
 *
 * Oracle shadows need the steps' misses in order and stay with the single pass.
 */
import type { AccessTrace } from "./access_trace.ts";
import type { Budget } from "./expert_cache.ts";
import { lruStackDistances, type StackChunk, type StackDistances } from "./stack_distance.ts";

/** What a chunk worker sends back. */
export interface ChunkResult extends StackDistances {
  chunk: StackChunk;
}

/** Merges chunk passes, in trace order, into the distances of one pass. */
export function mergeStackChunks(
  chunks: readonly ChunkResult[],
  shape: { layers: number; experts: number; budget: Budget },
): StackDistances {
  const { layers: M, experts: E } = shape;
  const keys = M * E;
  const P = shape.budget === "global" ? keys : E;
  const width = P + 1;
  const histogram = new Float64Array(M * width);
  const cold = new Float64Array(M);
  const accesses = new Float64Array(M);
  // Recency before the current chunk: larger is more recent, −1 never used.
  const recency = new Float64Array(keys).fill(-1);
  // The current chunk's order of first uses per partition (−1: not used in it).
  const order = new Int32Array(keys);
  const seen = new Int32Array(keys / P);
  let clock = 0;
  for (const c of chunks) {
    for (let i = 0; i < histogram.length; i++) histogram[i]! += c.histogram[i]!;
    for (let l = 0; l < M; l++) accesses[l]! += c.accesses[l]!;
    order.fill(-1);
    seen.fill(0);
    const { firstKey, firstBefore, last } = c.chunk;
    for (let i = 0; i < firstKey.length; i++) {
      const key = firstKey[i]!;
      const p = Math.floor(key / P);
      order[key] = seen[p]!++;
    }
    for (let i = 0; i < firstKey.length; i++) {
      const key = firstKey[i]!;
      const layer = Math.floor(key / E);
      const mine = recency[key]!;
      if (mine < 0) {
        cold[layer]!++;
        continue;
      }
      const before = firstBefore[i]!;
      const p = Math.floor(key / P);
      let newer = 0;
      for (let y = p * P; y < (p + 1) * P; y++) {
        const inChunk = order[y]! >= 0 && order[y]! < before;
        if (!inChunk && recency[y]! > mine) newer++;
      }
      histogram[layer * width + 1 + before + newer]!++;
    }
    // Keys used in this chunk become more recent than every other, in their chunk order.
    let top = clock;
    for (let key = 0; key < keys; key++) {
      if (last[key]! < 0) continue;
      recency[key] = clock + last[key]!;
      if (recency[key]! > top) top = recency[key]!;
    }
    clock = top + 1;
  }
  return { maxDistance: P, histogram, cold, accesses };
}

/** Runs the pass in `workers` chunks of whole tokens (1: in this thread, no chunking). */
export async function parallelStackDistances(
  trace: AccessTrace,
  budget: Budget,
  workers: number,
): Promise<StackDistances> {
  const T = trace.tokens;
  const n = Math.max(1, Math.min(workers, T));
  if (n === 1) return lruStackDistances(trace, budget);
  const bounds = Array.from({ length: n + 1 }, (_, i) => Math.round((i * T) / n));
  const chunks = await Promise.all(
    Array.from({ length: n }, (_, i) => runChunk(trace, budget, bounds[i]!, bounds[i + 1]!)),
  );
  return mergeStackChunks(chunks, { layers: trace.layers, experts: trace.experts, budget });
}

function runChunk(
  trace: AccessTrace,
  budget: Budget,
  from: number,
  to: number,
): Promise<ChunkResult> {
  const worker = new Worker(new URL("./stack_worker.ts", import.meta.url).href, {
    type: "module",
  });
  return new Promise<ChunkResult>((resolve, reject) => {
    worker.onmessage = (event) => {
      worker.terminate();
      if (event.data.kind === "result") resolve(event.data.result as ChunkResult);
      else reject(new Error(`stack-distance worker failed: ${event.data.message}`));
    };
    worker.onerror = (event) => {
      event.preventDefault();
      worker.terminate();
      reject(new Error(`stack-distance worker failed: ${event.message}`));
    };
    // Only what the pass reads: the chosen experts are on a SharedArrayBuffer.
    const { tokens, layers, experts, topK, chosen } = trace;
    worker.postMessage({ trace: { tokens, layers, experts, topK, chosen }, budget, from, to });
  });
}
