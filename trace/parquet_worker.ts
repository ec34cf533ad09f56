/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * Encodes shards as Parquet off the writer's thread (see parquet_pool.ts).
 * Message: {id, stream, info} (an Arrow IPC stream, its buffer transferred);
 * reply: {id, bytes} (transferred) or {id, error}.
 */
import { ipcStreamToParquet, type ParquetTableInfo } from "./parquet.ts";

self.onmessage = (
  event: MessageEvent<{ id: number; stream: Uint8Array; info: ParquetTableInfo }>,
) => {
  const { id, stream, info } = event.data;
  try {
    const bytes = ipcStreamToParquet(stream, info);
    self.postMessage({ id, bytes }, [bytes.buffer as ArrayBuffer]);
  } catch (error) {
    self.postMessage({ id, error: error instanceof Error ? error.message : String(error) });
  }
};
