/**
 * Simulation uncertainty (`simulate --bootstrap B`): a document-level
 * bootstrap. Each resample draws G documents with replacement out of the
 * trace's G (documents are maximal runs of one `doc` id), lays them out as a
 * new trace, and replays every combination of the sweep on it from a cold
 * cache, so warm-up and the documents' mix vary together. The layout keeps a
 * document's copies apart: first every document drawn, in trace order, then
 * those drawn twice again, and so on. A copy right after itself (or beside
 * itself in a batch) would find the cache holding exactly its experts, a
 * locality no real corpus has.
 * The interval of a statistic is the 2.5th and 97.5th percentile of its B
 * resampled values (linear interpolation between order statistics at
 * h = (B − 1) p, numpy's default), re-centred on the point estimate
 * (`recentredInterval`).
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

/** Documents in resample order from their copy counts: copy 1 of each in trace order, then copy 2, … */
export function spreadCopies(copies: Int32Array): Int32Array {
  let total = 0, most = 0;
  for (const c of copies) {
    total += c;
    if (c > most) most = c;
  }
  const order = new Int32Array(total);
  let i = 0;
  for (let round = 1; round <= most; round++) {
    for (let g = 0; g < copies.length; g++) if (copies[g]! >= round) order[i++] = g;
  }
  return order;
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
  const copies = new Int32Array(G);
  for (let b = 0; b < B; b++) {
    copies.fill(0);
    for (let i = 0; i < G; i++) copies[rng.int(G)]!++;
    const sample = resampleDocuments(trace, starts, spreadCopies(copies));
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

/**
 * The 95% interval of one statistic around its point estimate: the 2.5th and
 * 97.5th percentiles of its resampled values, shifted by the point estimate
 * minus their mean. The shift removes what resampling itself moves: a
 * resample repeats documents, and a repeated document finds some of its
 * experts still cached from its first copy (measured: percentile intervals
 * of batch-3 replays missed their own point in 12 to 18 of 105 rows, all on
 * the side of fewer misses; none at batch 1).
 */
export function recentredInterval(values: ArrayLike<number>, point: number): [number, number] {
  let sum = 0, n = 0;
  for (let i = 0; i < values.length; i++) {
    if (!Number.isNaN(values[i]!)) {
      sum += values[i]!;
      n++;
    }
  }
  const shift = point - sum / n;
  return [quantile(values, 0.025) + shift, quantile(values, 0.975) + shift];
}

/** simulation.csv's intervals of combination `index` at `layer` (M: all layers); NaN without a bootstrap. */
export function rowIntervals(
  boot: SweepBootstrap | null,
  index: number,
  layer: number,
  hitRate: number,
  msPerToken: number,
): { hitLow: number; hitHigh: number; msLow: number; msHigh: number } {
  if (boot === null) return { hitLow: NaN, hitHigh: NaN, msLow: NaN, msHigh: NaN };
  const B = boot.resamples;
  const M = boot.hitRate[index]!.length / B - 1;
  const column = (values: Float64Array) =>
    Float64Array.from({ length: B }, (_, b) => values[b * (M + 1) + layer]!);
  const [hitLow, hitHigh] = recentredInterval(column(boot.hitRate[index]!), hitRate);
  const [msLow, msHigh] = recentredInterval(column(boot.msPerToken[index]!), msPerToken);
  return { hitLow, hitHigh, msLow, msHigh };
}
