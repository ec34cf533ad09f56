/**
 * Parquet's value runs as moetrace reads and writes them: the RLE /
 * bit-packed hybrid (levels and dictionary indices), DELTA_BINARY_PACKED
 * (integers in traces written by parquet-wasm), and the whole-byte
 * dictionary indices moetrace's encoder writes for expert ids. Decoders
 * `refuse` (parquet_thrift.ts) whatever does not check out.
 */
import { CompactReader, refuse } from "./parquet_thrift.ts";

// ---------------------------------------------------------------- reading

/**
 * The RLE / bit-packed hybrid runs of `data` (levels, dictionary indices),
 * `count` values of `bitWidth` bits: calls `run(value, length)` for each RLE
 * run and `packed(values)` for each bit-packed one.
 */
export function hybridRuns(
  data: Uint8Array,
  bitWidth: number,
  count: number,
  run: (value: number, length: number) => void,
  packed: (values: ArrayLike<number>, length: number) => void,
): void {
  if (bitWidth > 24) refuse("bit width");
  const mask = (1 << bitWidth) - 1;
  const byteWidth = (bitWidth + 7) >> 3;
  const scratch = new Int32Array(8 * 64);
  let at = 0;
  let done = 0;
  while (done < count) {
    let header = 0;
    let shift = 0;
    for (;;) {
      if (at >= data.length) refuse("levels end early");
      const b = data[at++]!;
      header |= (b & 0x7f) << shift;
      if ((b & 0x80) === 0) break;
      shift += 7;
      if (shift > 28) refuse("level header");
    }
    if ((header & 1) === 0) {
      const length = Math.min(header >>> 1, count - done);
      let value = 0;
      for (let i = 0; i < byteWidth; i++) {
        value |= (data[at++] ?? refuse("levels end early")) << (8 * i);
      }
      run(value, length);
      done += length;
    } else {
      let groups = header >>> 1;
      while (groups > 0) {
        const take = Math.min(groups, 64);
        const values = take * 8;
        const bytesNeeded = take * bitWidth;
        if (at + bytesNeeded > data.length) refuse("levels end early");
        let bit = 0;
        for (let i = 0; i < values; i++) {
          const byte = at + (bit >> 3);
          const word = data[byte]! | (data[byte + 1] ?? 0) << 8 | (data[byte + 2] ?? 0) << 16 |
            (data[byte + 3] ?? 0) << 24;
          scratch[i] = (word >>> (bit & 7)) & mask;
          bit += bitWidth;
        }
        at += bytesNeeded;
        const length = Math.min(values, count - done);
        packed(scratch, length);
        done += length;
        groups -= take;
        if (done >= count) break;
      }
    }
  }
}

export function bitWidthOf(max: number): number {
  return max === 0 ? 0 : 32 - Math.clz32(max);
}

/**
 * DELTA_BINARY_PACKED INT32 values into `out` from index `at`: a header
 * (block size, miniblocks per block, value count, first value), then per
 * block the minimum delta, one bit width per miniblock and the miniblocks'
 * deltas − minimum, bit-packed LSB first. Sums wrap at 32 bits, as the
 * writer's do. Returns the OR of all values (for a narrow output, its range
 * check).
 */
export function deltaBinaryPacked(data: Uint8Array, count: number, out: Int32Array): number {
  const reader = new CompactReader(data, 0);
  const blockSize = reader.varint();
  const miniblocks = reader.varint();
  const total = reader.varint();
  let value = reader.zigzag() | 0;
  if (total !== count || miniblocks === 0 || blockSize % miniblocks !== 0) refuse("delta header");
  const perMiniblock = blockSize / miniblocks;
  if (perMiniblock % 32 !== 0) refuse("delta miniblock size");
  if (count === 0) return 0;
  let seen = value;
  let o = 0;
  const end = count;
  out[o++] = value;
  while (o < end) {
    const minDelta = reader.zigzag() | 0;
    const widthsAt = reader.at;
    let p = widthsAt + miniblocks;
    for (let m = 0; m < miniblocks && o < end; m++) {
      const bitWidth = data[widthsAt + m] ?? refuse("delta widths past the page");
      if (bitWidth > 32) refuse("delta bit width");
      const take = Math.min(perMiniblock, end - o);
      const next = p + (perMiniblock * bitWidth) / 8;
      if (p + Math.ceil((take * bitWidth) / 8) > data.length) refuse("delta values past the page");
      if (bitWidth === 0) {
        for (let i = 0; i < take; i++) {
          value = (value + minDelta) | 0;
          seen |= value;
          out[o++] = value;
        }
      } else if (bitWidth <= 25) {
        // A 32-bit window at the value's first byte holds it (shift ≤ 7, width ≤ 25):
        // 2–3× faster than feeding a bit buffer a byte at a time. The last values of
        // a page, whose window would pass its end, read zeros there instead.
        const mask = (1 << bitWidth) - 1;
        const last = data.length - 4;
        let i = 0;
        let bit = 0;
        for (; i < take; i++, bit += bitWidth) {
          const b = p + (bit >>> 3);
          if (b > last) break;
          const word = data[b]! | (data[b + 1]! << 8) | (data[b + 2]! << 16) | (data[b + 3]! << 24);
          value = (value + minDelta + ((word >>> (bit & 7)) & mask)) | 0;
          seen |= value;
          out[o++] = value;
        }
        for (; i < take; i++, bit += bitWidth) {
          const b = p + (bit >>> 3);
          const word = (data[b] ?? 0) | ((data[b + 1] ?? 0) << 8) | ((data[b + 2] ?? 0) << 16) |
            ((data[b + 3] ?? 0) << 24);
          value = (value + minDelta + ((word >>> (bit & 7)) & mask)) | 0;
          seen |= value;
          out[o++] = value;
        }
      } else {
        for (let i = 0, bit = 0; i < take; i++, bit += bitWidth) {
          let delta = 0;
          for (let k = 0; k < bitWidth; k++) {
            const b = bit + k;
            delta += ((data[p + (b >>> 3)]! >>> (b & 7)) & 1) * 2 ** k;
          }
          value = (value + minDelta + delta) | 0;
          seen |= value;
          out[o++] = value;
        }
      }
      p = next;
    }
    reader.at = p;
  }
  return seen;
}

/**
 * A page of dictionary indices (bit width byte, then RLE / bit-packed runs)
 * into `out` as dictionary values. A page of one bit-packed run, as
 * moetrace's encoder writes, is unpacked in one tight loop through a table of
 * 2^width entries whose entries past the dictionary are −1 (an index out of
 * range is then caught by one OR per value); other pages go run by run.
 */
export function dictionaryIndices(
  data: Uint8Array,
  count: number,
  dictionary: Int32Array,
  out: Int32Array,
): void {
  const bitWidth = data[0] ?? refuse("empty page");
  if (bitWidth > 24) refuse("bit width");
  const size = dictionary.length;
  let at = 1;
  let header = 0;
  for (let shift = 0;; shift += 7) {
    const b = data[at++] ?? refuse("page ends early");
    header += (b & 0x7f) * 2 ** shift;
    if ((b & 0x80) === 0) break;
    if (shift > 28) refuse("run header");
  }
  if (bitWidth > 0 && header % 2 === 1 && (header - 1) / 2 * 8 >= count) {
    if (at + Math.ceil((count * bitWidth) / 8) > data.length) refuse("indices past the page");
    if (lookup.length < 1 << bitWidth) lookup = new Int32Array(1 << bitWidth);
    const table = lookup;
    table.fill(-1, 0, 1 << bitWidth);
    // Sign bits mark entries past the dictionary; a value of −1 itself is
    // told apart by `valid` (a dictionary of i32 values may hold it).
    table.set(dictionary.subarray(0, Math.min(size, 1 << bitWidth)));
    const valid = size >= 1 << bitWidth;
    const mask = (1 << bitWidth) - 1;
    const last = data.length - 4;
    let bad = 0;
    let i = 0;
    let bit = at * 8;
    for (; i < count; i++, bit += bitWidth) {
      const b = bit >>> 3;
      if (b > last) break;
      const word = data[b]! | (data[b + 1]! << 8) | (data[b + 2]! << 16) | (data[b + 3]! << 24);
      const index = (word >>> (bit & 7)) & mask;
      if (!valid) bad |= size - 1 - index;
      out[i] = table[index]!;
    }
    for (; i < count; i++, bit += bitWidth) {
      const b = bit >>> 3;
      const word = (data[b] ?? 0) | ((data[b + 1] ?? 0) << 8) | ((data[b + 2] ?? 0) << 16) |
        ((data[b + 3] ?? 0) << 24);
      const index = (word >>> (bit & 7)) & mask;
      if (!valid) bad |= size - 1 - index;
      out[i] = table[index]!;
    }
    if (bad < 0) refuse("dictionary index out of range");
    return;
  }
  let filled = 0;
  const rest = data.subarray(1);
  if (bitWidth === 0) {
    if (size === 0) refuse("index into an empty dictionary");
    out.fill(dictionary[0]!, 0, count);
    return;
  }
  hybridRuns(rest, bitWidth, count, (value, length) => {
    if (value >= size) refuse("dictionary index out of range");
    out.fill(dictionary[value]!, filled, filled + length);
    filled += length;
  }, (values, length) => {
    for (let i = 0; i < length; i++) {
      const v = values[i]!;
      if (v >= size) refuse("dictionary index out of range");
      out[filled++] = dictionary[v]!;
    }
  });
}

/**
 * A page of dictionary indices (bit width byte, then runs) that is one
 * bit-packed run covering all `count` values: its width and where its packed
 * bytes start. Null for any other page.
 */
function singlePackedRun(data: Uint8Array, count: number): { width: number; start: number } | null {
  const width = data[0] ?? 0;
  // The run header: a varint, (groups << 1) | 1 for a bit-packed run.
  let header = 0;
  let p = 1;
  for (let shift = 0; shift <= 28; shift += 7) {
    const b = data[p++] ?? 0;
    header += (b & 0x7f) * 2 ** shift;
    if ((b & 0x80) === 0) break;
  }
  if (header % 2 === 0 || Math.floor(header / 2) * 8 < count) return null;
  return { width, start: p };
}

/**
 * Expert ids as moetrace's encoder writes them: one bit-packed run of whole
 * bytes (width 8, or 16 past 256 entries) whose dictionary is 0..m, perhaps
 * then 65535. Indices below the dictionary's identity part are the values:
 * one native copy, a scan for the largest, and a lookup only for the
 * indices past it. Returns false (nothing written) for any other page.
 */
export function bytePacked(
  data: Uint8Array,
  count: number,
  dictionary: Int32Array,
  out: Uint16Array | Uint8Array,
  at: number,
): boolean {
  const run = singlePackedRun(data, count);
  if (!run || (run.width !== 8 && run.width !== 16)) return false;
  const { width: w, start: p } = run;
  const bytes = count * (w / 8);
  if (p + bytes > data.length) refuse("indices past the page");
  // The identity part: entries 0..identity − 1 equal their index.
  let identity = 0;
  while (identity < dictionary.length && dictionary[identity] === identity) identity++;
  const limit = out instanceof Uint8Array ? 0xff : 0xffff;
  if (w === 16 && (!LITTLE_ENDIAN || (data.byteOffset + p) % 2 !== 0)) return false;
  const indices = w === 8
    ? data.subarray(p, p + bytes)
    : new Uint16Array(data.buffer, data.byteOffset + p, count);
  // Every index is below `identity` when it is a power of two and no index has
  // a bit above it: an OR over the page as 32-bit words settles it in ~1/4
  // of a scan for the maximum.
  if (
    identity > 0 && (identity & (identity - 1)) === 0 && identity - 1 <= limit &&
    (orOfBytes(data, p, bytes) &
        ~(w === 8 ? (identity - 1) * 0x01010101 : (identity - 1) * 0x10001)) === 0
  ) {
    out.set(indices, at);
    return true;
  }
  let max = 0;
  for (let i = 0; i < count; i++) if (indices[i]! > max) max = indices[i]!;
  if (max >= dictionary.length) refuse("dictionary index out of range");
  if (max < identity) {
    if (max > limit) refuse("a value out of the column's range");
    out.set(indices, at);
    return true;
  }
  for (let i = 0; i < count; i++) {
    const e = dictionary[indices[i]!]!;
    if (e > limit || e < 0) refuse("a value out of the column's range");
    out[at + i] = e;
  }
  return true;
}

const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

/** The OR of `length` bytes from `data[start]`, folded into 32 bits (byte i into bits 8·(i mod 4)…, from aligned words). */
function orOfBytes(data: Uint8Array, start: number, length: number): number {
  let at = data.byteOffset + start;
  const end = at + length;
  const bytes = new Uint8Array(data.buffer, 0, end);
  let or = 0;
  // Head bytes up to a 4-byte boundary, words, tail bytes: each byte lands on
  // the lane of its address mod 4, as in the words.
  for (; at < end && at % 4 !== 0; at++) or |= bytes[at]! << (8 * (at % 4));
  const wordEnd = end - (end % 4);
  if (at < wordEnd) {
    const words = new Uint32Array(data.buffer, at, (wordEnd - at) / 4);
    for (let i = 0; i < words.length; i++) or |= words[i]!;
    at = wordEnd;
  }
  for (; at < end; at++) or |= bytes[at]! << (8 * (at % 4));
  return or;
}

/**
 * The common case of expert ids, decoded straight into the u16 column: a page
 * of dictionary indices ≤ 8 bits wide in one bit-packed run (what moetrace's
 * encoder writes for ≤ 256 distinct values). Each group of 8 indices is w
 * bytes, read as two 32-bit words and split with shifts: 1.5–2 ns a value,
 * against 2.5–3 ns for a 4-byte window per value into a scratch array.
 * Returns false (nothing written) for any other page.
 */
export function packedGroups16(
  data: Uint8Array,
  count: number,
  dictionary: Int32Array,
  out: Uint16Array,
  at: number,
): boolean {
  const run = singlePackedRun(data, count);
  if (!run || run.width < 1 || run.width > 8) return false;
  const w = run.width;
  let p = run.start;
  if (p + Math.ceil((count * w) / 8) > data.length) refuse("indices past the page");
  if (lookup.length < 256) lookup = new Int32Array(256);
  const table = lookup;
  // Entries past the dictionary are −1: one OR per value then catches an index out of range.
  table.fill(-1);
  table.set(dictionary.subarray(0, Math.min(dictionary.length, 256)));
  const mask = (1 << w) - 1;
  let o = at;
  let bad = 0;
  // Whole groups whose two words lie inside the page; the rest value by value.
  const safeGroups = Math.min(count >>> 3, Math.max(0, Math.floor((data.length - p - 8) / w) + 1));
  for (let g = 0; g < safeGroups; g++, p += w) {
    const lo = data[p]! | (data[p + 1]! << 8) | (data[p + 2]! << 16) | (data[p + 3]! << 24);
    const hi = data[p + 4]! | (data[p + 5]! << 8) | (data[p + 6]! << 16) | (data[p + 7]! << 24);
    for (let j = 0, bit = 0; j < 8; j++, bit += w) {
      const v = bit >= 32
        ? hi >>> (bit - 32)
        : bit + w > 32
        ? (lo >>> bit) | (hi << (32 - bit))
        : lo >>> bit;
      const e = table[v & mask]!;
      bad |= e;
      out[o++] = e;
    }
  }
  for (let i = safeGroups * 8, bit = 0; i < count; i++, bit += w) {
    const b = p + (bit >>> 3);
    const word = (data[b] ?? 0) | ((data[b + 1] ?? 0) << 8);
    const e = table[(word >>> (bit & 7)) & mask]!;
    bad |= e;
    out[o++] = e;
  }
  if (bad < 0) refuse("dictionary index out of range");
  return true;
}

/** Index → value table of `dictionaryIndices`, grown to the widest page seen. */
let lookup = new Int32Array(0);

// ---------------------------------------------------------------- writing

/** Bits needed for values 0..max (at least 1: some readers refuse width 0). */
export function indexBitWidth(max: number): number {
  return Math.max(1, 32 - Math.clz32(max));
}

/** Bytes of an unsigned varint. */
function varintBytes(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return out;
}

/** The header of one bit-packed run of `count` values (groups of 8, the last padded). */
export function packedRunHeader(count: number): number[] {
  return varintBytes(Math.ceil(count / 8) * 2 + 1);
}

/** One RLE run of `count` copies of `value` (`bitWidth` ≤ 8 bits). */
export function rleRun(count: number, value: number): number[] {
  return [...varintBytes(count * 2), value];
}

/** Scratch words for `bitPack`, grown to the largest page. */
let packWords = new Uint32Array(0);

/**
 * `count` values from `values[start]` as one bit-packed run of `bitWidth`
 * bits each (≤ 24, what readers take), LSB first, the last group of 8 padded with zeros,
 * written at `out[at]` (string dictionary indices). Returns the end offset.
 *
 * Bits gather in a 32-bit word stored whole (2.4× faster than a byte at a
 * time); a value crossing a word boundary leaves its high bits as the next
 * word's start.
 */
export function bitPack(
  out: Uint8Array,
  at: number,
  values: Uint16Array | Uint32Array,
  start: number,
  count: number,
  bitWidth: number,
): number {
  const groups = Math.ceil(count / 8);
  for (const b of varintBytes(groups * 2 + 1)) out[at++] = b;
  const bytes = groups * bitWidth;
  const words = Math.ceil(bytes / 4);
  if (packWords.length < words) packWords = new Uint32Array(words);
  const packed = packWords;
  let acc = 0;
  let bits = 0;
  let w = 0;
  const stop = start + count;
  for (let i = start; i < stop; i++) {
    const x = values[i]!;
    acc |= x << bits;
    bits += bitWidth;
    if (bits >= 32) {
      packed[w++] = acc;
      bits -= 32;
      acc = bits > 0 ? x >>> (bitWidth - bits) : 0;
    }
  }
  if (w < words) packed.fill(0, w, words);
  if (bits > 0) packed[w] = acc;
  out.set(new Uint8Array(packed.buffer, 0, bytes), at);
  return at + bytes;
}

/** Repetition levels of `rows` lists of `width` values: per row one 0 then width − 1 ones. */
export function listRepetitionLevels(rows: number, width: number): Uint8Array {
  if (width === 1) return Uint8Array.from(rleRun(rows, 0));
  const row = [...rleRun(1, 0), ...rleRun(width - 1, 1)];
  const out = new Uint8Array(row.length * rows);
  out.set(row);
  // Doubling copies: log2(rows) set() calls instead of one per row.
  for (let filled = row.length; filled < out.length; filled *= 2) {
    out.copyWithin(filled, 0, Math.min(filled, out.length - filled));
  }
  return out;
}

/**
 * Indices of ≤ 256 or ≤ 65536 entries as one bit-packed run of width 8 or
 * 16 at `out[at]`: whole bytes, so a reader takes them without bit
 * arithmetic (at 3–7 bits wide, unpacking was most of a shard's read time).
 * Returns the end offset.
 */
export function bytePack(
  out: Uint8Array,
  at: number,
  values: Uint8Array | Uint16Array,
  count: number,
  bitWidth: 8 | 16,
  map: Int32Array | null,
): number {
  const groups = Math.ceil(count / 8);
  for (const b of packedRunHeader(count)) out[at++] = b;
  const end = at + groups * bitWidth;
  if (bitWidth === 8) {
    if (!map) out.set(values, at); // each value < 256: the conversion keeps it
    else for (let i = 0; i < count; i++) out[at + i] = map[values[i]!]!;
  } else if (!map && values instanceof Uint16Array && LITTLE_ENDIAN) {
    out.set(new Uint8Array(values.buffer, values.byteOffset, count * 2), at);
  } else {
    for (let i = 0; i < count; i++) {
      const index = map ? map[values[i]!]! : values[i]!;
      out[at + 2 * i] = index & 0xff;
      out[at + 2 * i + 1] = index >>> 8;
    }
  }
  out.fill(0, at + count * (bitWidth / 8), end);
  return end;
}
