/**
 * One SGLang per_token recording (one rank's `.pt` file) opened by the
 * importer: its pickle read and checked, each pass's facts (ids, positions,
 * segments) kept, and where each pass's `topk_ids_of_layer` tensor lies, so
 * that the threads making shards (sglang_shard.ts) read only the routing
 * they need, from disk, into reused buffers. A zip whose entries are
 * compressed is read whole instead (`whole`), and its shards are made on
 * the importer's thread.
 */
import type { Scratch } from "../../common/scratch.ts";
import { DataError, messageOf } from "../../common/errors.ts";
import { readWhole } from "../../common/fs.ts";
// From manifest.ts, not mod.ts: a worker running this lane then loads no Arrow or Parquet code.
import { NO_EXPERT } from "../manifest.ts";
import type { PyValue, TensorRef } from "./pickle.ts";
import type { PassMode } from "./sequences.ts";
import type { RoutingFile } from "./sglang_shard.ts";
import {
  type DirectoryEntry,
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
  /** Its index among its file's passes (`RankFile.passes`, `RoutingFile.passes`). */
  order: number;
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

/** A file as the importer opened it. */
export interface RankFile {
  /** Layers of its physical-to-logical map. */
  layers: number;
  /** P: physical experts per layer. */
  physical: number;
  /** [L, P] logical id of each physical expert. */
  physicalToLogical: Int32Array;
  passes: PassInfo[];
  /** Passes skipped, by mode name. */
  skipped: Record<string, number>;
  /** Where each pass's routing lies, for the shard makers. */
  routing: RoutingFile;
  /** The file held whole (a compressed zip), or null when its entries are read from disk. */
  whole: TorchFile | null;
}

/**
 * Opens and checks file `path` (index `file` of the import): its pickle and
 * every pass's facts. With `whole` false a file that must be read whole (a
 * compressed zip, which only the importer's thread can hold) gives null.
 */
export async function openRank(
  path: string,
  file: number,
  whole = true,
  scratch?: Scratch,
): Promise<RankFile | null> {
  // Entry by entry from disk where the zip allows (most of the file is then
  // never held; its pickle read into `scratch`); else whole, as openTorchFile reads anything.
  const archive = openTorchArchive(path, scratch);
  let torch: TorchFile;
  if (archive) torch = archive;
  else if (!whole) return null;
  else {
    let bytes: Uint8Array;
    try {
      bytes = await readWhole(path);
    } catch (error) {
      throw new DataError(`Cannot read ${path}: ${messageOf(error)}.`);
    }
    torch = await openTorchFile(path, bytes);
  }
  try {
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
    // A copy: a view would keep a file held whole.
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
    const routing: RoutingFile = {
      path,
      physical,
      map: physicalToLogical,
      storages: archive ? storageRanges(archive) : null,
      passes: [],
    };
    for (const [r, record] of records.entries()) {
      const pass = readPass(torch, file, r, record, layers, skipped);
      if (!pass) continue;
      pass.info.order = passes.length;
      passes.push(pass.info);
      routing.passes.push({
        ref: pass.topk,
        where: pass.info.where,
        what: `records[${r}] field "topk_ids_of_layer"`,
      });
    }
    return {
      layers,
      physical,
      physicalToLogical,
      passes,
      skipped,
      routing,
      whole: archive ? null : torch,
    };
  } finally {
    // Only the zip's layout is kept: the shard makers open the file themselves.
    archive?.close();
  }
}

function storageRanges(archive: TorchArchive): RoutingFile["storages"] {
  const entries: Record<string, DirectoryEntry> = {};
  for (const [key, name] of archive.storageNames) entries[key] = archive.entries.get(name)!;
  return { entries, end: archive.end };
}

/**
 * The MoE layers and top-k a recording routes with, from the first pass
 * that routes any token (`ids(pass)` gives a pass's [L, T, K] ids): the
 * layers where some row holds ids, and the most ids a row holds. The shard
 * makers then hold every other pass to it. Null when no pass routes a token.
 */
export function routingPlan(
  passes: PassInfo[],
  ids: (pass: PassInfo) => Int32Array,
  layers: number,
  physical: (pass: PassInfo) => number,
): { routed: number[]; topK: number; from: PassInfo } | null {
  for (const pass of passes) {
    const routed = new Array<boolean>(layers).fill(false);
    const topK = scanPass(pass, ids(pass), routed, physical(pass));
    if (topK > 0) return { routed: routed.flatMap((r, l) => (r ? [l] : [])), topK, from: pass };
  }
  return null;
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
    // The pickle reader's own array: pickled int lists of two or more items.
    if (v instanceof Int32Array) return v;
    if (Array.isArray(v) && isIntList(v)) return new Int32Array(v as number[]);
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
    const counts = lens instanceof Int32Array ? Array.from(lens) : lens;
    if (
      !Array.isArray(counts) ||
      !counts.every((x) => typeof x === "number" && Number.isInteger(x) && x >= 0)
    ) {
      throw new DataError(`${where} field "extend_seq_lens" must be a list of counts or None.`);
    }
    segments = counts as number[];
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
      order: -1, // set by openRank
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

/** True when every item is an integer in the int32 range (a loop: lists of 10^5–10^6 items). */
function isIntList(values: PyValue[]): boolean {
  for (let i = 0; i < values.length; i++) {
    const x = values[i];
    if (typeof x !== "number" || (x | 0) !== x) return false;
  }
  return true;
}

function describe(value: PyValue | undefined): string {
  if (value === undefined) return "nothing";
  if (value === null) return "None";
  if (Array.isArray(value) || value instanceof Int32Array) return "a list";
  if (value instanceof Map) return "a dict";
  if (isTensorRef(value)) return `a ${value.dtype} tensor`;
  return JSON.stringify(typeof value === "bigint" ? String(value) : value) ?? String(value);
}
