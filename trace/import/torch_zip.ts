/**
 * Reading a `torch.save` file (the zip container of PyTorch ≥ 1.6) without
 * PyTorch: the zip is opened in place (`storedEntries`) or by fflate, the
 * restricted reader in pickle.ts reads `<archive>/data.pkl`, and tensors are
 * read from `<archive>/data/<key>` as typed arrays, honouring offset and
 * strides.
 */
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

/**
 * Opens a torch.save zip. Every failure is one sentence naming `file`.
 * fflate is loaded only for a zip whose entries are compressed: the import's
 * workers, which never read one, then start without it (~15–45 ms a worker on
 * the development machine).
 */
export async function openTorchFile(file: string, bytes: Uint8Array): Promise<TorchFile> {
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
    entries = storedEntries(bytes) ?? (await import("fflate")).unzipSync(bytes);
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
 * fresh memory. Each entry's local header is read with its data, not
 * up front: a recording has thousands of entries, and a read of each header
 * took 20–40 ms per file on the development machine before anything else
 * could start. Null when the file is not a zip of stored entries that
 * `storedDirectory` vouches for, or its pickle's header is not sound: the
 * caller then reads it whole with `openTorchFile`, which reports what is
 * wrong.
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
    const directory = storedDirectory(size, read);
    if (!directory) throw new Error("not a zip of stored entries");
    const entries = new Map(directory.entries.map((e) => [e.name, e]));
    const archive = new TorchArchive(file, handle, entries, directory.end);
    // The pickle goes into `scratch` when given: nothing read from it keeps a view of its bytes.
    archive.root = torchRoot(file, [...entries.keys()], (name) => {
      const e = entries.get(name)!;
      const start = archive.dataStart(name, false);
      if (start < 0) throw new Error("a damaged local header");
      return scratch
        ? preadExact(handle, start, e.length, scratch.bytes(e.length))
        : read(start, e.length);
    }, (key, name) => archive.storageNames.set(key, name));
    return archive;
  } catch (error) {
    handle.close();
    // A fault in the pickle or names is the file's, said the same way as a whole read would.
    if (error instanceof DataError) throw error;
    return null;
  }
}

/** The open file behind `openTorchArchive`. */
export class TorchArchive implements TorchFile {
  root: PyValue = null;
  readonly storages: { get(key: string): Uint8Array | undefined };
  /** Storage key → entry name. */
  readonly storageNames = new Map<string, string>();

  constructor(
    readonly file: string,
    readonly handle: Deno.FsFile,
    readonly entries: Map<string, DirectoryEntry>,
    /** Where the central directory starts: every entry's data ends by it. */
    readonly end: number,
  ) {
    // Small tensors (input ids, positions, the map): each read into its own buffer.
    this.storages = { get: (key) => this.#read(key) };
  }

  /**
   * Where entry `name`'s data starts, from its local header; a damaged
   * header is a DataError naming the entry (or −1 with `strict` false).
   */
  dataStart(name: string, strict = true): number {
    const entry = this.entries.get(name)!;
    const header = preadExact(this.handle, entry.local, LOCAL_HEADER, new Uint8Array(LOCAL_HEADER));
    const start = localDataStart(header, entry, this.end);
    if (start < 0 && strict) throw damagedEntry(this.file, name);
    return start;
  }

  close(): void {
    this.handle.close();
  }

  #read(key: string): Uint8Array | undefined {
    const name = this.storageNames.get(key);
    const entry = name === undefined ? undefined : this.entries.get(name);
    if (!entry) return undefined;
    const start = this.dataStart(name!);
    return preadExact(this.handle, start, entry.length, new Uint8Array(entry.length));
  }
}

/** The one sentence for an entry whose local header is not sound. */
export function damagedEntry(file: string, name: string): DataError {
  return new DataError(
    `${file} entry ${name} has a damaged local header (or runs past the zip's directory); the file is truncated or damaged.`,
  );
}

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

/** A stored entry as the zip's central directory gives it. */
export interface DirectoryEntry {
  name: string;
  /** Offset of its local header, which its data follows. */
  local: number;
  length: number;
}

/**
 * The entries of a zip of `size` bytes whose entries are all stored, from
 * its end record and central directory, read through `read(at, length)` (a
 * view of bytes in memory, or a positioned read from disk), and `end`, where
 * the directory starts: every entry's data must end by it. Each entry's
 * local header is left to `localDataStart`. Null for anything else, as
 * `storedEntries` says.
 */
export function storedDirectory(
  size: number,
  read: (at: number, length: number) => Uint8Array,
): { entries: DirectoryEntry[]; end: number } | null {
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
  const entries: DirectoryEntry[] = [];
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
      next > directorySize || local + LOCAL_HEADER > start
    ) {
      return null;
    }
    const name = directory.subarray(at + 46, at + 46 + nameLength);
    if (name.some((b) => b >= 0x80)) return null;
    entries.push({ name: String.fromCharCode(...name), local, length });
    at = next;
  }
  return { entries, end: start };
}

/** Bytes of a local header before its name and extra field. */
export const LOCAL_HEADER = 30;

/**
 * Where `entry`'s data starts, from the first LOCAL_HEADER bytes of its local
 * header (`header`), or −1 when they are not a local header or its data would
 * run past `end` (storedDirectory's).
 */
export function localDataStart(header: Uint8Array, entry: DirectoryEntry, end: number): number {
  if (header.length < LOCAL_HEADER) return -1;
  const h = viewOf(header);
  if (h.getUint32(0, true) !== 0x04034b50) return -1;
  const data = entry.local + LOCAL_HEADER + h.getUint16(26, true) + h.getUint16(28, true);
  return data + entry.length > end ? -1 : data;
}

/**
 * Where each entry's data lies in a zip of `size` bytes whose entries are all
 * stored: `storedDirectory`, then each entry's local header. Null for
 * anything else, as `storedEntries` says.
 */
export function storedLayout(
  size: number,
  read: (at: number, length: number) => Uint8Array,
): { name: string; start: number; length: number }[] | null {
  const directory = storedDirectory(size, read);
  if (!directory) return null;
  const layout: { name: string; start: number; length: number }[] = [];
  for (const entry of directory.entries) {
    const start = localDataStart(read(entry.local, LOCAL_HEADER), entry, directory.end);
    if (start < 0) return null;
    layout.push({ name: entry.name, start, length: entry.length });
  }
  return layout;
}

function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
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
