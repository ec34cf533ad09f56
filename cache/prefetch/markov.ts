/**
 * Markov prefetch: transition counts from layer l's chosen experts to layer
 * l + 1's, learned online from the tokens already seen (the past only). For
 * token t, once layer l has chosen S, the score of expert b of layer l + 1 is
 * Σ_{a ∈ S} count[l][a][b]; the k best scores above zero are prefetched (ties
 * to the lower expert id). Nothing is predicted before a transition was seen.
 * Counts are updated when layer l + 1's choice for token t is observed.
 */
import type { AccessTrace } from "../access_trace.ts";
import type { Prefetcher } from "./prefetcher.ts";

export class MarkovPrefetcher implements Prefetcher {
  readonly name = "markov";
  readonly depth = 1;
  readonly crossesTokens = false;
  /** [M − 1, E, E] transitions from layer l expert a to layer l + 1 expert b. */
  #counts: Float64Array;
  #scores: Float64Array;
  #chosen: Uint16Array;
  #layers: number;
  #experts: number;
  #topK: number;

  constructor(trace: AccessTrace) {
    this.#chosen = trace.chosen;
    this.#layers = trace.layers;
    this.#experts = trace.experts;
    this.#topK = trace.topK;
    this.#counts = new Float64Array(Math.max(0, trace.layers - 1) * trace.experts * trace.experts);
    this.#scores = new Float64Array(trace.experts);
  }

  observe(t: number, l: number): void {
    if (l === 0) return;
    const k = this.#topK;
    const E = this.#experts;
    const from = (t * this.#layers + l - 1) * k;
    const to = from + k;
    const base = (l - 1) * E * E;
    for (let i = 0; i < k; i++) {
      const row = base + this.#chosen[from + i]! * E;
      for (let j = 0; j < k; j++) this.#counts[row + this.#chosen[to + j]!]!++;
    }
  }

  predict(t: number, l: number, _d: number, out: Uint16Array): number {
    if (l + 1 >= this.#layers) return 0;
    const k = this.#topK;
    const E = this.#experts;
    const scores = this.#scores;
    scores.fill(0);
    const from = (t * this.#layers + l) * k;
    const base = l * E * E;
    for (let i = 0; i < k; i++) {
      const row = base + this.#chosen[from + i]! * E;
      for (let b = 0; b < E; b++) scores[b]! += this.#counts[row + b]!;
    }
    let n = 0;
    for (let j = 0; j < k; j++) {
      let best = -1;
      let bestScore = 0;
      for (let b = 0; b < E; b++) {
        if (scores[b]! > bestScore) {
          bestScore = scores[b]!;
          best = b;
        }
      }
      if (best < 0) break;
      out[n++] = best;
      scores[best] = -1;
    }
    return n;
  }
}
