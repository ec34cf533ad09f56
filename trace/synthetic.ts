/**
 * Synthetic router logs for tests and benchmarks, with known statistics.
 *
 * - `uniform`: every token's top-k at every layer is a uniformly random
 *   k-subset in random order, independent of everything else. Expert shares
 *   are 1/E, repetition of the first choice 1/E, overlap of sets follows the
 *   hypergeometric law.
 * - `sticky`: each of the previous token's k experts (same layer, same
 *   document) is kept, in its slot, with probability `stickiness`; the other
 *   slots are drawn uniformly from the experts not yet chosen. stickiness = 0
 *   is the uniform case.
 *
 * Weights are the renormalised top-k of a router distribution `probs` whose
 * largest entries are the chosen experts in order. Speculative picks (`spec`)
 * equal the true experts of layer l+d with probability `specAccuracy`, and a
 * uniform k-subset otherwise.
 */
import { Rng } from "../common/random.ts";
import {
  type CaptureFacts,
  type ModelFacts,
  NO_EXPERT,
  type TraceDoc,
  TraceWriter,
  type TraceWriterOptions,
} from "./mod.ts";

export interface SyntheticOptions {
  /** E (default 8). */
  numExperts?: number;
  /** k (default 2). */
  topK?: number;
  /** M, all layers MoE (default 4). */
  numLayers?: number;
  /** Domain names and how many documents each gets (default 3 domains × 20). */
  domains?: { name: string; docs: number }[];
  /** Tokens per document (default 100). */
  tokensPerDoc?: number;
  /** Probability of keeping each of the previous token's experts (default 0: uniform). */
  stickiness?: number;
  /** Store the router distribution (default false). */
  probs?: boolean;
  /** D, speculative lookahead stored in `spec` (default 0). */
  lookahead?: number;
  /** Probability that a speculative pick set is exactly right (default 0.8). */
  specAccuracy?: number;
  /** Vocabulary size for token ids (default 1000). */
  vocabSize?: number;
  seed?: number;
}

type Resolved = Required<SyntheticOptions>;

function resolve(options: SyntheticOptions): Resolved {
  return {
    numExperts: options.numExperts ?? 8,
    topK: options.topK ?? 2,
    numLayers: options.numLayers ?? 4,
    domains: options.domains ??
      [{ name: "ArXiv", docs: 20 }, { name: "Github", docs: 20 }, {
        name: "PubMed Abstracts",
        docs: 20,
      }],
    tokensPerDoc: options.tokensPerDoc ?? 100,
    stickiness: options.stickiness ?? 0,
    probs: options.probs ?? false,
    lookahead: options.lookahead ?? 0,
    specAccuracy: options.specAccuracy ?? 0.8,
    vocabSize: options.vocabSize ?? 1000,
    seed: options.seed ?? 0,
  };
}

/** The model facts of a synthetic trace. */
export function syntheticModel(options: SyntheticOptions = {}): ModelFacts {
  const o = resolve(options);
  return {
    name: `synthetic-E${o.numExperts}-k${o.topK}-L${o.numLayers}`,
    family: "synthetic",
    num_layers: o.numLayers,
    moe_layers: Array.from({ length: o.numLayers }, (_, i) => i),
    num_experts: o.numExperts,
    top_k: o.topK,
    num_shared_experts: 0,
    hidden_size: 4096,
    expert_params: 3 * 4096 * 14336,
    dtype: "bfloat16",
  };
}

/** The capture facts of a synthetic trace. */
export function syntheticCapture(
  options: SyntheticOptions = {},
): Omit<CaptureFacts, "created" | "updated" | "complete"> {
  const o = resolve(options);
  return {
    corpus: `synthetic:${o.stickiness > 0 ? `sticky-${o.stickiness}` : "uniform"}`,
    domains: o.domains.map((d) => d.name),
    mode: "teacher-forced",
    lookahead: o.lookahead,
    probs: o.probs,
    seed: o.seed,
    tool_version: "synthetic",
  };
}

/** Yields the documents of a synthetic trace, domains interleaved round-robin. */
export function* syntheticDocs(options: SyntheticOptions = {}): Generator<TraceDoc> {
  const o = resolve(options);
  const rng = new Rng(o.seed);
  const remaining = o.domains.map((d) => d.docs);
  let docId = 0;
  while (remaining.some((n) => n > 0)) {
    for (let di = 0; di < o.domains.length; di++) {
      if (remaining[di]! <= 0) continue;
      remaining[di]!--;
      yield makeDoc(docId++, o.domains[di]!.name, o, rng);
    }
  }
}

/** Writes a whole synthetic trace to `dir` and returns its writer's manifest. */
export async function writeSyntheticTrace(
  dir: string,
  options: SyntheticOptions = {},
  writerOptions: TraceWriterOptions = {},
): Promise<void> {
  const writer = await TraceWriter.open(
    dir,
    { model: syntheticModel(options), capture: syntheticCapture(options) },
    writerOptions,
  );
  for (const doc of syntheticDocs(options)) await writer.add(doc);
  await writer.close();
}

function makeDoc(docId: number, domain: string, o: Resolved, rng: Rng): TraceDoc {
  const T = o.tokensPerDoc;
  const M = o.numLayers;
  const E = o.numExperts;
  const k = o.topK;
  const D = o.lookahead;
  const tokens = new Uint32Array(T);
  const experts = new Uint16Array(T * M * k);
  const weights = new Float32Array(T * M * k);
  const probs = o.probs ? new Float32Array(T * M * E) : undefined;
  const spec = D > 0 ? new Uint16Array(T * M * D * k) : undefined;
  const taken = new Uint8Array(E);
  const distribution = new Float64Array(E);
  for (let t = 0; t < T; t++) {
    tokens[t] = rng.int(o.vocabSize);
    for (let l = 0; l < M; l++) {
      const base = (t * M + l) * k;
      taken.fill(0);
      // Sticky slots first, so kept experts keep their rank.
      for (let j = 0; j < k; j++) {
        if (t > 0 && o.stickiness > 0 && rng.next() < o.stickiness) {
          const previous = experts[((t - 1) * M + l) * k + j]!;
          experts[base + j] = previous;
          taken[previous] = 1;
        } else {
          experts[base + j] = NO_EXPERT;
        }
      }
      for (let j = 0; j < k; j++) {
        if (experts[base + j] !== NO_EXPERT) continue;
        const e = drawUntaken(rng, taken, E, k);
        experts[base + j] = e;
        taken[e] = 1;
      }
      fillDistribution(distribution, experts.subarray(base, base + k), rng);
      let topMass = 0;
      for (let j = 0; j < k; j++) topMass += distribution[experts[base + j]!]!;
      for (let j = 0; j < k; j++) {
        weights[base + j] = distribution[experts[base + j]!]! / topMass;
      }
      if (probs) { for (let e = 0; e < E; e++) probs[(t * M + l) * E + e] = distribution[e]!; }
    }
    if (spec) {
      for (let l = 0; l < M; l++) {
        for (let d = 1; d <= D; d++) {
          const out = ((t * M + l) * D + (d - 1)) * k;
          if (l + d >= M) {
            spec.fill(NO_EXPERT, out, out + k);
          } else if (rng.next() < o.specAccuracy) {
            const truth = (t * M + l + d) * k;
            for (let j = 0; j < k; j++) spec[out + j] = experts[truth + j]!;
          } else {
            taken.fill(0);
            for (let j = 0; j < k; j++) {
              const e = drawUntaken(rng, taken, E, k);
              spec[out + j] = e;
              taken[e] = 1;
            }
          }
        }
      }
    }
  }
  const pieces = Array.from(tokens, (id) => `t${id}`);
  const doc: TraceDoc = { doc: docId, domain, tokens, pieces, experts, weights };
  if (probs) doc.probs = probs;
  if (spec) doc.spec = spec;
  return doc;
}

/** A uniformly random expert with taken[e] = 0 (at most k are taken, k ≤ E). */
function drawUntaken(rng: Rng, taken: Uint8Array, E: number, k: number): number {
  if (E > 4 * k) {
    // Rejection is fast when few are taken.
    for (;;) {
      const e = rng.int(E);
      if (!taken[e]) return e;
    }
  }
  let free = 0;
  for (let e = 0; e < E; e++) if (!taken[e]) free++;
  let pick = rng.int(free);
  for (let e = 0; e < E; e++) {
    if (taken[e]) continue;
    if (pick-- === 0) return e;
  }
  throw new Error("no free expert");
}

/**
 * A router distribution whose largest entries are `chosen`, in order: random
 * softmax values sorted descending, the top k given to the chosen experts and
 * the rest to the others in random order.
 */
function fillDistribution(out: Float64Array, chosen: Uint16Array, rng: Rng): void {
  const E = out.length;
  const values = new Float64Array(E);
  let sum = 0;
  for (let e = 0; e < E; e++) {
    values[e] = Math.exp(1.5 * rng.normal());
    sum += values[e]!;
  }
  values.sort().reverse();
  const isChosen = new Uint8Array(E);
  chosen.forEach((e, j) => {
    out[e] = values[j]! / sum;
    isChosen[e] = 1;
  });
  const rest: number[] = [];
  for (let e = 0; e < E; e++) if (!isChosen[e]) rest.push(e);
  for (let i = rest.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [rest[i], rest[j]] = [rest[j]!, rest[i]!];
  }
  rest.forEach((e, i) => out[e] = values[chosen.length + i]! / sum);
}
