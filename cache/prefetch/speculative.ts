/**
 * Speculative prefetch (Eliseev & Mazur 2023, §3.2): the router of layer
 * l + d applied to the hidden state entering layer l's MoE block predicts
 * layer l + d's experts. The trace stores those picks in its `spec` column
 * (captured with `--lookahead D`); `speculative:D` prefetches for l + 1 .. l + D.
 */
import { NO_EXPERT } from "../../trace/mod.ts";
import type { AccessTrace } from "../access_trace.ts";
import type { Prefetcher } from "./prefetcher.ts";

export class SpeculativePrefetcher implements Prefetcher {
  readonly name: string;
  readonly depth: number;
  readonly crossesTokens = false;
  #spec: Uint16Array;
  #layers: number;
  #topK: number;
  #lookahead: number;

  constructor(trace: AccessTrace, depth: number) {
    if (!trace.spec || trace.lookahead < depth) {
      throw new RangeError(
        `speculative:${depth} needs a trace captured with --lookahead ${depth} or more, this one has ${trace.lookahead}.`,
      );
    }
    this.name = depth === 1 ? "speculative" : `speculative:${depth}`;
    this.depth = depth;
    this.#spec = trace.spec;
    this.#layers = trace.layers;
    this.#topK = trace.topK;
    this.#lookahead = trace.lookahead;
  }

  observe(_t: number, _l: number): void {}

  predict(t: number, l: number, d: number, out: Uint16Array): number {
    if (l + d >= this.#layers) return 0;
    const k = this.#topK;
    const base = ((t * this.#layers + l) * this.#lookahead + d - 1) * k;
    let n = 0;
    for (let j = 0; j < k; j++) {
      const e = this.#spec[base + j]!;
      if (e !== NO_EXPERT) out[n++] = e;
    }
    return n;
  }
}
