/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * Reads, checks and decodes shards for TraceReader.batches off the caller's
 * thread. Message: {id, dir, shard, shape, columns}; reply: {id, batch} (its buffers
 * transferred) or {id, error, data} (data: the error is bad data, a DataError).
 */
import { DataError, messageOf } from "../common/errors.ts";
import type { RowShape, ShardEntry } from "./manifest.ts";
import { loadShard, type ShardColumns } from "./reader.ts";
import type { TraceBatch } from "./schema.ts";

function buffers(batch: TraceBatch): ArrayBuffer[] {
  const arrays = [
    batch.doc,
    batch.domainCodes,
    batch.pos,
    batch.token,
    batch.pieceCodes,
    batch.phase,
    batch.experts,
    batch.weights,
    batch.probs,
    batch.spec,
    batch.requestCodes,
    batch.arrivalStep,
  ];
  const unique = new Set<ArrayBuffer>();
  for (const array of arrays) if (array) unique.add(array.buffer as ArrayBuffer);
  return [...unique];
}

self.onmessage = async (
  event: MessageEvent<
    { id: number; dir: string; shard: ShardEntry; shape: RowShape; columns: ShardColumns }
  >,
) => {
  const { id, dir, shard, shape, columns } = event.data;
  try {
    const batch = await loadShard(dir, shard, shape, columns);
    self.postMessage({ id, batch }, buffers(batch));
  } catch (error) {
    self.postMessage({ id, error: messageOf(error), data: error instanceof DataError });
  }
};
