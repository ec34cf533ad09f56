/**
 * The Thrift compact protocol, the encoding of Parquet's page headers and
 * file metadata: a reader (into maps of field id → value) for the fast
 * decoder, and a writer for moetrace's encoder. Only what Parquet's structs
 * use: no sets, no doubles read back.
 */

/** Thrown wherever the file leaves the subset this reader handles. */
export class FastPathRefused extends Error {}

export function refuse(why: string): never {
  throw new FastPathRefused(why);
}

// ---------------------------------------------------------------- Thrift compact protocol

/** A decoded Thrift struct: field id → value (structs nested, lists as arrays). */
export type ThriftStruct = Map<number, unknown>;

export class CompactReader {
  at: number;
  constructor(readonly bytes: Uint8Array, at: number) {
    this.at = at;
  }

  byte(): number {
    if (this.at >= this.bytes.length) refuse("thrift past the end");
    return this.bytes[this.at++]!;
  }

  varint(): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      const b = this.byte();
      result += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) return result;
      scale *= 128;
    }
    return refuse("varint too long");
  }

  zigzag(): number {
    const v = this.varint();
    return v % 2 === 0 ? v / 2 : -(v + 1) / 2;
  }

  struct(depth = 0): ThriftStruct {
    if (depth > 16) refuse("thrift nested too deep");
    const out: ThriftStruct = new Map();
    let field = 0;
    for (;;) {
      const header = this.byte();
      if (header === 0) return out;
      const type = header & 0x0f;
      const delta = header >> 4;
      field = delta === 0 ? this.zigzag() : field + delta;
      out.set(field, this.value(type, depth));
    }
  }

  value(type: number, depth: number): unknown {
    switch (type) {
      case 1:
        return true;
      case 2:
        return false;
      case 3:
        return (this.byte() << 24) >> 24;
      case 4:
      case 5:
      case 6:
        return this.zigzag();
      case 7:
        this.at += 8;
        return 0;
      case 8: {
        const length = this.varint();
        if (this.at + length > this.bytes.length) refuse("thrift binary past the end");
        const value = this.bytes.subarray(this.at, this.at + length);
        this.at += length;
        return value;
      }
      case 9:
      case 10: {
        const header = this.byte();
        let size = header >> 4;
        if (size === 15) size = this.varint();
        const elementType = header & 0x0f;
        if (size > this.bytes.length - this.at) refuse("thrift list longer than the file");
        const list: unknown[] = [];
        for (let i = 0; i < size; i++) {
          list.push(
            elementType === 1 || elementType === 2
              ? this.byte() === 1
              : this.value(elementType, depth + 1),
          );
        }
        return list;
      }
      case 11: {
        const size = this.varint();
        if (size === 0) return new Map();
        const types = this.byte();
        const map = new Map<unknown, unknown>();
        for (let i = 0; i < size; i++) {
          map.set(this.value(types >> 4, depth + 1), this.value(types & 0x0f, depth + 1));
        }
        return map;
      }
      case 12:
        return this.struct(depth + 1);
      default:
        return refuse(`thrift type ${type}`);
    }
  }
}

export const num = (s: ThriftStruct, field: number): number => {
  const v = s.get(field);
  return typeof v === "number" ? v : refuse(`field ${field} is not a number`);
};
export const str = (v: unknown): string =>
  v instanceof Uint8Array ? new TextDecoder().decode(v) : refuse("not a string");
export const sub = (s: ThriftStruct, field: number): ThriftStruct => {
  const v = s.get(field);
  return v instanceof Map ? v as ThriftStruct : refuse(`field ${field} is not a struct`);
};
export const list = (s: ThriftStruct, field: number): unknown[] => {
  const v = s.get(field);
  return Array.isArray(v) ? v : refuse(`field ${field} is not a list`);
};

const T_TRUE = 1;
const T_FALSE = 2;
const T_BYTE = 3;
const T_I16 = 4;
const T_I32 = 5;
const T_I64 = 6;
const T_BINARY = 8;
const T_LIST = 9;
const T_STRUCT = 12;

/** Writes Thrift compact-protocol structs into a growing buffer. */
export class CompactWriter {
  bytes = new Uint8Array(256);
  length = 0;
  #lastField: number[] = [0];

  #reserve(n: number): void {
    if (this.length + n <= this.bytes.length) return;
    const grown = new Uint8Array(Math.max(this.bytes.length * 2, this.length + n));
    grown.set(this.bytes.subarray(0, this.length));
    this.bytes = grown;
  }

  byte(b: number): void {
    this.#reserve(1);
    this.bytes[this.length++] = b;
  }

  /** Unsigned varint of a non-negative integer up to 2^53 (arithmetic, not 32-bit shifts). */
  varint(n: number): void {
    while (n >= 0x80) {
      this.byte((n % 0x80) | 0x80);
      n = Math.floor(n / 0x80);
    }
    this.byte(n);
  }

  zigzag(n: number): void {
    this.varint(n >= 0 ? 2 * n : -2 * n - 1);
  }

  #field(id: number, type: number): void {
    const last = this.#lastField[this.#lastField.length - 1]!;
    const delta = id - last;
    if (delta > 0 && delta <= 15) this.byte((delta << 4) | type);
    else {
      this.byte(type);
      this.zigzag(id);
    }
    this.#lastField[this.#lastField.length - 1] = id;
  }

  i32(id: number, value: number): void {
    this.#field(id, T_I32);
    this.zigzag(value);
  }

  i64(id: number, value: number): void {
    this.#field(id, T_I64);
    this.zigzag(value);
  }

  i16(id: number, value: number): void {
    this.#field(id, T_I16);
    this.zigzag(value);
  }

  i8(id: number, value: number): void {
    this.#field(id, T_BYTE);
    this.byte(value & 0xff);
  }

  bool(id: number, value: boolean): void {
    this.#field(id, value ? T_TRUE : T_FALSE);
  }

  binary(id: number, value: Uint8Array | string): void {
    const bytes = typeof value === "string" ? UTF8.encode(value) : value;
    this.#field(id, T_BINARY);
    this.varint(bytes.length);
    this.#reserve(bytes.length);
    this.bytes.set(bytes, this.length);
    this.length += bytes.length;
  }

  /** A struct field: `body` writes its fields. */
  struct(id: number, body: () => void): void {
    this.#field(id, T_STRUCT);
    this.#structBody(body);
  }

  /** A list field of structs, each written by `body`. */
  structs<T>(id: number, items: readonly T[], body: (item: T) => void): void {
    this.#field(id, T_LIST);
    this.#listHeader(items.length, T_STRUCT);
    for (const item of items) this.#structBody(() => body(item));
  }

  /** A list field of i32 values. */
  i32s(id: number, values: readonly number[]): void {
    this.#field(id, T_LIST);
    this.#listHeader(values.length, T_I32);
    for (const v of values) this.zigzag(v);
  }

  /** A list field of strings. */
  strings(id: number, values: readonly string[]): void {
    this.#field(id, T_LIST);
    this.#listHeader(values.length, T_BINARY);
    for (const v of values) {
      const bytes = UTF8.encode(v);
      this.varint(bytes.length);
      this.#reserve(bytes.length);
      this.bytes.set(bytes, this.length);
      this.length += bytes.length;
    }
  }

  /** A top-level struct (a page header, the file metadata). */
  topStruct(body: () => void): Uint8Array {
    this.#structBody(body);
    return this.bytes.subarray(0, this.length);
  }

  #structBody(body: () => void): void {
    this.#lastField.push(0);
    body();
    this.byte(0); // stop
    this.#lastField.pop();
  }

  #listHeader(size: number, type: number): void {
    if (size < 15) this.byte((size << 4) | type);
    else {
      this.byte(0xf0 | type);
      this.varint(size);
    }
  }
}

const UTF8 = new TextEncoder();
