/**
 * One shard of an SGLang import, made from start to end on whichever thread
 * claims it (the importer's or a worker's, sglang_lane.ts): the routing of
 * its documents' passes read from the `.pt` files, checked and mapped to
 * logical experts, its columns encoded as Parquet (parquet_columns.ts, no
 * Arrow) and written into the staging trace. The importer (sglang_pt.ts)
 * only plans the shards and records them in the manifest.
 *
 * Why whole shards per thread: the import's time went to memory first
 * touched (on the development machine ~3 ms per fresh MiB, against ~0.05 ms
 * to write it again), to the writer running alone after the lanes, and to
 * copies between them. A thread here reuses its buffers shard after shard
 * (the ids, the pieces, the pass being read), and the expert ids it gathers
 * are written to the file from where they lie.
 *
 * Every id of every recorded pass is checked here, once, as it is gathered:
 * a MoE layer's row holds k distinct logical experts then −1 padding, any
 * other layer's row is all −1.
 */
import { DataError } from "../../common/errors.ts";
import { writePartsAtomic } from "../../common/atomic_write.ts";
import { Scratch, Spare } from "../../common/scratch.ts";
import { partsFingerprint } from "../manifest.ts";
import { type ColumnPlan, encodeColumns } from "../parquet_columns.ts";
import type { TensorRef } from "./pickle.ts";
import {
  damagedEntry,
  type DirectoryEntry,
  LOCAL_HEADER,
  localDataStart,
  preadExact,
  tensorInt32,
  type TorchFile,
} from "./torch_zip.ts";

/** A recorded pass's routing: its [L, T, K] tensor and how errors name it. */
export interface PassRouting {
  ref: TensorRef;
  /** "<file> records[i] (forward_pass_id n)" */
  where: string;
  /** `records[i] field "topk_ids_of_layer"`, for faults in the tensor itself. */
  what: string;
}

/** One `.pt` file as the shard makers read it. */
export interface RoutingFile {
  path: string;
  /** P: physical experts per layer. */
  physical: number;
  /** [L, P] logical id of each physical expert. */
  map: Int32Array;
  /**
   * Each storage's zip entry, by key (the data's start is read from its
   * local header with the data), and where the zip's directory starts
   * (`end`, which every entry's data must end by); null for a file held whole.
   */
  storages: { entries: Record<string, DirectoryEntry>; end: number } | null;
  /** The file's passes, in the order the importer numbers them. */
  passes: PassRouting[];
}

/** What every shard of one import shares; sent to each worker once. */
export interface ShardPlan {
  files: RoutingFile[];
  /** L: layers of the log's layer axis. */
  layers: number;
  /** The M layers of that axis kept as MoE layers, in order. */
  keep: number[];
  k: number;
  /** Largest logical expert id + 1: ids fit a byte below 257, and are gathered as bytes. */
  experts: number;
  /** The pass the MoE layers and k were learnt from (named when another pass differs). */
  plannedFrom: string;
  domain: string;
  /** The shard's Arrow schema message, base64 (ARROW:schema). */
  arrowSchema: string;
  /** The staging trace the shards are written into. */
  dir: string;
}

/** One shard: its documents' columns (made by the importer) and where its routing is. */
export interface ShardJob {
  index: number;
  /** Path within the trace: shards/part-NNNNN.parquet */
  file: string;
  rows: number;
  /** [n, 3]: each document's number, rows and arrival step, in order (its doc, pos and arrival_step columns). */
  documents: Uint32Array;
  /** [rows] each */
  token: Uint32Array;
  phase: Uint8Array;
  /** [n, 5]: file, pass, first token in the pass, tokens, first row in the shard. */
  segments: Int32Array;
}

export interface ShardWritten {
  index: number;
  bytes: number;
  fingerprint: string;
}

/** The columns of a shard of an SGLang import, in `shardSchema` order (the importer checks). */
export const SHARD_COLUMNS = [
  "doc",
  "domain",
  "pos",
  "token",
  "piece",
  "phase",
  "experts",
  "arrival_step",
] as const;

/** Bytes read from a file at once: a shard's passes lie close together, so one read serves many. */
export const READ_WINDOW = 4 << 20;

/**
 * Reads passes' [L, T, K] ids: a file given by storage ranges is opened on
 * first use and read a window of READ_WINDOW bytes (or one tensor, if
 * larger) at a time into one reused buffer (`scratch`, which the importer's
 * thread also read the pickles into), which serves every tensor that
 * lies in it (valid until the next read; asked for in file order, a shard's
 * passes then take a few reads instead of two system calls each); a file
 * held whole (a compressed zip, only on the importer's thread) is viewed in
 * place.
 */
export class RoutingReader {
  #files: RoutingFile[];
  #whole: (TorchFile | null)[];
  #handles: (Deno.FsFile | null)[];
  #scratch: Scratch;
  /** What the buffer holds: `bytes` of file `file` from `start`. */
  #window: { file: number; start: number; bytes: Uint8Array } = {
    file: -1,
    start: 0,
    bytes: new Uint8Array(0),
  };

  constructor(files: RoutingFile[], whole: (TorchFile | null)[] = [], scratch = new Scratch()) {
    this.#files = files;
    this.#whole = whole;
    this.#handles = files.map(() => null);
    this.#scratch = scratch;
  }

  ids(file: number, pass: number): Int32Array {
    const routing = this.#files[file]!;
    const { ref, what } = routing.passes[pass]!;
    const whole = this.#whole[file];
    if (whole) return tensorInt32(whole, ref, what);
    const entry = routing.storages?.entries[ref.storageKey];
    let bytes: Uint8Array | undefined;
    if (entry) {
      const { local, length } = entry;
      // The local header lies just before the data: one read serves both.
      // The window starts 64-byte aligned in the file, as torch aligns
      // storages, so that their int32 views need no copy.
      if (!this.#holds(file, local, LOCAL_HEADER)) {
        const at = local - (local % 64);
        this.#readWindow(file, at, local - at + length + 4096);
      }
      let w = this.#window;
      const header = w.bytes.subarray(local - w.start, local - w.start + LOCAL_HEADER);
      const start = localDataStart(header, entry, routing.storages!.end);
      if (start < 0) throw damagedEntry(routing.path, entry.name);
      if (!this.#holds(file, start, length)) this.#readWindow(file, start, length);
      w = this.#window;
      // Storages start 64-byte aligned in torch's files; a view at an odd
      // offset is copied by tensorInt32.
      bytes = w.bytes.subarray(start - w.start, start - w.start + length);
    }
    const torch = {
      file: routing.path,
      root: null,
      storages: { get: (key: string) => (key === ref.storageKey ? bytes : undefined) },
    };
    return tensorInt32(torch, ref, what);
  }

  /** Whether the window holds bytes [at, at + length) of file `file`. */
  #holds(file: number, at: number, length: number): boolean {
    const w = this.#window;
    return w.file === file && at >= w.start && at + length <= w.start + w.bytes.length;
  }

  /** Reads file `file` from `at` into the window: READ_WINDOW bytes, or `least` if more. */
  #readWindow(file: number, at: number, least: number): void {
    const size = Math.max(least, READ_WINDOW);
    this.#handles[file] ??= Deno.openSync(this.#files[file]!.path);
    const into = this.#scratch.bytes(size);
    this.#window = { file, start: at, bytes: preadExact(this.#handles[file]!, at, size, into) };
  }

  close(): void {
    for (const handle of this.#handles) handle?.close();
    this.#handles = this.#files.map(() => null);
    this.#window = { file: -1, start: 0, bytes: new Uint8Array(0) };
  }
}

/**
 * What a ShardMaker reuses from shard to shard, and which the next
 * ShardMaker on the same thread takes over (a later import in one process):
 * ~10 MiB first touched for the benchmark's shards, which costs ~30–40 ms
 * (see the file's comment).
 */
class MakerBuffers {
  /** The expert ids of the shard being made, [rows, M, k] u8 or u16. */
  experts = new ArrayBuffer(0);
  /**
   * seen[e] === stamp: logical expert e is already chosen in this row.
   * Int32 stamps kept below 2^30, V8's small integers: compared with a
   * Uint32Array's elements, the gather ran ~30% slower.
   */
  seen = new Int32Array(65536);
  stamp = 0;
  pieces = new PieceDictionary();
  /** [rows] the doc, pos and arrival_step columns of the shard being made, spelled out. */
  perRow = { doc: new Uint32Array(0), pos: new Uint32Array(0), arrival: new Uint32Array(0) };
  /** [segments] #byPass's result. */
  order = new Int32Array(0);
}

/** This thread's MakerBuffers between ShardMakers. */
const spareBuffers = new Spare<MakerBuffers>();

/** Makes shards of one import, reusing its buffers from shard to shard. */
export class ShardMaker {
  readonly plan: ShardPlan;
  readonly reader: RoutingReader;
  #buffers: MakerBuffers;
  /** [L] index among the kept layers, or −1. */
  #keptAt: Int32Array;
  /** [files + 1] the index among all files' passes of each file's first. */
  #firstPass: Int32Array;
  /** [passes + 1] #byPass's counts. */
  #passStarts: Int32Array;

  constructor(plan: ShardPlan, whole: (TorchFile | null)[] = [], scratch?: Scratch) {
    this.plan = plan;
    this.#buffers = spareBuffers.take() ?? new MakerBuffers();
    this.reader = new RoutingReader(plan.files, whole, scratch);
    this.#keptAt = new Int32Array(plan.layers).fill(-1);
    this.#firstPass = new Int32Array(plan.files.length + 1);
    plan.files.forEach((f, i) => this.#firstPass[i + 1] = this.#firstPass[i]! + f.passes.length);
    this.#passStarts = new Int32Array(this.#firstPass[plan.files.length]! + 1);
    plan.keep.forEach((l, m) => this.#keptAt[l] = m);
  }

  async make(job: ShardJob): Promise<ShardWritten> {
    const { plan } = this;
    const stride = plan.keep.length * plan.k;
    const size = job.rows * stride;
    const b = this.#buffers;
    const wide = plan.experts > 256;
    if (b.experts.byteLength < size * (wide ? 2 : 1)) {
      b.experts = new ArrayBuffer(size * (wide ? 2 : 1));
    }
    const experts = wide ? new Uint16Array(b.experts, 0, size) : new Uint8Array(b.experts, 0, size);
    this.#gather(job, experts, stride);
    const { doc, pos, arrival } = this.#spellDocuments(job);
    const columns = shardColumns(
      { rows: job.rows, doc, pos, token: job.token, phase: job.phase, arrival },
      experts,
      stride,
      b.pieces.of(job.token),
      plan.domain,
    );
    const parts = encodeColumns(columns, job.rows, plan.arrowSchema);
    writePartsAtomic(`${plan.dir}/${job.file}`, parts);
    return {
      index: job.index,
      bytes: parts.reduce((n, p) => n + p.length, 0),
      fingerprint: await partsFingerprint(parts),
    };
  }

  close(): void {
    this.reader.close();
    spareBuffers.keep(this.#buffers, this.#buffers.experts.byteLength);
  }

  /** The job's doc, pos and arrival_step columns, in buffers reused from shard to shard. */
  #spellDocuments(job: ShardJob): { doc: Uint32Array; pos: Uint32Array; arrival: Uint32Array } {
    const b = this.#buffers;
    if (b.perRow.doc.length < job.rows) {
      b.perRow = {
        doc: new Uint32Array(job.rows),
        pos: new Uint32Array(job.rows),
        arrival: new Uint32Array(job.rows),
      };
    }
    const doc = b.perRow.doc.subarray(0, job.rows);
    const pos = b.perRow.pos.subarray(0, job.rows);
    const arrival = b.perRow.arrival.subarray(0, job.rows);
    const d = job.documents;
    for (let i = 0, row = 0; i < d.length; i += 3) {
      const rows = d[i + 1]!;
      doc.fill(d[i]!, row, row + rows);
      arrival.fill(d[i + 2]!, row, row + rows);
      for (let p = 0; p < rows; p++) pos[row + p] = p;
      row += rows;
    }
    return { doc, pos, arrival };
  }

  /**
   * The indices of segments `s` ([n, 5], see ShardJob) in file then pass
   * order, those of one pass in their own order: a counting sort, by the
   * pass's index among all files' passes (a comparison sort of a shard's
   * thousands of segments took a few ms).
   */
  #byPass(s: Int32Array): Int32Array {
    const n = s.length / 5;
    const first = this.#firstPass;
    const starts = this.#passStarts.fill(0);
    for (let i = 0; i < n; i++) starts[first[s[i * 5]!]! + s[i * 5 + 1]! + 1]!++;
    for (let key = 1; key < starts.length; key++) starts[key]! += starts[key - 1]!;
    const b = this.#buffers;
    if (b.order.length < n) b.order = new Int32Array(n);
    const order = b.order.subarray(0, n);
    for (let i = 0; i < n; i++) order[starts[first[s[i * 5]!]! + s[i * 5 + 1]!]!++] = i;
    return order;
  }

  /** Fills `experts` ([rows, M, k]) from the job's segments, a pass read once for all its segments. */
  #gather(job: ShardJob, experts: Uint8Array | Uint16Array, stride: number): void {
    const { plan } = this;
    const { k, layers } = plan;
    const s = job.segments;
    const b = this.#buffers;
    const order = this.#byPass(s);
    let ids: Int32Array = new Int32Array(0);
    let current = -1;
    for (const i of order) {
      const file = s[i * 5]!;
      const pass = s[i * 5 + 1]!;
      const start = s[i * 5 + 2]!;
      const length = s[i * 5 + 3]!;
      const row = s[i * 5 + 4]!;
      const key = file * 2 ** 26 + pass;
      if (key !== current) {
        ids = this.reader.ids(file, pass);
        current = key;
      }
      const routing = plan.files[file]!;
      const { ref, where } = routing.passes[pass]!;
      const [, T, K] = ref.shape as [number, number, number];
      const P = routing.physical;
      for (let l = 0; l < layers; l++) {
        const source = (l * T + start) * K;
        const m = this.#keptAt[l]!;
        let bad: number;
        if (m < 0) bad = firstNotPadding(ids, source, K, length);
        else {
          if (b.stamp + length >= 0x3fffffff) {
            b.seen.fill(0);
            b.stamp = 0;
          }
          bad = gatherLayer(
            ids,
            source,
            K,
            routing.map,
            l * P,
            P,
            experts,
            row * stride + m * k,
            stride,
            k,
            length,
            b.seen,
            b.stamp,
          );
          b.stamp += length;
        }
        if (bad >= 0) {
          const faulty = ids.subarray(source + bad * K, source + (bad + 1) * K);
          throw new DataError(fault(faulty, { where, l, t: start + bad, m, k, P, routing, plan }));
        }
      }
    }
  }
}

/** A shard's columns in `SHARD_COLUMNS` order: [rows] each, `experts` [rows, M, k] (`stride` = M × k). */
function shardColumns(
  rows: {
    rows: number;
    doc: Uint32Array;
    pos: Uint32Array;
    token: Uint32Array;
    phase: Uint8Array;
    arrival: Uint32Array;
  },
  experts: Uint8Array | Uint16Array,
  stride: number,
  pieces: ReturnType<PieceDictionary["of"]>,
  domainName: string,
): ColumnPlan[] {
  const domain = new TextEncoder().encode(domainName);
  const u32 = (name: string, values: Uint32Array): ColumnPlan => ({
    name,
    int: { bits: 32, signed: false },
    column: { kind: "int32", values },
  });
  const columns: Record<(typeof SHARD_COLUMNS)[number], ColumnPlan> = {
    doc: u32("doc", rows.doc),
    domain: {
      name: "domain",
      column: {
        kind: "strings",
        codes: new Uint32Array(rows.rows),
        offsets: Int32Array.of(0, domain.length),
        chars: domain,
        count: 1,
      },
    },
    pos: u32("pos", rows.pos),
    token: u32("token", rows.token),
    piece: { name: "piece", column: { kind: "strings", ...pieces } },
    phase: {
      name: "phase",
      int: { bits: 8, signed: false },
      column: { kind: "small-int", values: rows.phase },
    },
    experts: {
      name: "experts",
      list: { item: "item", width: stride },
      int: { bits: 16, signed: false },
      column: { kind: "small-int", values: experts },
    },
    arrival_step: u32("arrival_step", rows.arrival),
  };
  return SHARD_COLUMNS.map((c) => columns[c]);
}

/**
 * Readies a worker for making shards while the importer's thread is still
 * reading the pickles (the worker is otherwise idle then): its read window
 * touched once, and the gather, piece and encoding code run on a small made-up
 * shard so that the JIT has compiled them before the first real one. A
 * worker's first shard took ~3× a later one on the development machine.
 */
export function rehearse(scratch: Scratch): void {
  scratch.bytes(READ_WINDOW).fill(0);
  const rows = 2048;
  const M = 4;
  const k = 8;
  const stride = M * k;
  const topk = new Int32Array(rows * k);
  for (let i = 0; i < topk.length; i++) topk[i] = i % k;
  const map = Int32Array.from({ length: 16 }, (_, i) => i);
  const experts = new Uint8Array(rows * stride);
  const seen = new Int32Array(65536);
  for (let round = 0, stamp = 0; round < 8; round++) {
    for (let m = 0; m < M; m++, stamp += rows) {
      gatherLayer(topk, 0, k, map, 0, 16, experts, m * k, stride, k, rows, seen, stamp);
    }
  }
  const tokens = Uint32Array.from({ length: rows }, (_, i) => i % 100);
  const zeros = new Uint32Array(rows);
  const columns = shardColumns(
    { rows, doc: zeros, pos: zeros, token: tokens, phase: new Uint8Array(rows), arrival: zeros },
    experts,
    stride,
    new PieceDictionary().of(tokens),
    "rehearsal",
  );
  encodeColumns(columns, rows, "");
}

/**
 * Copies `rows` rows of one MoE layer: physical ids from `topk` (rows K apart
 * from `source`) through this layer's map (`map` from `logical`, P entries)
 * into `experts` (rows `stride` apart from `target`, k each). Row i uses
 * stamp + 1 + i in `seen` to catch two choices of one logical expert.
 * Returns −1, or the first row that is not k distinct valid ids then −1
 * padding. A small leaf of typed arrays and numbers, which the JIT compiles
 * to a tight loop.
 */
function gatherLayer(
  topk: Int32Array,
  source: number,
  K: number,
  map: Int32Array,
  logical: number,
  P: number,
  experts: Uint8Array | Uint16Array,
  target: number,
  stride: number,
  k: number,
  rows: number,
  seen: Int32Array,
  stamp: number,
): number {
  for (let i = 0; i < rows; i++, source += K, target += stride) {
    stamp++;
    for (let j = 0; j < k; j++) {
      const physical = topk[source + j]!;
      // −1 and ids past the map both fail the unsigned compare.
      if (physical >>> 0 >= P) return i;
      const e = map[logical + physical]!;
      if (seen[e] === stamp) return i;
      seen[e] = stamp;
      experts[target + j] = e;
    }
    for (let j = k; j < K; j++) if (topk[source + j] !== -1) return i;
  }
  return -1;
}

/** The first of `rows` rows (K ids each, from `source`) of a layer without routing that is not all −1, or −1. */
function firstNotPadding(ids: Int32Array, source: number, K: number, rows: number): number {
  const end = source + rows * K;
  for (let i = source; i < end; i++) {
    if (ids[i] !== -1) return Math.floor((i - source) / K);
  }
  return -1;
}

/** The one sentence for a row `gatherLayer` or `firstNotPadding` stopped at. */
function fault(
  row: Int32Array,
  at: {
    where: string;
    l: number;
    t: number;
    m: number;
    k: number;
    P: number;
    routing: RoutingFile;
    plan: ShardPlan;
  },
): string {
  const { where, l, t, m, k, P } = at;
  const field = `${where} field "topk_ids_of_layer" layer ${l} token ${t}`;
  let n = 0;
  while (n < row.length && row[n]! >= 0) n++;
  for (let j = n; j < row.length; j++) {
    if (row[j] !== -1) {
      return `${field} has ${row[j]} after −1 padding; ids must come first, −1 after.`;
    }
  }
  for (let j = 0; j < n; j++) {
    if (row[j]! >= P) {
      return `${field} names physical expert ${row[j]}, but the physical-to-logical map has ${P}.`;
    }
  }
  if (m < 0) {
    return `${field} routes to ${n} experts, but ${at.plan.plannedFrom} routes no token in layer ${l}; a layer is routed in every pass or in none.`;
  }
  if (n !== k) return `${field} routes to ${n} experts, expected ${k}.`;
  const logical = Array.from(row.subarray(0, k), (p) => at.routing.map[l * P + p]!);
  const twice = logical.find((e, i) => logical.indexOf(e) !== i);
  return `${where} layer ${l} token ${t} maps two chosen physical experts to logical expert ${twice}; the physical-to-logical map changed while recording.`;
}

/**
 * A shard's `piece` column: each token's id as text (SGLang records no
 * text), as dictionary codes in order of first appearance, the order the
 * trace writer's dictionary gives.
 */
class PieceDictionary {
  /** code + 1 of each token id below 2^22 in the shard being made, else 0. */
  #codeOf: Int32Array = new Int32Array(0);
  #large = new Map<number, number>();
  #codes = new Uint32Array(0);
  /** The shard's distinct token ids, in order of first appearance. */
  #distinct = new Uint32Array(0);

  of(
    tokens: Uint32Array,
  ): { codes: Uint32Array; offsets: Int32Array; chars: Uint8Array; count: number } {
    if (this.#codes.length < tokens.length) this.#codes = new Uint32Array(tokens.length);
    const codes = this.#codes.subarray(0, tokens.length);
    if (this.#distinct.length < tokens.length) this.#distinct = new Uint32Array(tokens.length);
    const distinct = this.#distinct;
    let count = 0;
    let codeOf: Int32Array = this.#codeOf;
    for (let i = 0; i < tokens.length; i++) {
      const id = tokens[i]!;
      let code: number;
      if (id < 1 << 22) {
        if (id >= codeOf.length) codeOf = this.#grow(id);
        code = codeOf[id]! - 1;
        if (code < 0) {
          distinct[code = count++] = id;
          codeOf[id] = code + 1;
        }
      } else {
        code = this.#large.get(id) ?? -1;
        if (code < 0) {
          distinct[code = count++] = id;
          this.#large.set(id, code);
        }
      }
      codes[i] = code;
    }
    // Decimal digits, ASCII: the UTF-8 of String(id), written without making the string.
    const offsets = new Int32Array(count + 1);
    const chars = new Uint8Array(count * 10);
    let at = 0;
    for (let d = 0; d < count; d++) {
      let id = distinct[d]!;
      if (id < 1 << 22) this.#codeOf[id] = 0;
      let width = 1;
      for (let bound = 10; id >= bound && width < 10; bound *= 10) width++;
      at += width;
      for (let c = at - 1; c >= at - width; c--) {
        chars[c] = 0x30 + (id % 10);
        id = Math.floor(id / 10);
      }
      offsets[d + 1] = at;
    }
    this.#large.clear();
    return { codes, offsets, chars: chars.subarray(0, at), count };
  }

  #grow(id: number): Int32Array {
    const grown = new Int32Array(Math.min(1 << 22, Math.max(id + 1, this.#codeOf.length * 2)));
    grown.set(this.#codeOf);
    return this.#codeOf = grown;
  }
}

/**
 * Claims jobs from `claims` (shared by every thread working on this import's
 * files or shards: [0] the next job, [1] 1 once any thread failed) and runs
 * `make` on each until none is left or one fails; a failure marks [1] and is
 * thrown.
 */
export async function claimJobs<T>(
  jobs: T[],
  claims: Int32Array,
  make: (job: T) => Promise<void>,
): Promise<void> {
  for (;;) {
    if (Atomics.load(claims, 1) !== 0) return;
    const index = Atomics.add(claims, 0, 1);
    if (index >= jobs.length) return;
    try {
      await make(jobs[index]!);
    } catch (error) {
      Atomics.store(claims, 1, 1);
      throw error;
    }
  }
}
