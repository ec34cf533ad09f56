/**
 * Fast in-memory AccessTraces for benchmarks and statistical tests, with the
 * same routing law as engine/synthetic_trace.ts (uniform k-subsets, or sticky:
 * each of the previous token's experts kept in its slot with probability
 * `stickiness`) but without weights, probabilities or files, so a million
 * tokens take a second rather than minutes. `spec` is right with probability
 * `specAccuracy`, else a uniform k-subset, as in the trace generator.
 */
import { Rng } from "../common/random.ts";
import { NO_EXPERT } from "../trace/mod.ts";
import { type AccessTrace, sharedUint16 } from "./access_trace.ts";

export interface SyntheticAccessOptions {
  tokens: number;
  layers: number;
  experts: number;
  topK: number;
  /** Probability that a slot reuses a recent expert (default 0: uniform). */
  stickiness?: number;
  /**
   * Which recent expert a sticky slot reuses (default "previous"):
   * - "previous": the previous token's expert in the same slot (the law of
   *   engine/synthetic_trace.ts). Under it every online policy has the same
   *   expected hit rate: the previous selection is always cached and every
   *   other pick is uniform, so which other experts are cached does not matter.
   * - "geometric": an expert of the token r back, r ~ Geometric(1/2) (1 with
   *   probability 1/2, 2 with 1/4, ...) within the document, any of its slots:
   *   locality with memory, where recency-based policies pay off.
   */
  memory?: "previous" | "geometric";
  /** Tokens per document; stickiness restarts at each (default 1000). */
  tokensPerDoc?: number;
  /** D (default 0). */
  lookahead?: number;
  /** Default 0.8. */
  specAccuracy?: number;
  seed?: number;
}

export function syntheticAccessTrace(o: SyntheticAccessOptions): AccessTrace {
  const { tokens: T, layers: M, experts: E, topK: k } = o;
  const stickiness = o.stickiness ?? 0;
  const geometric = (o.memory ?? "previous") === "geometric";
  const perDoc = o.tokensPerDoc ?? 1000;
  const D = o.lookahead ?? 0;
  const accuracy = o.specAccuracy ?? 0.8;
  const rng = new Rng(o.seed ?? 0);
  const chosen = sharedUint16(T * M * k);
  const spec = D > 0 ? sharedUint16(T * M * D * k) : null;
  const doc = new Uint32Array(T);
  const taken = new Uint8Array(E);
  const draw = (): number => {
    for (;;) {
      const e = rng.int(E);
      if (taken[e] === 0) return e;
    }
  };
  for (let t = 0; t < T; t++) {
    doc[t] = Math.floor(t / perDoc);
    const continues = t % perDoc !== 0;
    for (let l = 0; l < M; l++) {
      const base = (t * M + l) * k;
      for (let j = 0; j < k; j++) {
        if (continues && stickiness > 0 && rng.next() < stickiness) {
          let e: number;
          if (geometric) {
            let r = 1;
            while (rng.next() < 0.5 && r < t % perDoc) r++;
            e = chosen[base - r * M * k + rng.int(k)]!;
          } else {
            e = chosen[base - M * k + j]!;
          }
          if (taken[e] === 0) {
            chosen[base + j] = e;
            taken[e] = 1;
          } else {
            chosen[base + j] = NO_EXPERT;
          }
        } else {
          chosen[base + j] = NO_EXPERT;
        }
      }
      for (let j = 0; j < k; j++) {
        if (chosen[base + j] !== NO_EXPERT) continue;
        const e = draw();
        chosen[base + j] = e;
        taken[e] = 1;
      }
      for (let j = 0; j < k; j++) taken[chosen[base + j]!] = 0;
    }
    if (spec) {
      for (let l = 0; l < M; l++) {
        for (let d = 1; d <= D; d++) {
          const out = ((t * M + l) * D + d - 1) * k;
          if (l + d >= M) {
            spec.fill(NO_EXPERT, out, out + k);
          } else if (rng.next() < accuracy) {
            spec.set(chosen.subarray((t * M + l + d) * k, (t * M + l + d + 1) * k), out);
          } else {
            for (let j = 0; j < k; j++) {
              const e = draw();
              spec[out + j] = e;
              taken[e] = 1;
            }
            for (let j = 0; j < k; j++) taken[spec[out + j]!] = 0;
          }
        }
      }
    }
  }
  return { tokens: T, layers: M, experts: E, topK: k, chosen, lookahead: D, spec, doc };
}
