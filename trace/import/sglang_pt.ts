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
 */
import { DataError, messageOf } from "../../common/errors.ts";
import { readWhole } from "../../common/fs.ts";
import { NO_EXPERT } from "../mod.ts";
import type { ConfigFacts } from "./model_config.ts";
import type { PyValue } from "./pickle.ts";
import { type PassMode, type Sequence, SequenceRebuilder } from "./sequences.ts";
import {
  type ImportedDoc,
  type ImportSummary,
  modelFacts,
  placeholderWeights,
  stagedImport,
} from "./sink.ts";
import { field, isTensorRef, openTorchFile, tensorInt32, type TorchFile } from "./torch_zip.ts";

const MODES: Readonly<Record<number, PassMode>> = { 1: "extend", 2: "decode", 3: "mixed" };
const MODE_NAMES: Readonly<Record<number, string>> = {
  4: "idle",
  5: "target_verify",
  6: "draft_extend",
};

/** One forward pass, checked. */
interface Pass {
  file: number;
  rank: number;
  id: number;
  mode: PassMode;
  inputIds: Int32Array;
  positions: Int32Array;
  segments: number[] | null;
  /** [L, T, K] physical ids, row-major. */
  topk: Int32Array;
  /** K: ids per row of topk (SGLang pads to 8). */
  width: number;
  tokens: number;
  where: string;
}

interface RankFile {
  torch: TorchFile;
  /** [L, P] logical id of each physical expert. */
  physicalToLogical: Int32Array;
  physical: number;
}

export async function importSglangPt(
  files: string[],
  out: string,
  config: ConfigFacts | null,
): Promise<ImportSummary> {
  const ranks: RankFile[] = [];
  const passes: Pass[] = [];
  const skipped: Record<string, number> = {};
  let layers = -1;
  // Every file is read at once (the reads overlap); each is parsed when it has arrived.
  const reads = files.map((file) =>
    readWhole(file).catch((error) => {
      throw new DataError(`Cannot read ${file}: ${messageOf(error)}.`);
    })
  );
  reads.forEach((read) => read.catch(() => {})); // a later file's failure waits its turn
  for (const [index, file] of files.entries()) {
    const torch = openTorchFile(file, await reads[index]!);
    const map = field(torch.root, "last_physical_to_logical_map");
    const records = field(torch.root, "records");
    if (!Array.isArray(records) || !isTensorRef(map)) {
      throw new DataError(
        `${file} is not an SGLang per_token recording: it needs "records" (a list) and "last_physical_to_logical_map" (a tensor).`,
      );
    }
    if (map.shape.length !== 2) {
      throw new DataError(
        `${file} field "last_physical_to_logical_map" must be [num_layers, num_physical_experts], got shape [${
          map.shape.join(", ")
        }].`,
      );
    }
    if (layers < 0) layers = map.shape[0]!;
    if (map.shape[0] !== layers) {
      throw new DataError(
        `${file} has ${map.shape[0]} layers in its physical-to-logical map, but ${
          files[0]
        } has ${layers}; files imported together must come from one model.`,
      );
    }
    const physicalToLogical = tensorInt32(torch, map, `field "last_physical_to_logical_map"`);
    ranks.push({ torch, physicalToLogical, physical: map.shape[1]! });
    for (const [r, record] of records.entries()) {
      const pass = readPass(torch, index, r, record, layers, skipped);
      if (pass) passes.push(pass);
    }
  }
  const replicas = dropReplicas(passes);
  const kept = passes.filter((p) => !replicas.has(p));
  const { routed, topK } = routedLayers(kept, layers, ranks);
  const plan = layerPlan(routed, layers, config, files[0]!);
  if (config?.topK !== undefined && config.topK !== topK) {
    throw new DataError(
      `${
        files[0]
      } routes each token to ${topK} experts, but --model-config says num_experts_per_tok ${config.topK} (shared-expert fusion adds to the recorded top-k).`,
    );
  }
  let numExperts = 0;
  for (const rank of ranks) {
    for (const id of rank.physicalToLogical) {
      if (id < 0 || id >= NO_EXPERT) {
        throw new DataError(
          `${rank.torch.file} field "last_physical_to_logical_map" holds ${id}; logical expert ids are in 0..${
            NO_EXPERT - 1
          }.`,
        );
      }
      numExperts = Math.max(numExperts, id + 1);
    }
  }
  const mapped = numExperts;
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
  const byRank = new Map<number, { rebuilder: SequenceRebuilder; passes: Pass[] }>();
  for (const pass of kept) {
    let stream = byRank.get(pass.rank);
    if (!stream) byRank.set(pass.rank, stream = { rebuilder: new SequenceRebuilder(), passes: [] });
    stream.passes.push(pass);
  }
  const firstId = Math.min(...kept.map((p) => p.id));
  const sequences: { rank: number; sequence: Sequence; passes: Pass[] }[] = [];
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
    // Every logical id is below mapped, the largest id of the maps + 1.
    const seen = new Uint32Array(mapped);
    for (const { sequence, passes: stream } of sequences) {
      const tokens = sequence.segments.reduce((n, s) => n + s.length, 0);
      const experts = sink.expertsFor(tokens);
      await sink.add(
        documentOf(sequence, stream, ranks, plan.keep, topK, firstId, pieceOf, seen, experts),
      );
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

function baseNameOf(path: string): string {
  return path.replace(/^.*\//, "").replace(/\.pt$/, "");
}

function readPass(
  torch: TorchFile,
  fileIndex: number,
  index: number,
  record: PyValue,
  layers: number,
  skipped: Record<string, number>,
): Pass | null {
  let where = `${torch.file} records[${index}]`;
  if (!(record instanceof Map)) throw new DataError(`${where} must be a dict.`);
  const int = (key: string) => {
    const v = record.get(key);
    if (typeof v !== "number" || !Number.isInteger(v)) {
      throw new DataError(`${where} field "${key}" must be an integer, got ${describe(v)}.`);
    }
    return v;
  };
  const id = int("forward_pass_id");
  where = `${torch.file} records[${index}] (forward_pass_id ${id})`;
  const rank = int("rank");
  const modeValue = int("forward_mode");
  const ints = (key: string): Int32Array => {
    const v = record.get(key);
    if (isTensorRef(v)) return tensorInt32(torch, v, `records[${index}] field "${key}"`);
    if (Array.isArray(v) && v.every((x) => typeof x === "number" && Number.isInteger(x))) {
      return Int32Array.from(v as number[]);
    }
    throw new DataError(`${where} field "${key}" must be a list of integers, got ${describe(v)}.`);
  };
  const inputIds = ints("input_ids");
  const tokens = inputIds.length;
  const mode = MODES[modeValue];
  if (tokens === 0) return null;
  if (!mode) {
    const name = MODE_NAMES[modeValue] ?? `mode ${modeValue}`;
    skipped[name] = (skipped[name] ?? 0) + 1;
    return null;
  }
  const positions = ints("positions");
  if (positions.length !== tokens) {
    throw new DataError(
      `${where} has ${tokens} input_ids but ${positions.length} positions; expected one position per token.`,
    );
  }
  const lens = record.get("extend_seq_lens");
  let segments: number[] | null = null;
  if (lens !== null && lens !== undefined && mode !== "decode") {
    if (
      !Array.isArray(lens) ||
      !lens.every((x) => typeof x === "number" && Number.isInteger(x) && x >= 0)
    ) {
      throw new DataError(`${where} field "extend_seq_lens" must be a list of counts or None.`);
    }
    segments = lens as number[];
  } else if (mode !== "decode") {
    throw new DataError(
      `${where} is an extend pass without "extend_seq_lens"; its sequences cannot be told apart.`,
    );
  }
  const topkRef = record.get("topk_ids_of_layer");
  if (!isTensorRef(topkRef) || topkRef.shape.length !== 3) {
    throw new DataError(
      `${where} field "topk_ids_of_layer" must be a tensor [num_layers, num_tokens, top_k], got ${
        isTensorRef(topkRef) ? `shape [${topkRef.shape.join(", ")}]` : describe(topkRef)
      }.`,
    );
  }
  if (topkRef.shape[0] !== layers || topkRef.shape[1] !== tokens) {
    throw new DataError(
      `${where} field "topk_ids_of_layer" has shape [${
        topkRef.shape.join(", ")
      }], expected [${layers}, ${tokens}, top_k] (layers of the map, tokens of input_ids).`,
    );
  }
  const topk = tensorInt32(torch, topkRef, `records[${index}] field "topk_ids_of_layer"`);
  return {
    file: fileIndex,
    rank,
    id,
    mode,
    inputIds,
    positions,
    segments,
    topk,
    width: topkRef.shape[2]!,
    tokens,
    where,
  };
}

/**
 * Under tensor parallelism every rank records the same passes: a pass equal
 * (same forward_pass_id, tokens, positions and routing) to one already read
 * from another rank is a replica and is dropped.
 */
function dropReplicas(passes: Pass[]): Set<Pass> {
  const seen = new Map<number, Pass[]>();
  const replicas = new Set<Pass>();
  for (const pass of passes) {
    const earlier = seen.get(pass.id) ?? [];
    if (earlier.some((p) => p.rank !== pass.rank && samePass(p, pass))) replicas.add(pass);
    else earlier.push(pass);
    seen.set(pass.id, earlier);
  }
  return replicas;
}

function samePass(a: Pass, b: Pass): boolean {
  return a.tokens === b.tokens && a.mode === b.mode && equal(a.inputIds, b.inputIds) &&
    equal(a.positions, b.positions) && a.topk.length === b.topk.length && equal(a.topk, b.topk);
}

function equal(a: Int32Array, b: Int32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Layers with any routing, and the top-k: the most valid ids any of their rows holds. */
function routedLayers(
  passes: Pass[],
  layers: number,
  ranks: RankFile[],
): { routed: number[]; topK: number } {
  const routed = new Array<boolean>(layers).fill(false);
  let topK = 0;
  for (const pass of passes) {
    const K = pass.width;
    const physical = ranks[pass.file]!.physical;
    for (let l = 0; l < layers; l++) {
      const base = l * pass.tokens * K;
      // Most layers are all ids (every row full) or all −1 (a dense layer):
      // the block's least and largest values settle those in one tight scan.
      const [least, largest] = extremes(pass.topk, base, base + pass.tokens * K);
      if (pass.tokens * K === 0 || (least === -1 && largest === -1)) continue;
      if (least >= 0 && largest < physical) {
        routed[l] = true;
        if (K > topK) topK = K;
        continue;
      }
      for (let t = 0; t < pass.tokens; t++) {
        const row = base + t * K;
        let n = 0;
        while (n < K && pass.topk[row + n]! >= 0) n++;
        for (let j = n; j < K; j++) {
          if (pass.topk[row + j] !== -1) {
            throw new DataError(
              `${pass.where} field "topk_ids_of_layer" layer ${l} token ${t} has ${
                pass.topk[row + j]
              } after −1 padding; ids must come first, −1 after.`,
            );
          }
        }
        for (let j = 0; j < n; j++) {
          if (pass.topk[row + j]! >= physical) {
            throw new DataError(
              `${pass.where} field "topk_ids_of_layer" layer ${l} token ${t} names physical expert ${
                pass.topk[row + j]
              }, but the physical-to-logical map has ${physical}.`,
            );
          }
        }
        if (n > 0) routed[l] = true;
        if (n > topK) topK = n;
      }
    }
  }
  const list = routed.flatMap((r, l) => (r ? [l] : []));
  if (list.length === 0) {
    throw new DataError(
      `The recording holds no routed tokens (every topk_ids_of_layer entry is −1).`,
    );
  }
  return { routed: list, topK };
}

/** The least and largest of values[start..end). */
function extremes(values: Int32Array, start: number, end: number): [number, number] {
  let least = 0x7fffffff;
  let largest = -0x80000000;
  for (let i = start; i < end; i++) {
    const v = values[i]!;
    if (v < least) least = v;
    if (v > largest) largest = v;
  }
  return [least, largest];
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

/**
 * One rebuilt sequence as a document, its [T, M, k] expert ids written into
 * `experts` (every entry). Each segment is copied layer by layer:
 * `topk` is [L, T, K], so a layer's rows of one segment lie end to end and
 * are read in order, and written at a stride of M·k into `experts`.
 */
function documentOf(
  sequence: Sequence,
  passes: Pass[],
  ranks: RankFile[],
  keep: number[],
  k: number,
  firstId: number,
  pieceOf: PieceStrings,
  seen: Uint32Array,
  experts: Uint16Array,
): ImportedDoc {
  const T = sequence.segments.reduce((n, s) => n + s.length, 0);
  const M = keep.length;
  const stride = M * k;
  const tokens = new Uint32Array(T);
  const phase = new Uint8Array(T);
  // seen[e] === stamp: logical expert e was already chosen for this token and
  // layer. `seen` has one slot per logical expert (a few hundred bytes).
  seen.fill(0);
  let stamp = 0;
  let row = 0;
  for (const segment of sequence.segments) {
    const pass = passes[segment.pass]!;
    const map = ranks[pass.file]!.physicalToLogical;
    const P = ranks[pass.file]!.physical;
    const K = pass.width;
    const topk = pass.topk;
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
    for (let m = 0; m < M; m++) {
      const l = keep[m]!;
      const source = (l * pass.tokens + segment.start) * K;
      const bad = gatherLayer(
        topk,
        source,
        K,
        map,
        l * P,
        experts,
        row * stride + m * k,
        stride,
        k,
        segment.length,
        seen,
        stamp,
      );
      stamp += segment.length;
      if (bad >= 0) {
        const t = segment.start + Math.floor(bad / k);
        const j = bad % k;
        const physical = topk[source + (t - segment.start) * K + j]!;
        throw new DataError(
          physical < 0
            ? `${pass.where} field "topk_ids_of_layer" layer ${l} token ${t} routes to ${j} experts, expected ${k}.`
            : `${pass.where} layer ${l} token ${t} maps two chosen physical experts to logical expert ${
              map[l * P + physical]
            }; the physical-to-logical map changed while recording.`,
        );
      }
    }
    row += segment.length;
  }
  return {
    domain: "sglang",
    tokens,
    pieces: pieceOf.all(tokens),
    phase,
    experts,
    weights: placeholderWeights(T * stride, k),
    arrivalStep: passes[sequence.firstPass]!.id - firstId,
  };
}

/**
 * Copies `rows` rows of one layer: physical ids from `topk` (rows K apart from
 * `source`) through `map` (this layer's [P] logical ids from `logical` on) into `experts` (rows
 * `stride` apart from `target`, k each). Row i uses stamp + 1 + i in `seen`
 * to catch two choices of one logical expert. Returns −1, or i·k + j of the
 * first id that is padding (−1) or a repeated logical expert. A small leaf
 * of typed arrays and numbers, which the JIT compiles to a tight loop.
 */
function gatherLayer(
  topk: Int32Array,
  source: number,
  K: number,
  map: Int32Array,
  logical: number,
  experts: Uint16Array,
  target: number,
  stride: number,
  k: number,
  rows: number,
  seen: Uint32Array,
  stamp: number,
): number {
  for (let i = 0; i < rows; i++, source += K, target += stride) {
    stamp++;
    for (let j = 0; j < k; j++) {
      const physical = topk[source + j]!;
      if (physical < 0) return i * k + j;
      const e = map[logical + physical]!;
      if (seen[e] === stamp) return i * k + j;
      seen[e] = stamp;
      experts[target + j] = e;
    }
  }
  return -1;
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

function describe(value: PyValue | undefined): string {
  if (value === undefined) return "nothing";
  if (value === null) return "None";
  if (Array.isArray(value)) return "a list";
  if (value instanceof Map) return "a dict";
  if (isTensorRef(value)) return `a ${value.dtype} tensor`;
  return JSON.stringify(typeof value === "bigint" ? String(value) : value) ?? String(value);
}
