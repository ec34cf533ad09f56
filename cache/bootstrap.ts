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

/** One resample's values per combination (in `SweepResult.combinations` order), each [M + 1]. */
export interface ResampleValues {
  hitRate: Float64Array[];
  msPerToken: Float64Array[];
}

/** The hit rate and ms per token of each layer, then of all layers (index M), of every combination. */
export function resampleValues(result: SweepResult, tokens: number, M: number): ResampleValues {
  const hitRate: Float64Array[] = [];
  const msPerToken: Float64Array[] = [];
  for (const c of result.combinations) {
    const rates = new Float64Array(M + 1);
    const ms = new Float64Array(M + 1);
    let hits = 0, accesses = 0;
    for (let l = 0; l < M; l++) {
      const a = c.hits[l]! + c.misses[l]!;
      rates[l] = c.hits[l]! / a;
      ms[l] = c.layerMs[l]! / tokens;
      hits += c.hits[l]!;
      accesses += a;
    }
    rates[M] = hits / accesses;
    ms[M] = c.totalMs / tokens;
    hitRate.push(rates);
    msPerToken.push(ms);
  }
  return { hitRate, msPerToken };
}

/** Replays one resample (documents in `order`) through the whole sweep. */
export async function replayResample(
  trace: AccessTrace,
  starts: Int32Array,
  order: Int32Array,
  model: ModelFacts,
  settings: SweepSettings,
  sweepOptions: { workers?: number },
): Promise<ResampleValues> {
  const sample = resampleDocuments(trace, starts, order);
  const result = await runSweep(sample, model, settings, sweepOptions);
  return resampleValues(result, sample.tokens, trace.layers);
}

/**
 * Runs the sweep on `resamples` document resamples of `trace`. With
 * `parallel` above 0 that many worker threads (bootstrap_worker.ts) replay
 * whole resamples side by side, each sweep in its worker's own thread; the
 * draws are made here first, in resample order, so the values are those of
 * the sequential path. Otherwise resamples run one after another, each sweep
 * with `workers` threads of its own (sweep.ts).
 */
export async function bootstrapSweep(
  trace: AccessTrace,
  model: ModelFacts,
  settings: SweepSettings,
  options: {
    resamples: number;
    seed: number;
    workers?: number;
    parallel?: number;
    onProgress?: (done: number, total: number) => void;
  },
): Promise<SweepBootstrap> {
  const B = options.resamples;
  const M = trace.layers;
  const starts = documentStarts(trace.doc);
  const G = starts.length - 1;
  const rng = new Rng(options.seed);
  const orders: Int32Array[] = [];
  const copies = new Int32Array(G);
  for (let b = 0; b < B; b++) {
    copies.fill(0);
    for (let i = 0; i < G; i++) copies[rng.int(G)]!++;
    orders.push(spreadCopies(copies));
  }
  const hitRate: Float64Array[] = [];
  const msPerToken: Float64Array[] = [];
  let done = 0;
  const store = (b: number, values: ResampleValues) => {
    values.hitRate.forEach((rates, i) => {
      (hitRate[i] ??= new Float64Array(B * (M + 1))).set(rates, b * (M + 1));
      (msPerToken[i] ??= new Float64Array(B * (M + 1))).set(values.msPerToken[i]!, b * (M + 1));
    });
    options.onProgress?.(++done, B);
  };
  const parallel = Math.min(options.parallel ?? 0, B);
  if (parallel > 0) {
    await replayInWorkers({ trace, starts, model, settings }, orders, parallel, store);
  } else {
    const sweepOptions: { workers?: number } = {};
    if (options.workers !== undefined) sweepOptions.workers = options.workers;
    for (let b = 0; b < B; b++) {
      store(b, await replayResample(trace, starts, orders[b]!, model, settings, sweepOptions));
    }
  }
  return { resamples: B, seed: options.seed, hitRate, msPerToken };
}

/**
 * Resamples × replays × accesses from which the bootstrap of a small trace
 * runs whole resamples in worker threads: below it (the default policies on
 * the demo trace, 31 M, 0.8 s in one thread) starting them costs more.
 */
const PARALLEL_BOOTSTRAP_ACCESSES = 64_000_000;

/**
 * `bootstrapSweep`'s threads for `resamples` of a trace of `accesses` whose
 * sweep replays `replays` cache runs: a small trace (under 1 M accesses)
 * replays faster than a sweep's workers start, so each resample's sweep stays
 * in one thread, and whole resamples run side by side, one per core, when
 * they add up to enough work; a large one keeps the sweep's own workers.
 */
export function bootstrapThreads(
  resamples: number,
  replays: number,
  accesses: number,
): { workers?: number; parallel?: number } {
  if (accesses >= 1_000_000) return {};
  const enough = resamples * (replays + 1) * accesses >= PARALLEL_BOOTSTRAP_ACCESSES;
  return { workers: 0, parallel: enough ? navigator.hardwareConcurrency : 0 };
}

/** What every bootstrap worker is sent once, before its resamples. */
export interface BootstrapWorkerSetup {
  trace: AccessTrace;
  starts: Int32Array;
  model: ModelFacts;
  settings: SweepSettings;
}

/** Hands resamples to `width` workers, the next one to whichever finishes first. */
function replayInWorkers(
  setup: BootstrapWorkerSetup,
  orders: Int32Array[],
  width: number,
  store: (b: number, values: ResampleValues) => void,
): Promise<void> {
  const workers: Worker[] = [];
  let next = 0, finished = 0;
  return new Promise<void>((resolve, reject) => {
    const fail = (message: string) => {
      for (const w of workers) w.terminate();
      reject(new Error(`bootstrap worker failed: ${message}`));
    };
    const give = (worker: Worker) => {
      if (next < orders.length) {
        worker.postMessage({ kind: "resample", b: next, order: orders[next++] });
      } else worker.terminate();
    };
    for (let w = 0; w < width; w++) {
      const worker = new Worker(new URL("./bootstrap_worker.ts", import.meta.url).href, {
        type: "module",
      });
      workers.push(worker);
      worker.onmessage = (event) => {
        const message = event.data;
        if (message.kind !== "result") return fail(message.message);
        store(message.b, message.values as ResampleValues);
        if (++finished === orders.length) {
          for (const w of workers) w.terminate();
          resolve();
        } else give(worker);
      };
      worker.onerror = (event) => {
        event.preventDefault();
        fail(event.message);
      };
      worker.postMessage({ kind: "setup", setup });
      give(worker);
    }
  });
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
