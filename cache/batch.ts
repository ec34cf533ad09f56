/**
 * Batched decoding (`simulate --batch N`): N documents decode in lockstep, one
 * token each per step, and every MoE layer of a step reads the union of their
 * experts once.
 *
 * The schedule: documents (maximal runs of one `doc` id, in trace order) fill
 * slots 0..N−1; when a document's last token has been decoded, the next
 * document takes its slot at the next step. Traces imported from serving logs
 * with an `arrival_step` column admit documents in order of arrival (ties in
 * trace order), each at the first step, not before its arrival, at which a
 * slot is free; steps at which nothing is active are skipped.
 *
 * At step s and MoE layer l the cache gets one access: the union of the
 * active documents' chosen experts, in slot order, each document's experts
 * first choice first, each expert once. All of them are guarded together, so
 * none evicts another of the same step; when the union exceeds the capacity,
 * the experts that find only guarded victims are streamed: uploaded and used,
 * a miss each, but not kept (`ExpertCache`'s `stream` option). The timing
 * model sees a step as one token: attention once, the union's experts
 * computed once each, `other_ms` once (a memory-bound batch reads each weight
 * once per step).
 *
 * `--batch 1` does not come here: it is the plain replay (replay.ts), whose
 * access stream this schedule reproduces exactly for N = 1.
 */
import type { AccessTrace } from "./access_trace.ts";
import { type Budget, type CacheStats, ExpertCache } from "./expert_cache.ts";
import type { CachePolicy, FutureUses } from "./policy.ts";
import { futureUses } from "./policies/belady.ts";
import type { StepCosts } from "./costs.ts";
import { TimingModel, timingNeedsHits } from "./timing.ts";

/** The access stream of a batched replay. */
export interface BatchSchedule {
  /** N, slots. */
  batch: number;
  /** S, steps with at least one active document. */
  steps: number;
  layers: number;
  experts: number;
  /** [S × M + 1] where the experts of step s, layer l start in `chosen` (index s × M + l). */
  offsets: Int32Array;
  /** The unions, step-major, layer-minor. */
  chosen: Uint16Array;
  /** [S] documents decoding at each step. */
  active: Int32Array;
  /** [M] union sizes summed over the steps (the accesses of each layer). */
  unionSum: Float64Array;
}

/** [G + 1] where each document (a maximal run of one doc id) starts; the last entry is T. */
export function documentStarts(doc: Uint32Array): Int32Array {
  const starts: number[] = [];
  for (let i = 0; i < doc.length; i++) if (i === 0 || doc[i] !== doc[i - 1]) starts.push(i);
  starts.push(doc.length);
  return Int32Array.from(starts);
}

/** An Int32Array / Uint16Array on a SharedArrayBuffer, so sweep workers share the schedule. */
function sharedInt32(length: number): Int32Array {
  return new Int32Array(new SharedArrayBuffer(length * 4));
}

export function batchSchedule(trace: AccessTrace, batch: number): BatchSchedule {
  if (!Number.isInteger(batch) || batch < 1) {
    throw new RangeError(`batch must be ≥ 1, got ${batch}`);
  }
  const { layers: M, experts: E, topK: k, chosen } = trace;
  const starts = documentStarts(trace.doc);
  const G = starts.length - 1;
  // Admission order and the earliest step of each document.
  const order = Int32Array.from({ length: G }, (_, g) => g);
  const arrival = trace.arrival ?? null;
  if (arrival) order.sort((a, b) => arrival[starts[a]!]! - arrival[starts[b]!]! || a - b);
  const earliest = (g: number) => (arrival ? arrival[starts[g]!]! : 0);
  const slotDoc = new Int32Array(batch).fill(-1);
  const slotToken = new Int32Array(batch);
  // Every step decodes at least one token, so there are at most T steps and
  // the unions hold at most T × M × k experts.
  const T = trace.tokens;
  const offsetsAll = new Int32Array(T * M + 1);
  const union = new Uint16Array(new SharedArrayBuffer(Math.max(1, T * M * k) * 2));
  const activeAll = new Int32Array(T);
  const unionSum = new Float64Array(M);
  const seen = new Int32Array(E);
  let stamp = 0;
  let next = 0; // the next document of `order` to admit
  let running = 0;
  let step = 0; // the serving clock (arrival steps count on it)
  let s = 0; // steps actually run
  let w = 0;
  while (next < G || running > 0) {
    if (running === 0 && earliest(order[next]!) > step) step = earliest(order[next]!);
    for (let slot = 0; slot < batch && next < G; slot++) {
      if (slotDoc[slot]! >= 0 || earliest(order[next]!) > step) continue;
      const g = order[next++]!;
      slotDoc[slot] = g;
      slotToken[slot] = starts[g]!;
      running++;
    }
    activeAll[s] = running;
    for (let l = 0; l < M; l++) {
      offsetsAll[s * M + l] = w;
      stamp++;
      for (let slot = 0; slot < batch; slot++) {
        if (slotDoc[slot]! < 0) continue;
        const base = (slotToken[slot]! * M + l) * k;
        for (let j = 0; j < k; j++) {
          const e = chosen[base + j]!;
          if (seen[e] === stamp) continue;
          seen[e] = stamp;
          union[w++] = e;
        }
      }
      unionSum[l]! += w - offsetsAll[s * M + l]!;
    }
    // Documents that decoded their last token free their slot for the next step.
    for (let slot = 0; slot < batch; slot++) {
      const g = slotDoc[slot]!;
      if (g < 0) continue;
      if (++slotToken[slot]! === starts[g + 1]!) {
        slotDoc[slot] = -1;
        running--;
      }
    }
    s++;
    step++;
  }
  const offsets = sharedInt32(s * M + 1);
  offsets.set(offsetsAll.subarray(0, s * M));
  offsets[s * M] = w;
  const active = sharedInt32(s);
  active.set(activeAll.subarray(0, s));
  return {
    batch,
    steps: s,
    layers: M,
    experts: E,
    offsets,
    chosen: union.subarray(0, w),
    active,
    unionSum,
  };
}

/** Belady's next uses over the batched access stream (positions as the cache counts them). */
export function batchFutureUses(schedule: BatchSchedule): FutureUses {
  const keyOf = batchKeys(schedule);
  return futureUses(keyOf.length, schedule.layers * schedule.experts, (i) => keyOf[i]!);
}

/** Accesses per key (layer × E + expert) of the batched stream (pinned's counts). */
export function batchAccessCounts(schedule: BatchSchedule): Float64Array {
  const counts = new Float64Array(schedule.layers * schedule.experts);
  for (const key of batchKeys(schedule)) counts[key]!++;
  return counts;
}

/** The key of every access of the batched stream. */
function batchKeys(schedule: BatchSchedule): Int32Array {
  const { offsets, chosen, layers: M, experts: E } = schedule;
  const keys = new Int32Array(chosen.length);
  for (let sl = 0; sl + 1 < offsets.length; sl++) {
    const base = (sl % M) * E;
    for (let i = offsets[sl]!; i < offsets[sl + 1]!; i++) keys[i] = base + chosen[i]!;
  }
  return keys;
}

export interface BatchReplayResult {
  stats: CacheStats;
  timings: TimingModel[];
}

/** Replays a batched schedule through one policy, without prefetch, timing each cost setting. */
export function replayBatch(
  schedule: BatchSchedule,
  options: {
    policy: CachePolicy;
    budget: Budget;
    costs: readonly StepCosts[];
    /** k of the trace (a RAM tier's policy options, timing.ts). */
    topK: number;
  },
): BatchReplayResult {
  const { layers: M, experts: E, steps: S, offsets, chosen } = schedule;
  const timings = options.costs.map((c) =>
    new TimingModel(c, { layers: M, experts: E, topK: options.topK })
  );
  const timing = TimingModel.chain(timings);
  const cache = new ExpertCache(options.policy, { layers: M, experts: E, budget: options.budget }, {
    slots: false,
    listener: timing,
    stream: true,
    hits: timingNeedsHits(options.costs),
  });
  for (let s = 0; s < S; s++) {
    for (let l = 0; l < M; l++) {
      const from = offsets[s * M + l]!;
      const count = offsets[s * M + l + 1]! - from;
      timing?.begin();
      cache.access(l, chosen, from, count);
      timing?.end(l, count);
    }
    timing?.endToken();
  }
  return { stats: cache.stats, timings };
}
