/**
 * One SGLang per_token recording (one rank's `.pt` file) as a lane of an
 * import: read and checked, its routing scanned, then its passes converted
 * into logical expert ids. A lane runs on the main thread or in a worker
 * (sglang_lane.ts), one file per lane, so the files of a multi-rank
 * recording are read and converted in parallel; the lane hands the importer
 * only what it needs to rebuild sequences.
 *
 * Each pass's `topk_ids_of_layer` tensor (most of a file's bytes) is read
 * from disk when it is scanned and again when it is converted, into one
 * reused buffer (`openTorchArchive`), so a lane never holds its file whole:
 * importing 353 MiB of recordings peaked at 495 MiB of memory, against 805
 * MiB with the files read whole (which remains the way for zips whose
 * entries are compressed).
 *
 * Why lanes: reading 353 MiB of recordings and gathering 82 M ids were
 * three quarters of `bench import`'s time on one thread.
 */
import { DataError, messageOf } from "../../common/errors.ts";
import { readWhole } from "../../common/fs.ts";
// From manifest.ts, not mod.ts: a worker running this lane then loads no Arrow or Parquet code.
import { NO_EXPERT } from "../manifest.ts";
import type { PyValue, TensorRef } from "./pickle.ts";
import type { PassMode } from "./sequences.ts";
import {
  field,
  isTensorRef,
  openTorchArchive,
  openTorchFile,
  tensorInt32,
  type TorchArchive,
  type TorchFile,
} from "./torch_zip.ts";

const MODES: Readonly<Record<number, PassMode>> = { 1: "extend", 2: "decode", 3: "mixed" };
const MODE_NAMES: Readonly<Record<number, string>> = {
  4: "idle",
  5: "target_verify",
  6: "draft_extend",
};

/** One forward pass, checked: what the importer needs of it (its routing stays in the lane). */
export interface PassInfo {
  /** Index of its file among the files imported. */
  file: number;
  rank: number;
  id: number;
  mode: PassMode;
  /** [T] */
  inputIds: Int32Array;
  /** [T] */
  positions: Int32Array;
  segments: number[] | null;
  /** K: ids per row of topk (SGLang pads to 8). */
  width: number;
  tokens: number;
  where: string;
}

/** A file as its lane read it. */
export interface RankSummary {
  /** Layers of its physical-to-logical map. */
  layers: number;
  /** P: physical experts per layer. */
  physical: number;
  /** [L, P] logical id of each physical expert. */
  physicalToLogical: Int32Array;
  passes: PassInfo[];
  /** [L] whether any token of the file is routed in that layer. */
  routed: boolean[];
  /** The most valid ids any row holds. */
  topK: number;
  /** Passes skipped, by mode name. */
  skipped: Record<string, number>;
}

/** Where a run of one pass's tokens goes in the import's expert-id buffer. */
export interface ConvertSegment {
  /** Index of the pass in its file's `passes`. */
  pass: number;
  /** First token within the pass. */
  start: number;
  length: number;
  /** Row of the buffer its first token fills. */
  row: number;
}

export interface ConvertJob {
  /** The layers of the log's layer axis kept as MoE layers, in order (M of them). */
  keep: number[];
  k: number;
  segments: ConvertSegment[];
}

/**
 * Files this thread has read, by index: how to get each pass's [L, T, K]
 * physical ids again (from disk into a reused buffer, valid until the next
 * call; or a view of the file held whole), and how to let the file go.
 */
const held = new Map<
  number,
  { idsOf: (pass: number) => Int32Array; close: () => void; summary: RankSummary }
>();

/** Reads and checks file `path` (index `file` of the import) and scans its routing. */
export async function readRank(path: string, file: number): Promise<RankSummary> {
  // Entry by entry from disk where the zip allows (most of the file is then
  // never held at once); else whole, as openTorchFile reads anything.
  let torch: TorchFile;
  const archive = openTorchArchive(path);
  if (archive) torch = archive;
  else {
    let bytes: Uint8Array;
    try {
      bytes = await readWhole(path);
    } catch (error) {
      throw new DataError(`Cannot read ${path}: ${messageOf(error)}.`);
    }
    torch = openTorchFile(path, bytes);
  }
  try {
    return readRecords(torch, archive, path, file);
  } catch (error) {
    archive?.close();
    throw error;
  }
}

function readRecords(
  torch: TorchFile,
  archive: TorchArchive | null,
  path: string,
  file: number,
): RankSummary {
  const map = field(torch.root, "last_physical_to_logical_map");
  const records = field(torch.root, "records");
  if (!Array.isArray(records) || !isTensorRef(map)) {
    throw new DataError(
      `${path} is not an SGLang per_token recording: it needs "records" (a list) and "last_physical_to_logical_map" (a tensor).`,
    );
  }
  if (map.shape.length !== 2) {
    throw new DataError(
      `${path} field "last_physical_to_logical_map" must be [num_layers, num_physical_experts], got shape [${
        map.shape.join(", ")
      }].`,
    );
  }
  const layers = map.shape[0]!;
  const physical = map.shape[1]!;
  // A copy: a view would keep (and, sent from a worker, clone) the whole file.
  const physicalToLogical = tensorInt32(torch, map, `field "last_physical_to_logical_map"`)
    .slice();
  for (const id of physicalToLogical) {
    if (id < 0 || id >= NO_EXPERT) {
      throw new DataError(
        `${path} field "last_physical_to_logical_map" holds ${id}; logical expert ids are in 0..${
          NO_EXPERT - 1
        }.`,
      );
    }
  }
  const skipped: Record<string, number> = {};
  const passes: PassInfo[] = [];
  const refs: { ref: TensorRef; what: string }[] = [];
  const idsOf = (p: number) => {
    const { ref, what } = refs[p]!;
    return tensorInt32(archive ? archive.readInto(ref.storageKey) : torch, ref, what);
  };
  const routed = new Array<boolean>(layers).fill(false);
  let topK = 0;
  for (const [r, record] of records.entries()) {
    const pass = readPass(torch, file, r, record, layers, skipped);
    if (!pass) continue;
    passes.push(pass.info);
    refs.push({ ref: pass.topk, what: `records[${r}] field "topk_ids_of_layer"` });
    // Scanned as it is read, so a fault is reported in record order.
    topK = Math.max(topK, scanPass(pass.info, idsOf(passes.length - 1), routed, physical));
  }
  const summary = { layers, physical, physicalToLogical, passes, routed, topK, skipped };
  held.set(file, { idsOf, close: () => archive?.close(), summary });
  return summary;
}

/** SHA-256 of the [L, T, K] ids of some passes of a file read here (to find tensor-parallel replicas). */
export async function passDigests(file: number, passes: number[]): Promise<string[]> {
  const { idsOf } = heldFile(file);
  const out: string[] = [];
  for (const p of passes) {
    const ids = idsOf(p);
    const bytes = new Uint8Array(ids.buffer, ids.byteOffset, ids.byteLength);
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes.slice()));
    out.push(Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join(""));
  }
  return out;
}

/**
 * Writes the logical ids of `job`'s segments into `target` ([rows, M, k]),
 * checking that every kept layer of every token routes to k different
 * logical experts; then lets the file go.
 */
export function convertRank(file: number, job: ConvertJob, target: Uint16Array): void {
  const { idsOf, close, summary } = heldFile(file);
  const { keep, k } = job;
  const M = keep.length;
  const stride = M * k;
  const P = summary.physical;
  const map = summary.physicalToLogical;
  // seen[e] === stamp: logical expert e was already chosen for this token and
  // layer. `seen` has one slot per logical expert id.
  const seen = new Uint32Array(NO_EXPERT);
  let stamp = 0;
  // By pass, in file order: each pass's ids are read once, for all its segments.
  const segments = [...job.segments].sort((a, b) => a.pass - b.pass || a.start - b.start);
  let ids: Int32Array = new Int32Array(0);
  let current = -1;
  for (const segment of segments) {
    const pass = summary.passes[segment.pass]!;
    const K = pass.width;
    if (segment.pass !== current) {
      ids = idsOf(segment.pass);
      current = segment.pass;
    }
    for (let m = 0; m < M; m++) {
      const l = keep[m]!;
      const source = (l * pass.tokens + segment.start) * K;
      const bad = gatherLayer(
        ids,
        source,
        K,
        map,
        l * P,
        target,
        segment.row * stride + m * k,
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
        const physical = ids[source + (t - segment.start) * K + j]!;
        throw new DataError(
          physical < 0
            ? `${pass.where} field "topk_ids_of_layer" layer ${l} token ${t} routes to ${j} experts, expected ${k}.`
            : `${pass.where} layer ${l} token ${t} maps two chosen physical experts to logical expert ${
              map[l * P + physical]
            }; the physical-to-logical map changed while recording.`,
        );
      }
      if (stamp > 0xf0000000) {
        seen.fill(0);
        stamp = 0;
      }
    }
  }
  close();
  held.delete(file);
}

/** Forgets a file read here (after a failure elsewhere). */
export function releaseRank(file: number): void {
  held.get(file)?.close();
  held.delete(file);
}

function heldFile(file: number) {
  const entry = held.get(file);
  if (!entry) throw new Error(`sglang lane: file ${file} was not read on this thread`);
  return entry;
}

function readPass(
  torch: TorchFile,
  fileIndex: number,
  index: number,
  record: PyValue,
  layers: number,
  skipped: Record<string, number>,
): { info: PassInfo; topk: TensorRef } | null {
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
  // Copies of tensors' values: views would keep the whole file (see readRank).
  const ints = (key: string): Int32Array => {
    const v = record.get(key);
    if (isTensorRef(v)) return tensorInt32(torch, v, `records[${index}] field "${key}"`).slice();
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
  return {
    info: {
      file: fileIndex,
      rank,
      id,
      mode,
      inputIds,
      positions,
      segments,
      width: topkRef.shape[2]!,
      tokens,
      where,
    },
    topk: topkRef,
  };
}

/**
 * Marks the layers in which `pass` routes any token (in `routed`) and
 * returns its top-k (the most valid ids any row holds), checking that ids
 * come before the −1 padding and name a physical expert.
 */
function scanPass(pass: PassInfo, ids: Int32Array, routed: boolean[], physical: number): number {
  const K = pass.width;
  let topK = 0;
  for (let l = 0; l < routed.length; l++) {
    const base = l * pass.tokens * K;
    // Most layers are all ids (every row full) or all −1 (a dense layer):
    // the block's least and largest values settle those in one tight scan.
    const [least, largest] = extremes(ids, base, base + pass.tokens * K);
    if (pass.tokens * K === 0 || (least === -1 && largest === -1)) continue;
    if (least >= 0 && largest < physical) {
      routed[l] = true;
      if (K > topK) topK = K;
      continue;
    }
    for (let t = 0; t < pass.tokens; t++) {
      const row = base + t * K;
      let n = 0;
      while (n < K && ids[row + n]! >= 0) n++;
      for (let j = n; j < K; j++) {
        if (ids[row + j] !== -1) {
          throw new DataError(
            `${pass.where} field "topk_ids_of_layer" layer ${l} token ${t} has ${
              ids[row + j]
            } after −1 padding; ids must come first, −1 after.`,
          );
        }
      }
      for (let j = 0; j < n; j++) {
        if (ids[row + j]! >= physical) {
          throw new DataError(
            `${pass.where} field "topk_ids_of_layer" layer ${l} token ${t} names physical expert ${
              ids[row + j]
            }, but the physical-to-logical map has ${physical}.`,
          );
        }
      }
      if (n > 0) routed[l] = true;
      if (n > topK) topK = n;
    }
  }
  return topK;
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

function describe(value: PyValue | undefined): string {
  if (value === undefined) return "nothing";
  if (value === null) return "None";
  if (Array.isArray(value)) return "a list";
  if (value instanceof Map) return "a dict";
  if (isTensorRef(value)) return `a ${value.dtype} tensor`;
  return JSON.stringify(typeof value === "bigint" ? String(value) : value) ?? String(value);
}
