/**
 * Oracle prefetch: the true experts of the next step, issued when layer l's
 * router decides: layer l + 1 of the same token, and after the last layer,
 * layer 0 of the next token (known in a teacher-forced trace; a real decoder
 * learns it only after sampling). The upper bound of any next-layer prefetcher.
 */
import type { AccessTrace } from "../access_trace.ts";
import type { Prefetcher } from "./prefetcher.ts";

export class OraclePrefetcher implements Prefetcher {
  readonly name = "oracle";
  readonly depth = 1;
  readonly crossesTokens = true;
  #chosen: Uint16Array;
  #layers: number;
  #topK: number;

  constructor(trace: AccessTrace) {
    this.#chosen = trace.chosen;
    this.#layers = trace.layers;
    this.#topK = trace.topK;
  }

  observe(_t: number, _l: number): void {}

  predict(t: number, l: number, d: number, out: Uint16Array): number {
    const k = this.#topK;
    const base = (t * this.#layers + l + d) * k;
    if (base + k > this.#chosen.length) return 0;
    for (let j = 0; j < k; j++) out[j] = this.#chosen[base + j]!;
    return k;
  }
}
