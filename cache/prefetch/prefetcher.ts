/**
 * The prefetcher interface. At every (token t, layer l) step, after the router
 * of layer l has chosen, the replay calls `observe(t, l)` and then, for each
 * lookahead d = 1..depth, `predict(t, l, d, out)`: the experts the prefetcher
 * expects the step d layers ahead to choose (layer l + d of token t, or when
 * l + d ≥ M layer l + d − M of token t + 1), written to `out[0..n)` (n ≤ k) and
 * issued at once. Speculative and markov predict within the token only (they
 * return 0 past the last layer); the oracle also predicts the next token's
 * first layer, since it knows the next token.
 */
export interface Prefetcher {
  /** As given to `--prefetch`, e.g. `speculative:2`. */
  readonly name: string;
  /** Largest lookahead d it predicts. */
  readonly depth: number;
  /** Whether it predicts past the last layer into the next token (only the oracle). */
  readonly crossesTokens: boolean;
  /** Learns from the router decision of layer l for token t (the past only). */
  observe(t: number, l: number): void;
  /** Writes its prediction for the step d layers ahead into `out`; returns how many experts (0: none). */
  predict(t: number, l: number, d: number, out: Uint16Array): number;
}
