/**
 * Worker threads that encode Parquet shards, so that a trace writer's caller
 * (a capture on the GPU, an importer parsing logs) builds the next shard
 * while earlier ones are compressed, and several shards compress at once on
 * several cores. Each worker holds its own encoder (and, for the tables the
 * encoder leaves to it, its own single-threaded parquet-wasm instance).
 */
import * as arrow from "apache-arrow";

/**
 * Workers a writer uses by default: one per core but two (the producer's and
 * the system's), at most 4; none on fewer than 3 cores, where a worker
 * measured slower than encoding on the writer's thread (`deno task bench
 * trace` on 2 shared cores: 41k against 58k tokens/s).
 */
export function defaultEncoders(): number {
  return Math.max(0, Math.min(4, (navigator.hardwareConcurrency || 1) - 2));
}

interface Pending {
  resolve: (bytes: Uint8Array) => void;
  reject: (error: Error) => void;
}

/** A fixed set of Parquet encoding workers; `encode` goes to the least busy one. */
export class ParquetPool {
  #size: number;
  #workers: { worker: Worker; busy: number }[] = [];
  #pending = new Map<number, Pending>();
  #nextId = 0;

  constructor(size: number) {
    this.#size = Math.max(1, size);
  }

  /** Encodes a table as Parquet in a worker (started on first use). */
  encode(table: arrow.Table): Promise<Uint8Array> {
    const stream = arrow.tableToIPC(table, "stream");
    const slot = this.#leastBusy();
    const id = this.#nextId++;
    slot.busy++;
    return new Promise<Uint8Array>((resolve, reject) => {
      this.#pending.set(id, {
        resolve: (bytes) => {
          slot.busy--;
          resolve(bytes);
        },
        reject: (error) => {
          slot.busy--;
          reject(error);
        },
      });
      slot.worker.postMessage({ id, stream }, [stream.buffer as ArrayBuffer]);
    });
  }

  /** Stops the workers; encodes still running are rejected. */
  close(): void {
    for (const { worker } of this.#workers) worker.terminate();
    this.#workers = [];
    for (const pending of this.#pending.values()) {
      pending.reject(new Error("the Parquet encoder was closed"));
    }
    this.#pending.clear();
  }

  #leastBusy(): { worker: Worker; busy: number } {
    if (this.#workers.length < this.#size) {
      const idle = this.#workers.find((w) => w.busy === 0);
      if (idle) return idle;
      const worker = new Worker(new URL("./parquet_worker.ts", import.meta.url).href, {
        type: "module",
      });
      worker.onmessage = (event) => this.#settle(event.data);
      worker.onerror = (event) => {
        event.preventDefault();
        const error = new Error(`a Parquet encoding worker failed: ${event.message}`);
        for (const pending of this.#pending.values()) pending.reject(error);
        this.#pending.clear();
      };
      const slot = { worker, busy: 0 };
      this.#workers.push(slot);
      return slot;
    }
    return this.#workers.reduce((a, b) => (b.busy < a.busy ? b : a));
  }

  #settle(message: { id: number; bytes?: Uint8Array; error?: string }): void {
    const pending = this.#pending.get(message.id);
    if (!pending) return;
    this.#pending.delete(message.id);
    if (message.bytes) pending.resolve(message.bytes);
    else pending.reject(new Error(message.error ?? "the Parquet encoder gave no result"));
  }
}
