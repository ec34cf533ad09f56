/**
 * Safetensors reading with the header validated before any tensor byte is read.
 *
 * File layout: 8 bytes little-endian u64 header length N, N bytes of JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`,
 * then the data section; offsets are relative to the data section.
 *
 * Checks (each failure is one DataError sentence naming the file and tensor):
 * header length bounded and inside the file, JSON object, known dtype, shape of
 * non-negative integers, offsets inside the data section, end − begin equal to
 * product(shape) × dtype size, and no two tensors overlapping.
 */
import { DataError, messageOf } from "../common/errors.ts";

/** Bytes per element of every dtype the format defines. */
export const DTYPE_BYTES: Readonly<Record<string, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
};

/** Largest header we accept (the format's reference implementation uses 100 MB). */
export const MAX_HEADER_BYTES = 100_000_000;

export interface TensorInfo {
  readonly name: string;
  readonly dtype: string;
  readonly shape: readonly number[];
  /** Absolute byte offsets in `file`. */
  readonly begin: number;
  readonly end: number;
  readonly file: string;
}

/** Reads and validates the header of one safetensors file. */
export async function readHeader(file: string): Promise<Map<string, TensorInfo>> {
  let handle: Deno.FsFile;
  try {
    handle = await Deno.open(file, { read: true });
  } catch (error) {
    throw new DataError(`Cannot open safetensors file ${file}: ${messageOf(error)}.`);
  }
  try {
    const size = (await handle.stat()).size;
    if (size < 8) {
      throw new DataError(
        `Safetensors file ${file} is ${size} bytes long, expected at least 8 (the header length).`,
      );
    }
    const lengthBytes = await readExactly(handle, 0, 8, file);
    const headerLength = Number(new DataView(lengthBytes.buffer).getBigUint64(0, true));
    if (headerLength > MAX_HEADER_BYTES || 8 + headerLength > size) {
      throw new DataError(
        `Safetensors file ${file} declares a ${headerLength}-byte header, expected at most ${
          Math.min(MAX_HEADER_BYTES, size - 8)
        } (file is ${size} bytes).`,
      );
    }
    const headerBytes = await readExactly(handle, 8, headerLength, file);
    let header: unknown;
    try {
      header = JSON.parse(new TextDecoder().decode(headerBytes));
    } catch (error) {
      throw new DataError(`Safetensors header of ${file} is not valid JSON: ${messageOf(error)}.`);
    }
    if (typeof header !== "object" || header === null || Array.isArray(header)) {
      throw new DataError(`Safetensors header of ${file} is not a JSON object.`);
    }
    const dataStart = 8 + headerLength;
    const dataSize = size - dataStart;
    const tensors = new Map<string, TensorInfo>();
    for (const [name, value] of Object.entries(header as Record<string, unknown>)) {
      if (name === "__metadata__") continue;
      tensors.set(name, checkEntry(file, name, value, dataStart, dataSize));
    }
    const sorted = [...tensors.values()].sort((a, b) => a.begin - b.begin);
    for (let i = 1; i < sorted.length; i++) {
      const a = sorted[i - 1]!, b = sorted[i]!;
      if (b.begin < a.end) {
        throw new DataError(
          `Tensor ${b.name} in ${file} overlaps tensor ${a.name}: it starts at data offset ${
            b.begin - dataStart
          }, expected at least ${a.end - dataStart}.`,
        );
      }
    }
    return tensors;
  } finally {
    handle.close();
  }
}

function checkEntry(
  file: string,
  name: string,
  value: unknown,
  dataStart: number,
  dataSize: number,
): TensorInfo {
  const entry = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  if (typeof value !== "object" || value === null) {
    throw new DataError(`Tensor ${name} in ${file} has a header entry that is not an object.`);
  }
  const dtype = entry.dtype;
  if (typeof dtype !== "string" || !(dtype in DTYPE_BYTES)) {
    throw new DataError(
      `Tensor ${name} in ${file} has dtype ${JSON.stringify(dtype)}, expected one of ${
        Object.keys(DTYPE_BYTES).join(", ")
      }.`,
    );
  }
  const shape = entry.shape;
  if (
    !Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)
  ) {
    throw new DataError(
      `Tensor ${name} in ${file} has shape ${
        JSON.stringify(shape)
      }, expected a list of non-negative integers.`,
    );
  }
  const offsets = entry.data_offsets;
  if (
    !Array.isArray(offsets) || offsets.length !== 2 ||
    !offsets.every((o) => Number.isSafeInteger(o) && (o as number) >= 0)
  ) {
    throw new DataError(
      `Tensor ${name} in ${file} has data_offsets ${
        JSON.stringify(offsets)
      }, expected [begin, end] of non-negative integers.`,
    );
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end || end > dataSize) {
    throw new DataError(
      `Tensor ${name} in ${file} has data_offsets [${begin}, ${end}], expected 0 ≤ begin ≤ end ≤ ${dataSize} (the data section's size).`,
    );
  }
  const expected = (shape as number[]).reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype]!;
  if (end - begin !== expected) {
    throw new DataError(
      `Tensor ${name} in ${file} has ${
        end - begin
      } bytes of data, expected ${expected} for shape [${
        (shape as number[]).join(", ")
      }] of ${dtype}.`,
    );
  }
  return {
    name,
    dtype,
    shape: shape as number[],
    begin: dataStart + begin,
    end: dataStart + end,
    file,
  };
}

async function readExactly(
  handle: Deno.FsFile,
  offset: number,
  length: number,
  file: string,
): Promise<Uint8Array> {
  let out: Uint8Array;
  try {
    out = new Uint8Array(length);
  } catch (error) {
    if (!(error instanceof RangeError)) throw error;
    // A tensor past the engine's typed-array limit, or more than the host can give.
    throw new DataError(
      `Cannot allocate ${
        (length / 2 ** 30).toFixed(2)
      } GiB of host memory to read a tensor of ${file} (${length} bytes at byte ${offset}): it is larger than this machine or the JavaScript engine can hold in one array.`,
    );
  }
  await handle.seek(offset, Deno.SeekMode.Start);
  let done = 0;
  while (done < length) {
    const n = await handle.read(out.subarray(done));
    if (n === null) {
      throw new DataError(
        `Safetensors file ${file} ended at byte ${offset + done}, expected ${
          offset + length
        } bytes.`,
      );
    }
    done += n;
  }
  return out;
}

/** The raw bytes of one tensor (validated header entry); a NaN or infinite weight is refused. */
export async function readTensorBytes(info: TensorInfo): Promise<Uint8Array> {
  const handle = await Deno.open(info.file, { read: true });
  try {
    const bytes = await readExactly(handle, info.begin, info.end - info.begin, info.file);
    checkFinite(bytes, info);
    return bytes;
  } finally {
    handle.close();
  }
}

/**
 * Throws a DataError naming the tensor when a float weight is NaN or ±Inf: such
 * a weight poisons every activation after it, far from its cause.
 */
export function checkFinite(bytes: Uint8Array, info: TensorInfo): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let bad = -1;
  if (info.dtype === "F32") {
    for (let i = 0; i + 4 <= bytes.length; i += 4) {
      if ((view.getUint32(i, true) & 0x7f800000) === 0x7f800000) {
        bad = i / 4;
        break;
      }
    }
  } else if (info.dtype === "F16" || info.dtype === "BF16") {
    // All-ones exponent: 5 bits for f16, 8 bits for bf16.
    const mask = info.dtype === "F16" ? 0x7c00 : 0x7f80;
    for (let i = 0; i + 2 <= bytes.length; i += 2) {
      if ((view.getUint16(i, true) & mask) === mask) {
        bad = i / 2;
        break;
      }
    }
  }
  if (bad >= 0) {
    throw new DataError(
      `Tensor ${info.name} in ${info.file} has a NaN or infinite value at element ${bad}; expected finite weights.`,
    );
  }
}

/** Converts one IEEE half to a float. */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 31) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/** Tensor bytes of dtype F32, F16 or BF16 as f32 values. */
export function toFloat32(bytes: Uint8Array, dtype: string, name: string): Float32Array {
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  if (dtype === "F32") {
    return new Float32Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 4).slice();
  }
  const halves = new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 2);
  const out = new Float32Array(halves.length);
  if (dtype === "BF16") {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < halves.length; i++) bits[i] = halves[i]! << 16;
  } else if (dtype === "F16") {
    const table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) table[i] = halfToFloat(i);
    for (let i = 0; i < halves.length; i++) out[i] = table[halves[i]!]!;
  } else {
    throw new DataError(`Tensor ${name} has dtype ${dtype}, expected F32, F16 or BF16.`);
  }
  return out;
}

/** Reads a whole small safetensors file (goldens, tests) as name → {dtype, shape, bytes}. */
export async function readAll(
  file: string,
): Promise<Map<string, { dtype: string; shape: readonly number[]; bytes: Uint8Array }>> {
  const header = await readHeader(file);
  const data = await Deno.readFile(file);
  const out = new Map<string, { dtype: string; shape: readonly number[]; bytes: Uint8Array }>();
  for (const info of header.values()) {
    out.set(info.name, {
      dtype: info.dtype,
      shape: info.shape,
      bytes: data.slice(info.begin, info.end),
    });
  }
  return out;
}

/** Writes tensors (f32 data, or raw bytes with a dtype) as one safetensors file. */
export async function writeSafetensors(
  file: string,
  tensors: Record<
    string,
    { shape: number[]; data: Float32Array } | { shape: number[]; dtype: string; bytes: Uint8Array }
  >,
): Promise<void> {
  const header: Record<string, unknown> = {};
  const parts: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const bytes = "data" in t
      ? new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)
      : t.bytes;
    header[name] = {
      dtype: "data" in t ? "F32" : t.dtype,
      shape: t.shape,
      data_offsets: [offset, offset + bytes.byteLength],
    };
    parts.push(bytes);
    offset += bytes.byteLength;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const head = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + head.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let at = 8 + head.length;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  await Deno.writeFile(file, out);
}

/** f32 → IEEE half bits (round to nearest even), for writing f16 test copies. */
export function toHalfBits(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = ((u >>> 23) & 0xff) - 127 + 15;
  let mant = u & 0x7fffff;
  if (exp <= 0) return sign; // values below 2^-14 flush to zero (fine for weights in tests)
  if (exp >= 31) return sign | 0x7c00;
  let half = sign | (exp << 10) | (mant >>> 13);
  mant &= 0x1fff;
  if (mant > 0x1000 || (mant === 0x1000 && (half & 1))) half++;
  return half;
}
