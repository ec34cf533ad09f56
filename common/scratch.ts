/**
 * One buffer lent out again and again, for work whose buffers are needed one
 * at a time (a pickle being read, then a window of routing being gathered):
 * memory first touched costs far more than memory reused (~3 ms per fresh
 * MiB on the development machine, against ~0.05 ms to write it again).
 */
export class Scratch {
  #bytes = new Uint8Array(0);
  #least: number;

  /**
   * `least`: the size it grows to at the least, for a user who knows its
   * largest need (a pickle a little smaller than the routing window read
   * after it would otherwise make it grow twice, and touch both).
   */
  constructor(least = 0) {
    this.#least = least;
  }

  /** Bytes held now. */
  get size(): number {
    return this.#bytes.length;
  }

  /**
   * `length` bytes, 8-byte aligned at 0 (for int32 and int64 views), valid
   * until the next call; grown to a multiple of 64 KiB (and to `least`)
   * when too small.
   */
  bytes(length: number): Uint8Array {
    if (this.#bytes.length < length) {
      this.#bytes = new Uint8Array(Math.max(this.#least, Math.ceil(length / 65536) * 65536));
    }
    return this.#bytes.subarray(0, length);
  }
}

/**
 * One value (a buffer, or a set of them) kept on a thread between uses that
 * each need it whole, such as imports one after another in a process, so
 * that the memory it holds is touched once: `take` hands it to one user at a
 * time (null when none is kept or another user holds it), and `keep` takes it
 * back unless it holds more than `maxBytes` (a very large input's buffers are
 * not held after it).
 */
export class Spare<T> {
  #value: T | null = null;

  constructor(readonly maxBytes = 64 << 20) {}

  take(): T | null {
    const value = this.#value;
    this.#value = null;
    return value;
  }

  keep(value: T, bytes: number): void {
    if (bytes <= this.maxBytes) this.#value = value;
  }
}
