/**
 * Synthetic SGLang per_token recordings (the benchmark's and the tests' of
 * large imports): 17 layers (layer 0 dense, as DeepSeek's
 * first_k_dense_replace), top-8 of 64 logical experts over 72 physical ones
 * (64..71 replicas of 0..7), written by the pickle opcodes `torch.save`
 * uses (protocol 2, `_rebuild_tensor_v2` over `torch.IntStorage`) into a zip
 * of stored, 64-byte-aligned entries, as torch writes them.
 */
import { zipSync } from "fflate";
import { storedEntries } from "./torch_zip.ts";
import { Rng } from "../../common/random.ts";

const LAYERS = 17;
export const MOE_LAYERS = 16;
const WIDTH = 8; // SGLang's recorder always keeps 8 columns
export const TOP_K = 8;
const LOGICAL = 64;
const PHYSICAL = 72;

/** The size of a synthetic recording; the benchmark's by default. */
export interface RecordingShape {
  sequencesPerRank: number;
  prompt: number;
  generated: number;
  /** Sequences decoding together. */
  batch: number;
}

export const BENCH_SHAPE: RecordingShape = {
  sequencesPerRank: 320,
  prompt: 900,
  generated: 100,
  batch: 32,
};

/** A recorded sequence as the import must give it back: token ids and [T, 16, 8] logical experts. */
export interface RecordedSequence {
  tokens: number[];
  experts: Uint8Array;
}

/**
 * One rank's recording: waves of `batch` sequences, each prefilled in a pass
 * of its own, then decoded together one token per pass. With `truth`, also
 * each sequence's tokens and logical experts, as the trace must hold them.
 */
export function sglangRecording(
  rank: number,
  shape: RecordingShape = BENCH_SHAPE,
  truth = false,
): { bytes: Uint8Array; tokens: number; sequences: RecordedSequence[] } {
  const { prompt: PROMPT, generated: GENERATED, batch: BATCH } = shape;
  const rng = new Rng(17 + rank);
  const sequences: RecordedSequence[] = [];
  // Physical experts 64..71 replicate logical 0..7; the rest are a fixed permutation.
  const map = new Int32Array(LAYERS * PHYSICAL);
  for (let l = 0; l < LAYERS; l++) {
    for (let p = 0; p < PHYSICAL; p++) {
      map[l * PHYSICAL + p] = p < LOGICAL ? (p * 5 + l) % LOGICAL : p - LOGICAL;
    }
  }
  const passes: Pass[] = [];
  let tokens = 0;
  const stride = MOE_LAYERS * TOP_K;
  for (let w = 0; w < shape.sequencesPerRank / BATCH; w++) {
    const wave: RecordedSequence[] = [];
    for (let s = 0; s < BATCH; s++) {
      const ids = Array.from({ length: PROMPT + GENERATED }, () => rng.int(50000));
      const sequence = {
        tokens: ids,
        experts: new Uint8Array(truth ? ids.length * stride : 0),
      };
      wave.push(sequence);
      const segment = { ids: ids.slice(0, PROMPT), start: 0, sequence };
      passes.push(pass(rng, [segment], 1, truth));
    }
    for (let step = 0; step < GENERATED; step++) {
      const segments = wave.map((sequence) => ({
        ids: [sequence.tokens[PROMPT + step]!],
        start: PROMPT + step,
        sequence,
      }));
      passes.push(pass(rng, segments, 2, truth));
    }
    tokens += BATCH * (PROMPT + GENERATED);
    if (truth) sequences.push(...wave);
  }
  return { bytes: torchSave(rank, passes, map), tokens, sequences };
}

interface Pass {
  mode: number;
  ids: number[];
  positions: number[];
  lens: number[] | null;
  /** [LAYERS, T, WIDTH] physical ids, −1 for the dense layer. */
  topk: Int32Array;
}

/** A pass over `segments`; with `truth`, each token's logical experts go into its sequence. */
function pass(
  rng: Rng,
  segments: { ids: number[]; start: number; sequence: RecordedSequence }[],
  mode: number,
  truth: boolean,
): Pass {
  const ids = segments.flatMap((s) => s.ids);
  const positions = segments.flatMap((s) => s.ids.map((_, i) => s.start + i));
  const T = ids.length;
  const topk = new Int32Array(LAYERS * T * WIDTH).fill(-1);
  const chosen = new Uint8Array(PHYSICAL);
  // [T] each token's sequence and position in it
  const owner = segments.flatMap((s) => s.ids.map(() => s.sequence));
  const stride = MOE_LAYERS * TOP_K;
  for (let l = 1; l < LAYERS; l++) {
    for (let t = 0; t < T; t++) {
      // 8 distinct logical experts; replicas 64..71 stand in for 0..7 half the time.
      chosen.fill(0);
      for (let j = 0; j < TOP_K; j++) {
        let e: number;
        do e = rng.int(LOGICAL); while (chosen[e]);
        chosen[e] = 1;
        // map[p] = (5p + l) mod 64 for p < 64, whose inverse is 13(e − l) mod 64.
        const physical = e < 8 && rng.int(2) === 1
          ? LOGICAL + e
          : ((((e - l) % LOGICAL) + LOGICAL) * 13) % LOGICAL;
        topk[(l * T + t) * WIDTH + j] = physical;
        if (truth) owner[t]!.experts[positions[t]! * stride + (l - 1) * TOP_K + j] = e;
      }
    }
  }
  return {
    mode,
    ids,
    positions,
    lens: mode === 2 ? null : segments.map((s) => s.ids.length),
    topk,
  };
}

/** The bytes `torch.save` would write for {records: [...], last_physical_to_logical_map}. */
function torchSave(rank: number, passes: Pass[], map: Int32Array): Uint8Array {
  const p = new PickleWriter();
  const storages: Record<string, Uint8Array> = {};
  const tensor = (data: Int32Array, shape: number[], storage: "IntStorage" | "LongStorage") => {
    const key = String(Object.keys(storages).length);
    storages[key] = storage === "IntStorage"
      ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
      : new Uint8Array(BigInt64Array.from(data, (v) => BigInt(v)).buffer);
    const stride = shape.map((_, d) => shape.slice(d + 1).reduce((a, b) => a * b, 1));
    p.global("torch._utils", "_rebuild_tensor_v2").mark();
    p.mark().str("storage").global("torch", storage).str(key).str("cpu").int(data.length).tuple();
    p.op(0x51); // BINPERSID
    p.int(0).mark().ints(shape).tuple().mark().ints(stride).tuple().op(0x89); // NEWFALSE
    p.global("collections", "OrderedDict").op(0x29).op(0x52); // EMPTY_TUPLE REDUCE
    p.tuple().op(0x52);
  };
  p.op(0x80, 2).op(0x7d).mark(); // PROTO 2, EMPTY_DICT, MARK
  p.str("records").op(0x5d); // EMPTY_LIST
  for (const [i, pass] of passes.entries()) {
    p.op(0x7d).mark(); // a record dict
    p.str("forward_pass_id").int(i).str("rank").int(rank).str("gatherer_key").str("primary");
    p.str("input_ids").list(pass.ids).str("positions").list(pass.positions);
    p.str("extend_seq_lens");
    if (pass.lens) p.list(pass.lens);
    else p.op(0x4e); // NONE
    p.str("forward_mode").int(pass.mode);
    p.str("topk_ids_of_layer");
    tensor(pass.topk, [LAYERS, pass.ids.length, WIDTH], "IntStorage");
    p.str("misc_objects").op(0x5d);
    p.str("global_physical_count");
    tensor(new Int32Array(LAYERS * PHYSICAL), [LAYERS, PHYSICAL], "IntStorage");
    p.op(0x75).op(0x61); // SETITEMS, APPEND
  }
  p.str("last_physical_to_logical_map");
  tensor(map, [LAYERS, PHYSICAL], "LongStorage");
  p.op(0x75).op(0x2e); // SETITEMS, STOP
  const entries: Record<string, Uint8Array> = {
    "archive/data.pkl": p.bytes(),
    "archive/byteorder": new TextEncoder().encode("little"),
    "archive/version": new TextEncoder().encode("3\n"),
  };
  for (const [key, data] of Object.entries(storages)) entries[`archive/data/${key}`] = data;
  // torch.save pads each local header with an "FB" extra field so that the
  // entry's data starts at a multiple of 64 bytes; the same here, so that the
  // importer reads int32 storages in place as it does torch's files.
  const zippable: Record<string, [Uint8Array, { extra: Record<number, Uint8Array> }]> = {};
  let offset = 0;
  for (const [name, data] of Object.entries(entries)) {
    const header = 30 + new TextEncoder().encode(name).length + 4;
    const pad = (64 - ((offset + header) % 64)) % 64;
    zippable[name] = [data, { extra: { 0x4246: new Uint8Array(pad) } }];
    offset += header + pad + data.length;
  }
  const bytes = zipSync(zippable, { level: 0 });
  for (const [name, data] of Object.entries(storedEntries(bytes) ?? {})) {
    if (data.byteOffset % 64 !== 0) {
      throw new Error(`sglangRecording: ${name} is not 64-byte aligned`);
    }
  }
  return bytes;
}

/** Just enough of a protocol-2 pickler for the structure above. */
class PickleWriter {
  #chunks: Uint8Array[] = [];
  #buffer = new Uint8Array(1 << 16);
  #view = new DataView(this.#buffer.buffer);
  #at = 0;

  #room(n: number): void {
    if (this.#at + n <= this.#buffer.length) return;
    this.#chunks.push(this.#buffer.slice(0, this.#at));
    this.#buffer = new Uint8Array(Math.max(1 << 16, n));
    this.#view = new DataView(this.#buffer.buffer);
    this.#at = 0;
  }

  op(...codes: number[]): this {
    this.#room(codes.length);
    for (const c of codes) this.#buffer[this.#at++] = c;
    return this;
  }

  mark(): this {
    return this.op(0x28);
  }

  tuple(): this {
    return this.op(0x74);
  }

  int(v: number): this {
    this.#room(5);
    this.#buffer[this.#at++] = 0x4a; // BININT
    this.#view.setInt32(this.#at, v, true);
    this.#at += 4;
    return this;
  }

  ints(values: number[]): this {
    for (const v of values) this.int(v);
    return this;
  }

  /** EMPTY_LIST then APPENDS in batches of 1000, as pickle does. */
  list(values: number[]): this {
    this.op(0x5d);
    for (let i = 0; i < values.length; i += 1000) {
      this.mark().ints(values.slice(i, i + 1000)).op(0x65);
    }
    return this;
  }

  str(s: string): this {
    const bytes = new TextEncoder().encode(s);
    this.#room(5 + bytes.length);
    this.#buffer[this.#at++] = 0x58; // BINUNICODE
    this.#view.setUint32(this.#at, bytes.length, true);
    this.#at += 4;
    this.#buffer.set(bytes, this.#at);
    this.#at += bytes.length;
    return this;
  }

  global(module: string, name: string): this {
    const bytes = new TextEncoder().encode(`c${module}\n${name}\n`);
    this.#room(bytes.length);
    this.#buffer.set(bytes, this.#at);
    this.#at += bytes.length;
    return this;
  }

  bytes(): Uint8Array {
    this.#chunks.push(this.#buffer.slice(0, this.#at));
    const total = this.#chunks.reduce((n, c) => n + c.length, 0);
    const out = new Uint8Array(total);
    let at = 0;
    for (const c of this.#chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}
