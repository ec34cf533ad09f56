/**
 * Simulation uncertainty (`simulate --bootstrap B`): a document-level
 * bootstrap. Each resample draws G documents with replacement out of the
 * trace's G (documents are maximal runs of one `doc` id), concatenates them in
 * the order drawn into a new trace, and replays every combination of the sweep
 * on it from a cold cache, so warm-up and the documents' mix vary together.
 * The interval of a statistic is the 2.5th and 97.5th percentile of its B
 * resampled values (linear interpolation between order statistics at
 * h = (B − 1) p, numpy's default).
 *
 * The draws are reproducible: resample b takes its G documents from one
 * `Rng(seed)` (common/random.ts) as `rng.int(G)`, resample after resample.
 */
import { Rng } from "../common/random.ts";
import type { ModelFacts } from "../trace/mod.ts";
import type { AccessTrace } from "./access_trace.ts";
import { documentStarts } from "./batch.ts";
import { runSweep, type SweepResult, type SweepSettings } from "./sweep.ts";

/** Resampled values of each combination (in `SweepResult.combinations` order). */
export interface SweepBootstrap {
  resamples: number;
  seed: number;
  /** Per combination: [B × (M + 1)] hit rate of each layer, then of all layers (index M). */
  hitRate: Float64Array[];
  /** Per combination: [B × (M + 1)] ms per token of each layer, then of the whole token. */
  msPerToken: Float64Array[];
}

/** A trace of the documents `draws` (indices into `starts`), in that order; doc ids become draw numbers. */
export function resampleDocuments(
  trace: AccessTrace,
  starts: Int32Array,
  draws: ArrayLike<number>,
): AccessTrace {
  const { layers: M, topK: k, lookahead: D } = trace;
  const width = M * k;
  let tokens = 0;
  for (let i = 0; i < draws.length; i++) {
    tokens += starts[draws[i]! + 1]! - starts[draws[i]!]!;
  }
  const chosen = new Uint16Array(new SharedArrayBuffer(tokens * width * 2));
  const spec = trace.spec ? new Uint16Array(new SharedArrayBuffer(tokens * width * D * 2)) : null;
  const doc = new Uint32Array(tokens);
  const arrival = trace.arrival ? new Uint32Array(tokens) : null;
  let t = 0;
  for (let i = 0; i < draws.length; i++) {
    const from = starts[draws[i]!]!;
    const to = starts[draws[i]! + 1]!;
    chosen.set(trace.chosen.subarray(from * width, to * width), t * width);
    if (spec) spec.set(trace.spec!.subarray(from * width * D, to * width * D), t * width * D);
    if (arrival) arrival.set(trace.arrival!.subarray(from, to), t);
    doc.fill(i, t, t + to - from);
    t += to - from;
  }
  return { ...trace, tokens, chosen, spec, doc, arrival };
}

/** The `p` quantile of the non-NaN `values` (linear between order statistics, h = (n − 1) p); NaN when none. */
export function quantile(values: ArrayLike<number>, p: number): number {
  const sorted = Array.from(values).filter((v) => !Number.isNaN(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const h = (sorted.length - 1) * p;
  const lo = Math.floor(h);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo]! + (h - lo) * (sorted[hi]! - sorted[lo]!);
}

/** Runs the sweep on `resamples` document resamples of `trace`. */
export async function bootstrapSweep(
  trace: AccessTrace,
  model: ModelFacts,
  settings: SweepSettings,
  options: {
    resamples: number;
    seed: number;
    workers?: number;
    onProgress?: (done: number, total: number) => void;
  },
): Promise<SweepBootstrap> {
  const B = options.resamples;
  const M = trace.layers;
  const starts = documentStarts(trace.doc);
  const G = starts.length - 1;
  const rng = new Rng(options.seed);
  const hitRate: Float64Array[] = [];
  const msPerToken: Float64Array[] = [];
  const draws = new Int32Array(G);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < G; i++) draws[i] = rng.int(G);
    const sample = resampleDocuments(trace, starts, draws);
    const sweepOptions: { workers?: number } = {};
    if (options.workers !== undefined) sweepOptions.workers = options.workers;
    const result: SweepResult = await runSweep(sample, model, settings, sweepOptions);
    result.combinations.forEach((c, i) => {
      const rates = hitRate[i] ??= new Float64Array(B * (M + 1));
      const ms = msPerToken[i] ??= new Float64Array(B * (M + 1));
      let hits = 0, accesses = 0;
      for (let l = 0; l < M; l++) {
        const a = c.hits[l]! + c.misses[l]!;
        rates[b * (M + 1) + l] = c.hits[l]! / a;
        ms[b * (M + 1) + l] = c.layerMs[l]! / sample.tokens;
        hits += c.hits[l]!;
        accesses += a;
      }
      rates[b * (M + 1) + M] = hits / accesses;
      ms[b * (M + 1) + M] = c.totalMs / sample.tokens;
    });
    options.onProgress?.(b + 1, B);
  }
  return { resamples: B, seed: options.seed, hitRate, msPerToken };
}

/** The 95% percentile interval of the resampled values of combination `c` at `layer` (M: all). */
export function bootstrapInterval(
  values: Float64Array,
  resamples: number,
  layers: number,
  layer: number,
): [number, number] {
  const column = new Float64Array(resamples);
  for (let b = 0; b < resamples; b++) column[b] = values[b * (layers + 1) + layer]!;
  return [quantile(column, 0.025), quantile(column, 0.975)];
}
