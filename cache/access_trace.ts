/**
 * A whole trace's routing held in memory as compact arrays, the input of the
 * replay: decoded once, then replayed by every policy × capacity × prefetcher
 * combination (1,000,000 tokens × 32 layers × top-2 is 128 MB of u16).
 */
import { DataError } from "../common/errors.ts";
import { type Manifest, NO_EXPERT, TraceReader } from "../trace/mod.ts";

export interface AccessTrace {
  /** T tokens, in trace order (documents one after another). */
  tokens: number;
  /** M MoE layers. */
  layers: number;
  /** E routed experts per layer. */
  experts: number;
  /** k experts chosen per token and layer. */
  topK: number;
  /** [T, M, k] chosen experts, first choice first. */
  chosen: Uint16Array;
  /** D, speculative lookahead of `spec` (0 when absent). */
  lookahead: number;
  /** [T, M, D, k] speculative picks, or null. */
  spec: Uint16Array | null;
  /** [T] document id of each token. */
  doc: Uint32Array;
  /**
   * [T] the serving step at which each token's document arrived, for traces
   * imported from serving logs with an `arrival_step` column (absent or null
   * otherwise); a batched replay admits documents in this order (batch.ts).
   */
  arrival?: Uint32Array | null;
}

/** Reads every shard of the trace in `dir` into one AccessTrace. */
export async function loadAccessTrace(
  dir: string,
  options: { spec?: boolean } = {},
): Promise<{ trace: AccessTrace; manifest: Manifest }> {
  const reader = await TraceReader.open(dir);
  const { layers, topK, experts, lookahead } = reader.shape;
  const rows = reader.rows;
  const width = layers * topK;
  if (rows * width > 2 ** 31 - 1) {
    throw new DataError(
      `${dir} holds ${rows} tokens × ${width} accesses, more than the simulator's limit of 2^31 accesses.`,
    );
  }
  const wantSpec = (options.spec ?? true) && lookahead > 0;
  const chosen = sharedUint16(rows * width);
  const spec = wantSpec ? sharedUint16(rows * width * lookahead) : null;
  const doc = new Uint32Array(rows);
  const arrival = reader.shape.arrivalSteps ? new Uint32Array(rows) : null;
  let row = 0;
  // Only doc, experts, spec and arrival_step are kept: the "routing" read
  // skips weights, probs and token pieces (2-2.9x faster, trace/reader.ts).
  for await (const batch of reader.batches({ columns: "routing" })) {
    chosen.set(batch.experts, row * width);
    if (spec && batch.spec) spec.set(batch.spec, row * width * lookahead);
    doc.set(batch.doc, row);
    if (arrival && batch.arrivalStep) arrival.set(batch.arrivalStep, row);
    row += batch.rows;
  }
  // The reader has checked every shard's chosen experts (ids below E, k
  // distinct per token and layer); a second pass here cost 0.5 s of the
  // read of 1M tokens × 32 layers. Speculative picks it checks for range
  // only: a group must also be k distinct experts or all NO_EXPERT.
  if (spec) {
    const badSpec = checkGroups(spec, topK, experts, true);
    if (badSpec >= 0) {
      const t = Math.floor(badSpec / (layers * lookahead));
      const l = Math.floor(badSpec / lookahead) % layers;
      throw new DataError(
        `${dir} token ${t} layer ${l} lookahead ${badSpec % lookahead + 1} has speculative picks [${
          spec.subarray(badSpec * topK, (badSpec + 1) * topK).join(", ")
        }]; expected ${topK} distinct experts below ${experts}, or all ${NO_EXPERT}.`,
      );
    }
  }
  return {
    trace: { tokens: rows, layers, experts, topK, chosen, lookahead, spec, doc, arrival },
    manifest: reader.manifest,
  };
}

/**
 * A Uint16Array on a SharedArrayBuffer, so sweep workers read the trace
 * without copying it.
 */
export function sharedUint16(length: number): Uint16Array {
  return new Uint16Array(new SharedArrayBuffer(length * 2));
}

/** An AccessTrace from plain arrays (tests): `chosen[t][l]` lists layer l's experts for token t. */
export function accessTraceOf(
  chosen: number[][][],
  shape: { experts: number; spec?: number[][][][] },
): AccessTrace {
  const tokens = chosen.length;
  const layers = chosen[0]!.length;
  const topK = chosen[0]![0]!.length;
  const lookahead = shape.spec ? shape.spec[0]![0]!.length : 0;
  const flat = new Uint16Array(chosen.flat(2));
  if (flat.length !== tokens * layers * topK) throw new RangeError("ragged test trace");
  return {
    tokens,
    layers,
    experts: shape.experts,
    topK,
    chosen: flat,
    lookahead,
    spec: shape.spec ? new Uint16Array(shape.spec.flat(3)) : null,
    doc: new Uint32Array(tokens),
  };
}

/**
 * The index of the first group of k entries that is not k distinct experts
 * below E (with `allowEmpty`, a group of only NO_EXPERT is fine), or -1.
 */
function checkGroups(values: Uint16Array, k: number, E: number, allowEmpty: boolean): number {
  const groups = values.length / k;
  for (let g = 0; g < groups; g++) {
    const base = g * k;
    if (allowEmpty && values[base] === NO_EXPERT) {
      for (let j = 1; j < k; j++) if (values[base + j] !== NO_EXPERT) return g;
      continue;
    }
    for (let j = 0; j < k; j++) {
      const e = values[base + j]!;
      if (e >= E) return g;
      for (let i = 0; i < j; i++) if (values[base + i] === e) return g;
    }
  }
  return -1;
}

/** Keys (layer × E + expert) accessed per layer and expert over the whole trace. */
export function accessCounts(trace: AccessTrace): Float64Array {
  const { layers: M, experts: E, topK: k, chosen } = trace;
  const counts = new Float64Array(M * E);
  for (let i = 0; i < chosen.length; i++) {
    counts[(((i / k) | 0) % M) * E + chosen[i]!]!++;
  }
  return counts;
}
