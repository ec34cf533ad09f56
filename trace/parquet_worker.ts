/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * Encodes shards as Parquet off the writer's thread (see parquet_pool.ts).
 * Message: {id, stream} (an Arrow IPC stream, its buffer transferred);
 * reply: {id, bytes} (transferred) or {id, error}.
 */
import { ipcStreamToParquet } from "./parquet.ts";

self.onmessage = (
  event: MessageEvent<{ id: number; stream: Uint8Array }>,
) => {
  const { id, stream } = event.data;
  try {
    const bytes = ipcStreamToParquet(stream);
    self.postMessage({ id, bytes }, [bytes.buffer as ArrayBuffer]);
  } catch (error) {
    self.postMessage({ id, error: error instanceof Error ? error.message : String(error) });
  }
};
