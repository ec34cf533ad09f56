/**
 * SGLang's expert-distribution recorder in `per_token` mode: the `.pt` files
 * (`expert_distribution_recorder_{time}_{rank}.pt`, one per rank) that
 * `torch.save` writes from
 *
 *   {records: [{forward_pass_id, rank, gatherer_key, input_ids, positions,
 *               extend_seq_lens, forward_mode, topk_ids_of_layer, misc_objects,
 *               global_physical_count}, ...],
 *    last_physical_to_logical_map: [num_layers, num_physical_experts]}
 *
 * `topk_ids_of_layer` is int32 [num_layers, num_tokens, 8]: physical expert
 * ids, padded with −1 past the model's top-k and for layers without routing
 * (dense layers stay −1 throughout). Physical ids map to logical experts
 * through the file's last physical-to-logical map (the map in force when the
 * file was written). SGLang records no request ids: sequences are rebuilt
 * from `extend_seq_lens` and `positions` (sequences.ts), per rank; the
 * manifest says so. Gate weights are not recorded: the trace says so.
 *
 * forward_mode: 1 extend (prefill, phase 0), 2 decode (phase 1), 3 mixed
 * (chunked prefill with decodes: a one-token segment continuing a sequence
 * is a decode); passes of other modes (idle, speculative verify and draft)
 * are skipped and counted.
 *
 * Each file is a lane (sglang_rank.ts): files are read, checked and
 * converted in parallel, one per core (the first on this thread, the others
 * in workers), straight into one shared buffer of every document's expert
 * ids in trace order, which the trace writer takes without a copy.
 */
import { DataError } from "../../common/errors.ts";
import type { ConfigFacts } from "./model_config.ts";
import { type Sequence, SequenceRebuilder } from "./sequences.ts";
import {
  type ConvertJob,
  convertRank,
  type ConvertSegment,
  passDigests,
  type PassInfo,
  type RankSummary,
  readRank,
  releaseRank,
} from "./sglang_rank.ts";
import {
  type ImportedDoc,
  type ImportSummary,
  modelFacts,
  placeholderWeights,
  stagedImport,
} from "./sink.ts";

export async function importSglangPt(
  files: string[],
  out: string,
  config: ConfigFacts | null,
  options: { lanes?: number } = {},
): Promise<ImportSummary> {
  const lanes = openLanes(files.length, options.lanes);
  try {
    return await importWithLanes(files, out, config, lanes);
  } finally {
    for (const lane of lanes) lane.close();
  }
}

async function importWithLanes(
  files: string[],
  out: string,
  config: ConfigFacts | null,
  lanes: Lane[],
): Promise<ImportSummary> {
  const laneOf = (file: number) => lanes[file % lanes.length]!;
  // Every file read at once, one per lane; a fault is reported for the first file that has one.
  const reads = files.map((path, file) => laneOf(file).read(path, file));
  const settled = await Promise.allSettled(reads);
  const failed = settled.find((r) => r.status === "rejected");
  if (failed) throw (failed as PromiseRejectedResult).reason;
  const ranks = settled.map((r) => (r as PromiseFulfilledResult<RankSummary>).value);
  const layers = ranks[0]!.layers;
  for (const [file, rank] of ranks.entries()) {
    if (rank.layers !== layers) {
      throw new DataError(
        `${files[file]} has ${rank.layers} layers in its physical-to-logical map, but ${
          files[0]
        } has ${layers}; files imported together must come from one model.`,
      );
    }
  }
  const passes = ranks.flatMap((rank) => rank.passes);
  const index = new Map<PassInfo, number>();
  for (const rank of ranks) rank.passes.forEach((pass, i) => index.set(pass, i));
  const replicas = await dropReplicas(passes, index, laneOf);
  const kept = passes.filter((p) => !replicas.has(p));
  const routed = new Array<boolean>(layers).fill(false);
  let topK = 0;
  for (const rank of ranks) {
    if (!rank.passes.some((p) => !replicas.has(p))) continue;
    rank.routed.forEach((r, l) => routed[l] ||= r);
    topK = Math.max(topK, rank.topK);
  }
  const routedList = routed.flatMap((r, l) => (r ? [l] : []));
  if (routedList.length === 0) {
    throw new DataError(
      `The recording holds no routed tokens (every topk_ids_of_layer entry is −1).`,
    );
  }
  const plan = layerPlan(routedList, layers, config, files[0]!);
  if (config?.topK !== undefined && config.topK !== topK) {
    throw new DataError(
      `${
        files[0]
      } routes each token to ${topK} experts, but --model-config says num_experts_per_tok ${config.topK} (shared-expert fusion adds to the recorded top-k).`,
    );
  }
  let numExperts = 0;
  for (const rank of ranks) {
    for (const id of rank.physicalToLogical) numExperts = Math.max(numExperts, id + 1);
  }
  if (config?.numExperts !== undefined) {
    if (numExperts > config.numExperts) {
      throw new DataError(
        `${files[0]} maps physical experts to logical expert ${
          numExperts - 1
        }, but --model-config says num_experts ${config.numExperts}.`,
      );
    }
    numExperts = config.numExperts;
  }

  // Rebuild sequences per rank, then order all of them by the pass that started them.
  const byRank = new Map<number, { rebuilder: SequenceRebuilder; passes: PassInfo[] }>();
  for (const pass of kept) {
    let stream = byRank.get(pass.rank);
    if (!stream) byRank.set(pass.rank, stream = { rebuilder: new SequenceRebuilder(), passes: [] });
    stream.passes.push(pass);
  }
  const firstId = Math.min(...kept.map((p) => p.id));
  const sequences: { rank: number; sequence: Sequence; passes: PassInfo[] }[] = [];
  for (const [rank, stream] of [...byRank.entries()].sort((a, b) => a[0] - b[0])) {
    stream.passes.sort((a, b) => a.id - b.id);
    stream.passes.forEach((pass, i) => {
      if (i > 0 && stream.passes[i - 1]!.id === pass.id) {
        throw new DataError(`${pass.where} repeats forward_pass_id ${pass.id} of rank ${rank}.`);
      }
      stream.rebuilder.add(i, {
        positions: pass.positions,
        segments: pass.segments,
        mode: pass.mode,
      }, pass.where);
    });
    for (const sequence of stream.rebuilder.sequences) {
      sequences.push({ rank, sequence, passes: stream.passes });
    }
  }
  sequences.sort((a, b) =>
    a.passes[a.sequence.firstPass]!.id - b.passes[b.sequence.firstPass]!.id || a.rank - b.rank ||
    a.sequence.firstOrder - b.sequence.firstOrder
  );

  // Every document's rows, in trace order, in one buffer the lanes fill in parallel.
  const stride = plan.keep.length * topK;
  const jobs: ConvertJob[] = files.map(() => ({ keep: plan.keep, k: topK, segments: [] }));
  let rows = 0;
  for (const { sequence, passes: stream } of sequences) {
    for (const segment of sequence.segments) {
      const pass = stream[segment.pass]!;
      const job: ConvertSegment = {
        pass: index.get(pass)!,
        start: segment.start,
        length: segment.length,
        row: rows,
      };
      jobs[pass.file]!.segments.push(job);
      rows += segment.length;
    }
  }
  const buffer = new SharedArrayBuffer(rows * stride * 2);
  const conversions = jobs.map((job, file) =>
    replicasOnly(ranks[file]!, replicas)
      ? laneOf(file).release(file)
      : laneOf(file).convert(file, job, buffer)
  );
  const converted = await Promise.allSettled(conversions);
  const fault = converted.find((r) => r.status === "rejected");
  if (fault) throw (fault as PromiseRejectedResult).reason;
  const experts = new Uint16Array(buffer);

  const generated = kept.some((p) => p.mode !== "extend");
  const midStream = sequences.filter((s) => s.sequence.midStream).length;
  return await stagedImport(out, async (sink) => {
    const facts = modelFacts({ plan, topK, numExperts, name: baseNameOf(files[0]!) }, config);
    await sink.open(facts, {
      corpus: files.join(","),
      domains: [],
      mode: generated ? "generate" : "teacher-forced",
      lookahead: 0,
      probs: false,
      seed: 0,
      tool_version: "import",
      weights_recorded: false,
      arrival_steps: true,
      documents:
        "rebuilt from extend_seq_lens and positions per rank (SGLang records no request ids): a segment at position 0 starts a document; one at position p continues the document of length p last extended in the most recent earlier pass, first in that pass's order",
    });
    const pieceOf = new PieceStrings();
    let row = 0;
    for (const { sequence, passes: stream } of sequences) {
      const doc = documentOf(sequence, stream, stride, topK, firstId, pieceOf);
      const T = doc.tokens.length;
      // A view: consecutive documents are adjacent, so the writer's shards take them uncopied.
      doc.experts = experts.subarray(row * stride, (row + T) * stride);
      row += T;
      await sink.add(doc);
    }
    const skipped: Record<string, number> = {};
    for (const rank of ranks) {
      for (const [mode, n] of Object.entries(rank.skipped)) {
        skipped[mode] = (skipped[mode] ?? 0) + n;
      }
    }
    return await sink.finish({
      import_format: "sglang-pt",
      ranks: [...byRank.keys()].sort((a, b) => a - b),
      forward_passes: kept.length,
      tensor_parallel_replicas_skipped: replicas.size,
      passes_skipped_by_mode: skipped,
      documents_started_mid_stream: midStream,
      physical_to_logical: "each file's last_physical_to_logical_map (the map when it was dumped)",
      arrival_step: "forward_pass_id of the pass that started the document, minus the first one",
    });
  });
}

/** True when every pass of the file is a replica (its routing is not needed). */
function replicasOnly(rank: RankSummary, replicas: Set<PassInfo>): boolean {
  return rank.passes.every((p) => replicas.has(p));
}

function baseNameOf(path: string): string {
  return path.replace(/^.*\//, "").replace(/\.pt$/, "");
}

/**
 * Under tensor parallelism every rank records the same passes: a pass equal
 * (same forward_pass_id, tokens, positions and routing) to one already read
 * from another rank is a replica and is dropped. Routing is compared by
 * SHA-256 digests the lanes compute, only for passes whose other fields match.
 */
async function dropReplicas(
  passes: PassInfo[],
  index: Map<PassInfo, number>,
  laneOf: (file: number) => Lane,
): Promise<Set<PassInfo>> {
  const candidates: [PassInfo, PassInfo][] = [];
  const seen = new Map<number, PassInfo[]>();
  for (const pass of passes) {
    const earlier = seen.get(pass.id) ?? [];
    const twin = earlier.find((p) => p.rank !== pass.rank && sameLayout(p, pass));
    if (twin) candidates.push([twin, pass]);
    else earlier.push(pass);
    seen.set(pass.id, earlier);
  }
  const replicas = new Set<PassInfo>();
  if (candidates.length === 0) return replicas;
  const digestsOf = new Map<PassInfo, string>();
  const wanted = new Map<number, PassInfo[]>();
  for (const pass of candidates.flat()) {
    if (!wanted.has(pass.file)) wanted.set(pass.file, []);
    if (!wanted.get(pass.file)!.includes(pass)) wanted.get(pass.file)!.push(pass);
  }
  await Promise.all(
    [...wanted].map(async ([file, list]) => {
      const digests = await laneOf(file).digests(file, list.map((p) => index.get(p)!));
      list.forEach((p, i) => digestsOf.set(p, digests[i]!));
    }),
  );
  for (const [a, b] of candidates) if (digestsOf.get(a) === digestsOf.get(b)) replicas.add(b);
  return replicas;
}

function sameLayout(a: PassInfo, b: PassInfo): boolean {
  return a.tokens === b.tokens && a.mode === b.mode && a.width === b.width &&
    equal(a.inputIds, b.inputIds) && equal(a.positions, b.positions);
}

function equal(a: Int32Array, b: Int32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function layerPlan(routed: number[], layers: number, config: ConfigFacts | null, file: string) {
  let moe = routed;
  if (config?.moeLayers && config.numLayers !== undefined) {
    if (config.numLayers !== layers) {
      throw new DataError(
        `${file} records ${layers} layers, but --model-config says num_hidden_layers ${config.numLayers}.`,
      );
    }
    const extra = routed.filter((l) => !config.moeLayers!.includes(l));
    if (extra.length > 0) {
      throw new DataError(
        `${file} has routing in layer ${extra[0]}, which --model-config says is not a MoE layer.`,
      );
    }
    moe = config.moeLayers;
  }
  return { keep: moe, moeLayers: moe, numLayers: layers };
}

/** One rebuilt sequence as a document, its expert ids left to the caller (the lanes wrote them). */
function documentOf(
  sequence: Sequence,
  passes: PassInfo[],
  stride: number,
  k: number,
  firstId: number,
  pieceOf: PieceStrings,
): ImportedDoc {
  const T = sequence.segments.reduce((n, s) => n + s.length, 0);
  const tokens = new Uint32Array(T);
  const phase = new Uint8Array(T);
  let row = 0;
  for (const segment of sequence.segments) {
    const pass = passes[segment.pass]!;
    const inputIds = pass.inputIds;
    for (let i = 0; i < segment.length; i++) {
      const id = inputIds[segment.start + i]!;
      if (id < 0) {
        throw new DataError(
          `${pass.where} field "input_ids" holds ${id} at token ${
            segment.start + i
          }; token ids are ≥ 0.`,
        );
      }
      tokens[row + i] = id;
    }
    phase.fill(segment.phase, row, row + segment.length);
    row += segment.length;
  }
  return {
    domain: "sglang",
    tokens,
    pieces: pieceOf.all(tokens),
    phase,
    experts: new Uint16Array(0),
    weights: placeholderWeights(T * stride, k),
    arrivalStep: passes[sequence.firstPass]!.id - firstId,
  };
}

/**
 * A token's piece is its id as text (SGLang records no text). One string per
 * distinct id, shared by every document: the writer's dictionary of pieces
 * then looks up strings whose hash is already computed.
 */
class PieceStrings {
  /** By id below 2^20 (every vocabulary in use); larger ids in a map. */
  #small: (string | undefined)[] = [];
  #large = new Map<number, string>();

  all(tokens: Uint32Array): string[] {
    const out = new Array<string>(tokens.length);
    for (let i = 0; i < tokens.length; i++) {
      const id = tokens[i]!;
      if (id < 1 << 20) {
        while (this.#small.length <= id) this.#small.push(undefined);
        out[i] = this.#small[id] ??= String(id);
      } else {
        let s = this.#large.get(id);
        if (s === undefined) this.#large.set(id, s = String(id));
        out[i] = s;
      }
    }
    return out;
  }
}

// ---------------------------------------------------------------- lanes

/** Where a file's lane runs: this thread, or a worker (sglang_lane.ts). */
interface Lane {
  read(path: string, file: number): Promise<RankSummary>;
  digests(file: number, passes: number[]): Promise<string[]>;
  convert(file: number, job: ConvertJob, buffer: SharedArrayBuffer): Promise<void>;
  release(file: number): Promise<void>;
  close(): void;
}

/**
 * One lane per file up to one per core (or `lanes`, for tests): the first on
 * this thread (which would otherwise wait), the rest in workers. A single
 * file stays on this thread.
 */
function openLanes(files: number, most = navigator.hardwareConcurrency || 1): Lane[] {
  const count = Math.max(1, Math.min(files, most));
  const lanes: Lane[] = [threadLane()];
  for (let i = 1; i < count; i++) lanes.push(new WorkerLane());
  return lanes;
}

function threadLane(): Lane {
  // Files read on this thread, forgotten when the import ends however it ends.
  const files = new Set<number>();
  return {
    read: (path, file) => {
      files.add(file);
      return readRank(path, file);
    },
    digests: passDigests,
    // Async, so that a fault is a rejection, as a worker's is.
    convert: (file, job, buffer) =>
      Promise.resolve().then(() => convertRank(file, job, new Uint16Array(buffer))),
    release: (file) => Promise.resolve().then(() => releaseRank(file)),
    close: () => files.forEach(releaseRank),
  };
}

class WorkerLane implements Lane {
  #worker = new Worker(new URL("./sglang_lane.ts", import.meta.url).href, { type: "module" });
  #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #next = 0;

  constructor() {
    this.#worker.onmessage = (event: MessageEvent) => {
      const { id, value, error, data } = event.data;
      const pending = this.#pending.get(id);
      if (!pending) return;
      this.#pending.delete(id);
      if (error === undefined) pending.resolve(value);
      else pending.reject(data ? new DataError(error) : new Error(error));
    };
    this.#worker.onerror = (event) => {
      event.preventDefault();
      for (const pending of this.#pending.values()) {
        pending.reject(new Error(`an import worker failed: ${event.message}`));
      }
      this.#pending.clear();
    };
  }

  #call<T>(message: Record<string, unknown>): Promise<T> {
    const id = this.#next++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.#worker.postMessage({ id, ...message });
    });
  }

  read(path: string, file: number): Promise<RankSummary> {
    return this.#call({ op: "read", path, file });
  }

  digests(file: number, passes: number[]): Promise<string[]> {
    return this.#call({ op: "digests", file, passes });
  }

  convert(file: number, job: ConvertJob, buffer: SharedArrayBuffer): Promise<void> {
    return this.#call({ op: "convert", file, job, buffer });
  }

  release(file: number): Promise<void> {
    return this.#call({ op: "release", file });
  }

  close(): void {
    this.#worker.terminate();
  }
}
