/**
 * Reading a `torch.save` file (the zip container of PyTorch ≥ 1.6) without
 * PyTorch: the zip is opened in place (`storedEntries`) or by fflate, the
 * restricted reader in pickle.ts reads `<archive>/data.pkl`, and tensors are
 * read from `<archive>/data/<key>` as typed arrays, honouring offset and
 * strides.
 */
import { unzipSync } from "fflate";
import { DataError, messageOf } from "../../common/errors.ts";
import { DTYPE_BYTES, isTensorRef, type PyValue, readPickle, type TensorRef } from "./pickle.ts";

/** An opened torch.save file: its pickled object and the storages tensors point into. */
export interface TorchFile {
  file: string;
  root: PyValue;
  /** Raw bytes of each storage, by key. */
  storages: Map<string, Uint8Array>;
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
  const pickles = Object.keys(entries).filter((name) => /^[^/]+\/data\.pkl$/.test(name));
  if (pickles.length !== 1) {
    throw new DataError(
      `${file} holds ${pickles.length} data.pkl entries, expected one; it is not a torch.save file.`,
    );
  }
  const prefix = pickles[0]!.slice(0, -"data.pkl".length);
  const byteorder = entries[`${prefix}byteorder`];
  if (byteorder && new TextDecoder().decode(byteorder).trim() !== "little") {
    throw new DataError(
      `${file} was saved on a big-endian machine; only little-endian torch.save files are read.`,
    );
  }
  const root = readPickle(entries[pickles[0]!]!, `${file} (data.pkl)`);
  const storages = new Map<string, Uint8Array>();
  const storagePrefix = `${prefix}data/`;
  for (const [name, data] of Object.entries(entries)) {
    if (name.startsWith(storagePrefix)) storages.set(name.slice(storagePrefix.length), data);
  }
  return { file, root, storages };
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
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u16 = (at: number) => view.getUint16(at, true);
  const u32 = (at: number) => view.getUint32(at, true);
  // The end-of-central-directory record: 22 bytes and a comment of up to 65535.
  let end = -1;
  for (let at = bytes.length - 22; at >= Math.max(0, bytes.length - 22 - 0xffff); at--) {
    if (u32(at) === 0x06054b50 && at + 22 + u16(at + 20) === bytes.length) {
      end = at;
      break;
    }
  }
  if (end < 0 || u16(end + 4) !== 0 || u16(end + 6) !== 0) return null;
  const count = u16(end + 10);
  const size = u32(end + 12);
  const start = u32(end + 16);
  if (count === 0xffff || size === 0xffffffff || start === 0xffffffff) return null; // ZIP64
  if (u16(end + 8) !== count || start + size > end) return null;
  const entries: Record<string, Uint8Array> = {};
  let at = start;
  for (let i = 0; i < count; i++) {
    if (at + 46 > start + size || u32(at) !== 0x02014b50) return null;
    const flags = u16(at + 8);
    const method = u16(at + 10);
    const compressed = u32(at + 20);
    const length = u32(at + 24);
    const nameLength = u16(at + 28);
    const next = at + 46 + nameLength + u16(at + 30) + u16(at + 32);
    const local = u32(at + 42);
    if (
      (flags & 1) !== 0 || method !== 0 || compressed !== length || length === 0xffffffff ||
      next > start + size
    ) {
      return null;
    }
    const name = bytes.subarray(at + 46, at + 46 + nameLength);
    if (name.some((b) => b >= 0x80)) return null;
    if (local + 30 > start || u32(local) !== 0x04034b50) return null;
    const data = local + 30 + u16(local + 26) + u16(local + 28);
    if (data + length > start) return null;
    entries[String.fromCharCode(...name)] = bytes.subarray(data, data + length);
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
