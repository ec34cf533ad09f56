/**
 * Reading a `torch.save` file (the zip container of PyTorch ≥ 1.6) without
 * PyTorch: the zip is opened in place (`storedEntries`) or by fflate, the
 * restricted reader in pickle.ts reads `<archive>/data.pkl`, and tensors are
 * read from `<archive>/data/<key>` as typed arrays, honouring offset and
 * strides.
 */
import { unzipSync } from "fflate";
import type { Scratch } from "../../common/scratch.ts";
import { DataError, messageOf } from "../../common/errors.ts";
import { DTYPE_BYTES, isTensorRef, type PyValue, readPickle, type TensorRef } from "./pickle.ts";

/** An opened torch.save file: its pickled object and the storages tensors point into. */
export interface TorchFile {
  file: string;
  root: PyValue;
  /** Raw bytes of each storage, by key (read on demand from disk by `openTorchArchive`). */
  storages: { get(key: string): Uint8Array | undefined };
}

/** True when `bytes` start like a zip archive (a local file header). */
export function looksLikeZip(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && bytes[0] === 0x50 && bytes[1] === 0x4b && bytes[2] === 0x03 &&
    bytes[3] === 0x04;
}

/** True when `bytes` start like a pickle (PROTO opcode), i.e. torch.save's legacy format. */
export function looksLikeLegacyTorch(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x80 && bytes[1]! >= 2 && bytes[1]! <= 5;
}

/** Opens a torch.save zip. Every failure is one sentence naming `file`. */
export function openTorchFile(file: string, bytes: Uint8Array): TorchFile {
  if (!looksLikeZip(bytes)) {
    if (looksLikeLegacyTorch(bytes)) {
      throw new DataError(
        `${file} is in torch.save's legacy (pre-1.6) format; re-save it with a current PyTorch, e.g. torch.save(torch.load(f, weights_only=True), f).`,
      );
    }
    throw new DataError(`${file} is not a torch.save file (a zip archive holding data.pkl).`);
  }
  let entries: Record<string, Uint8Array>;
  try {
    entries = storedEntries(bytes) ?? unzipSync(bytes);
  } catch (error) {
    throw new DataError(
      `${file} is not a readable zip archive (${messageOf(error)}); it is truncated or damaged.`,
    );
  }
  const storages = new Map<string, Uint8Array>();
  const root = torchRoot(
    file,
    Object.keys(entries),
    (name) => entries[name]!,
    (key, name) => storages.set(key, entries[name]!),
  );
  return { file, root, storages };
}

/**
 * Checks an archive's names (one `<archive>/data.pkl`, little-endian), reads
 * its pickle through `read`, and hands each storage entry to `storage(key,
 * name)`.
 */
function torchRoot(
  file: string,
  names: string[],
  read: (name: string) => Uint8Array,
  storage: (key: string, name: string) => void,
): PyValue {
  const pickles = names.filter((name) => /^[^/]+\/data\.pkl$/.test(name));
  if (pickles.length !== 1) {
    throw new DataError(
      `${file} holds ${pickles.length} data.pkl entries, expected one; it is not a torch.save file.`,
    );
  }
  const prefix = pickles[0]!.slice(0, -"data.pkl".length);
  if (names.includes(`${prefix}byteorder`)) {
    if (new TextDecoder().decode(read(`${prefix}byteorder`)).trim() !== "little") {
      throw new DataError(
        `${file} was saved on a big-endian machine; only little-endian torch.save files are read.`,
      );
    }
  }
  const root = readPickle(read(pickles[0]!), `${file} (data.pkl)`);
  const storagePrefix = `${prefix}data/`;
  for (const name of names) {
    if (name.startsWith(storagePrefix)) storage(name.slice(storagePrefix.length), name);
  }
  return root;
}

/**
 * A torch.save file read entry by entry from disk rather than whole: its zip
 * directory first, then each entry with one positioned read when asked for.
 * Reading a 176 MiB recording whole costs ~0.2 s, mostly the first touch of
 * fresh memory; its entries read one by one into a reused buffer (`readInto`)
 * take ~30 ms. Null when the file is not a zip of stored entries that
 * `storedLayout` vouches for: the caller then reads it whole with
 * `openTorchFile`, which reports what is wrong.
 */
export function openTorchArchive(file: string, scratch?: Scratch): TorchArchive | null {
  let handle: Deno.FsFile;
  try {
    handle = Deno.openSync(file);
  } catch {
    return null;
  }
  try {
    const size = handle.statSync().size;
    const read = (at: number, length: number) =>
      preadExact(handle, at, length, new Uint8Array(length));
    const head = read(0, Math.min(4, size));
    if (!looksLikeZip(head)) throw new Error("not a zip");
    const layout = storedLayout(size, windowed(handle, size));
    if (!layout) throw new Error("not a zip of stored entries");
    const entries = new Map(layout.map((e) => [e.name, e]));
    const storageNames = new Map<string, string>();
    // The pickle goes into `scratch` when given: nothing read from it keeps a view of its bytes.
    const root = torchRoot(file, [...entries.keys()], (name) => {
      const e = entries.get(name)!;
      return scratch
        ? preadExact(handle, e.start, e.length, scratch.bytes(e.length))
        : read(e.start, e.length);
    }, (key, name) => storageNames.set(key, name));
    return new TorchArchive(file, root, handle, entries, storageNames);
  } catch (error) {
    handle.close();
    // A fault in the pickle or names is the file's, said the same way as a whole read would.
    if (error instanceof DataError) throw error;
    return null;
  }
}

/**
 * Reads of `handle` with small ones served from a 16 KiB window read ahead
 * into one reused buffer: the local headers `storedLayout` checks (thousands
 * in a long recording) lie in file order, several to a window where entries
 * are small, instead of one seek and read each.
 */
function windowed(
  handle: Deno.FsFile,
  size: number,
): (at: number, length: number) => Uint8Array {
  const window = new Uint8Array(1 << 14);
  let start = 0;
  let bytes: Uint8Array = window.subarray(0, 0);
  return (at, length) => {
    if (length > window.length >> 4) return preadExact(handle, at, length, new Uint8Array(length));
    if (at < start || at + length > start + bytes.length) {
      start = at;
      bytes = preadExact(handle, at, Math.min(window.length, size - at), window);
    }
    return bytes.subarray(at - start, at - start + length);
  };
}

/** The open file behind `openTorchArchive`. */
export class TorchArchive implements TorchFile {
  readonly storages: { get(key: string): Uint8Array | undefined };
  #scratch = new Uint8Array(0);

  constructor(
    readonly file: string,
    readonly root: PyValue,
    readonly handle: Deno.FsFile,
    readonly entries: Map<string, { start: number; length: number }>,
    readonly storageNames: Map<string, string>,
  ) {
    // Small tensors (input ids, positions, the map): each read into its own buffer.
    this.storages = { get: (key) => this.#read(key, null) };
  }

  /**
   * The storage `key` read into a buffer reused from call to call: valid
   * until the next `readInto`. A torch-shaped file over this buffer, for
   * `tensorInt32`.
   */
  readInto(key: string): TorchFile {
    const bytes = this.#read(key, "scratch");
    return {
      file: this.file,
      root: this.root,
      storages: { get: (k) => (k === key ? bytes : this.#read(k, null)) },
    };
  }

  close(): void {
    this.handle.close();
  }

  #read(key: string, into: "scratch" | null): Uint8Array | undefined {
    const name = this.storageNames.get(key);
    const entry = name === undefined ? undefined : this.entries.get(name);
    if (!entry) return undefined;
    let buffer: Uint8Array;
    if (into === "scratch") {
      // Grown to a multiple of 64 KiB, and 8-byte aligned at 0 for int64 and int32 views.
      if (this.#scratch.length < entry.length) {
        this.#scratch = new Uint8Array(Math.ceil(entry.length / 65536) * 65536);
      }
      buffer = this.#scratch.subarray(0, entry.length);
    } else {
      buffer = new Uint8Array(entry.length);
    }
    return preadExact(this.handle, entry.start, entry.length, buffer);
  }
}

/** `length` bytes of `handle` from `at` into `into` (fewer at the end of a file that shrank). */
/** `length` bytes of `handle` from `at` into `into` (fewer when the file is shorter). */
export function preadExact(
  handle: Deno.FsFile,
  at: number,
  length: number,
  into: Uint8Array,
): Uint8Array {
  handle.seekSync(at, Deno.SeekMode.Start);
  let done = 0;
  while (done < length) {
    const n = handle.readSync(into.subarray(done, length));
    if (n === null || n === 0) break;
    done += n;
  }
  return into.subarray(0, done);
}

/**
 * The entries of a zip whose entries are all stored (torch.save never
 * compresses), as views of `bytes` rather than copies: a recording of
 * hundreds of MiB is then not copied once more, and storages stay where
 * torch aligned them (64 bytes). Null for anything else (compressed or
 * encrypted entries, ZIP64 records, non-ASCII names, a layout that does not
 * add up): fflate then reads it and reports what is wrong.
 */
export function storedEntries(bytes: Uint8Array): Record<string, Uint8Array> | null {
  const layout = storedLayout(bytes.length, (at, length) => bytes.subarray(at, at + length));
  if (!layout) return null;
  const entries: Record<string, Uint8Array> = {};
  for (const { name, start, length } of layout) {
    entries[name] = bytes.subarray(start, start + length);
  }
  return entries;
}

/**
 * Where each entry's data lies in a zip of `size` bytes whose entries are all
 * stored, reading the file through `read(at, length)` (a view of bytes in
 * memory, or a positioned read from disk): the end record, the central
 * directory, and each entry's local header. Null for anything else, as
 * `storedEntries` says.
 */
export function storedLayout(
  size: number,
  read: (at: number, length: number) => Uint8Array,
): { name: string; start: number; length: number }[] | null {
  const viewOf = (bytes: Uint8Array) =>
    new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // The end-of-central-directory record: 22 bytes and a comment of up to 65535.
  const tailLength = Math.min(size, 22 + 0xffff);
  const tail = read(size - tailLength, tailLength);
  if (tail.length !== tailLength || tailLength < 22) return null;
  const t = viewOf(tail);
  let end = -1;
  for (let at = tail.length - 22; at >= 0; at--) {
    if (
      t.getUint32(at, true) === 0x06054b50 && at + 22 + t.getUint16(at + 20, true) === tail.length
    ) {
      end = at;
      break;
    }
  }
  if (end < 0 || t.getUint16(end + 4, true) !== 0 || t.getUint16(end + 6, true) !== 0) return null;
  const count = t.getUint16(end + 10, true);
  const directorySize = t.getUint32(end + 12, true);
  const start = t.getUint32(end + 16, true);
  if (count === 0xffff || directorySize === 0xffffffff || start === 0xffffffff) return null; // ZIP64
  const endAt = size - tailLength + end;
  if (t.getUint16(end + 8, true) !== count || start + directorySize > endAt) return null;
  const directory = read(start, directorySize);
  if (directory.length !== directorySize) return null;
  const d = viewOf(directory);
  const entries: { name: string; start: number; length: number }[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    if (at + 46 > directorySize || d.getUint32(at, true) !== 0x02014b50) return null;
    const flags = d.getUint16(at + 8, true);
    const method = d.getUint16(at + 10, true);
    const compressed = d.getUint32(at + 20, true);
    const length = d.getUint32(at + 24, true);
    const nameLength = d.getUint16(at + 28, true);
    const next = at + 46 + nameLength + d.getUint16(at + 30, true) + d.getUint16(at + 32, true);
    const local = d.getUint32(at + 42, true);
    if (
      (flags & 1) !== 0 || method !== 0 || compressed !== length || length === 0xffffffff ||
      next > directorySize
    ) {
      return null;
    }
    const name = directory.subarray(at + 46, at + 46 + nameLength);
    if (name.some((b) => b >= 0x80)) return null;
    if (local + 30 > start) return null;
    const header = read(local, 30);
    if (header.length !== 30) return null;
    const h = viewOf(header);
    if (h.getUint32(0, true) !== 0x04034b50) return null;
    const data = local + 30 + h.getUint16(26, true) + h.getUint16(28, true);
    if (data + length > start) return null;
    entries.push({ name: String.fromCharCode(...name), start: data, length });
    at = next;
  }
  return entries;
}

/**
 * The values of an integer tensor as a contiguous Int32Array in row-major
 * order (int64 values must fit in int32); a view into the storage when the
 * tensor is a contiguous int32 one, so callers must not write to it. `what`
 * names it in errors.
 */
export function tensorInt32(torch: TorchFile, tensor: TensorRef, what: string): Int32Array {
  const where = `${torch.file} ${what}`;
  if (
    tensor.dtype !== "int32" && tensor.dtype !== "int64" && tensor.dtype !== "int16" &&
    tensor.dtype !== "uint8" && tensor.dtype !== "int8"
  ) {
    throw new DataError(`${where} is a ${tensor.dtype} tensor; expected integers.`);
  }
  const bytes = torch.storages.get(tensor.storageKey);
  if (!bytes) {
    throw new DataError(
      `${where} points to storage ${tensor.storageKey}, which the archive lacks; the file is damaged.`,
    );
  }
  const size = DTYPE_BYTES[tensor.dtype];
  const numel = Math.floor(bytes.length / size);
  if (numel < tensor.storageNumel) {
    throw new DataError(
      `${where} needs ${tensor.storageNumel} elements but its storage holds ${numel}; the file is truncated or damaged.`,
    );
  }
  const count = tensor.shape.reduce((a, b) => a * b, 1);
  if (count === 0) return new Int32Array(0);
  let last = tensor.offset;
  for (let d = 0; d < tensor.shape.length; d++) last += (tensor.shape[d]! - 1) * tensor.stride[d]!;
  if (last >= numel) {
    throw new DataError(
      `${where} (shape [${
        tensor.shape.join(", ")
      }]) reaches element ${last} of a ${numel}-element storage; the file is damaged.`,
    );
  }
  const source = elements(bytes, tensor.dtype, where);
  if (isContiguous(tensor) && source instanceof Int32Array) {
    // A view, not a copy: the storage bytes are the archive entry's own.
    return source.subarray(tensor.offset, tensor.offset + count);
  }
  const out = new Int32Array(count);
  // General strided gather, row-major over the shape.
  const rank = tensor.shape.length;
  const index = new Array<number>(rank).fill(0);
  let at = tensor.offset;
  for (let i = 0; i < count; i++) {
    const v = Number(source[at]!);
    if (v > 0x7fffffff || v < -0x80000000) {
      throw new DataError(`${where} holds ${v} at element ${i}, outside the 32-bit range.`);
    }
    out[i] = v;
    for (let d = rank - 1; d >= 0; d--) {
      index[d]!++;
      at += tensor.stride[d]!;
      if (index[d]! < tensor.shape[d]!) break;
      at -= tensor.shape[d]! * tensor.stride[d]!;
      index[d] = 0;
    }
  }
  return out;
}

function elements(
  bytes: Uint8Array,
  dtype: TensorRef["dtype"],
  where: string,
): Int32Array | BigInt64Array | Int16Array | Uint8Array | Int8Array {
  const aligned = (size: number) => bytes.byteOffset % size === 0 ? bytes : bytes.slice();
  switch (dtype) {
    case "int32": {
      const b = aligned(4);
      return new Int32Array(b.buffer, b.byteOffset, b.length >> 2);
    }
    case "int64": {
      const b = aligned(8);
      return new BigInt64Array(b.buffer, b.byteOffset, b.length >> 3);
    }
    case "int16": {
      const b = aligned(2);
      return new Int16Array(b.buffer, b.byteOffset, b.length >> 1);
    }
    case "uint8":
      return bytes;
    case "int8":
      return new Int8Array(bytes.buffer, bytes.byteOffset, bytes.length);
    default:
      throw new DataError(`${where} is a ${dtype} tensor; expected integers.`);
  }
}

function isContiguous(tensor: TensorRef): boolean {
  let expected = 1;
  for (let d = tensor.shape.length - 1; d >= 0; d--) {
    if (tensor.shape[d]! !== 1 && tensor.stride[d]! !== expected) return false;
    expected *= tensor.shape[d]!;
  }
  return true;
}

/** The field `key` of a dict, or undefined. */
export function field(dict: PyValue, key: string): PyValue | undefined {
  return dict instanceof Map ? dict.get(key) : undefined;
}

export { isTensorRef };
