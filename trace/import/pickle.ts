/**
 * A restricted reader for the pickles inside `torch.save` files. A pickle is a
 * small program for Python's unpickler, and an ordinary unpickler will import
 * and call any function the file names; this one understands only the opcodes
 * and globals that `torch.save` emits for tensors, dicts, lists, tuples,
 * numbers, strings and None, and refuses everything else before it runs. It
 * never calls anything: the few globals it accepts are turned into plain
 * descriptions (a tensor reference, an empty dict), so a file from a stranger
 * stays data.
 *
 * Python values become: int → number (bigint past 2^53), float → number,
 * str → string, bytes → Uint8Array, None → null, bool → boolean,
 * list and tuple → array, dict → Map (never a plain object, so a key such as
 * "__proto__" is only a key), tensor → TensorRef. A list of two or more ints
 * pickled the way Python's pickler writes one (batches of MARK, BININT*,
 * APPENDS) becomes an Int32Array: SGLang's input_ids and positions hold
 * 10^5–10^6 ints per file, which as arrays of numbers cost memory, garbage
 * collection and a copy.
 */
import { DataError } from "../../common/errors.ts";

/** Element types of the storages `torch.save` names (`torch.IntStorage`, ...). */
export type TorchDtype =
  | "float64"
  | "float32"
  | "float16"
  | "bfloat16"
  | "int64"
  | "int32"
  | "int16"
  | "int8"
  | "uint8"
  | "bool";

/** Bytes per element of each dtype. */
export const DTYPE_BYTES: Readonly<Record<TorchDtype, number>> = {
  float64: 8,
  float32: 4,
  float16: 2,
  bfloat16: 2,
  int64: 8,
  int32: 4,
  int16: 2,
  int8: 1,
  uint8: 1,
  bool: 1,
};

const STORAGE_TYPES: Readonly<Record<string, TorchDtype>> = {
  DoubleStorage: "float64",
  FloatStorage: "float32",
  HalfStorage: "float16",
  BFloat16Storage: "bfloat16",
  LongStorage: "int64",
  IntStorage: "int32",
  ShortStorage: "int16",
  CharStorage: "int8",
  ByteStorage: "uint8",
  BoolStorage: "bool",
};

/** A tensor as the pickle describes it: which storage, and the view into it. */
export interface TensorRef {
  readonly kind: "tensor";
  readonly dtype: TorchDtype;
  /** Name of the storage's file under `data/` in the archive. */
  readonly storageKey: string;
  /** Elements in the storage, as the pickle declares. */
  readonly storageNumel: number;
  /** Offset into the storage, in elements. */
  readonly offset: number;
  readonly shape: readonly number[];
  /** Strides in elements. */
  readonly stride: readonly number[];
}

export type PyValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PyValue[]
  | Int32Array
  | Map<PyValue, PyValue>
  | TensorRef;

export function isTensorRef(value: unknown): value is TensorRef {
  return typeof value === "object" && value !== null && (value as TensorRef).kind === "tensor";
}

/** What GLOBAL may name; anything else is refused. */
type Global =
  | { kind: "rebuild_tensor" }
  | { kind: "ordered_dict" }
  | { kind: "storage_type"; dtype: TorchDtype };

/** A persistent id resolved to a storage (the tuple torch writes before BINPERSID). */
interface StorageRef {
  kind: "storage";
  dtype: TorchDtype;
  key: string;
  numel: number;
}

function lookupGlobal(module: string, name: string): Global | null {
  if (module === "torch._utils" && (name === "_rebuild_tensor_v2" || name === "_rebuild_tensor")) {
    return { kind: "rebuild_tensor" };
  }
  if (module === "collections" && name === "OrderedDict") return { kind: "ordered_dict" };
  if (module === "torch" && name in STORAGE_TYPES) {
    return { kind: "storage_type", dtype: STORAGE_TYPES[name]! };
  }
  return null;
}

const MARK = Symbol("mark");
type StackItem = PyValue | Global | StorageRef | typeof MARK;

const OPCODE_NAMES: Readonly<Record<number, string>> = {
  0x81: "NEWOBJ",
  0x92: "NEWOBJ_EX",
  0x69: "INST",
  0x6f: "OBJ",
  0x62: "BUILD",
  0x50: "PERSID",
  0x82: "EXT1",
  0x83: "EXT2",
  0x84: "EXT4",
  0x96: "BYTEARRAY8",
  0x97: "NEXT_BUFFER",
  0x98: "READONLY_BUFFER",
};

/**
 * Reads a pickle. `where` names it in errors ("f.pt (data.pkl)"). Throws a
 * DataError with one sentence for a truncated pickle, an opcode this reader
 * does not take, or a global other than the tensor machinery.
 */
export function readPickle(bytes: Uint8Array, where: string): PyValue {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const text = new TextDecoder("utf-8", { fatal: true });
  const stack: StackItem[] = [];
  const memo = new Map<number, StackItem>();
  const arena = new IntArena();
  const short = new ShortStrings();
  // Tuples may hold a storage type or a storage (the persistent id and the
  // tensor rebuild arguments); such a tuple is never a value in the result.
  const raw = new WeakSet<object>();
  const tuple = (items: StackItem[]): StackItem => {
    if (items.some((item) => item === MARK)) {
      throw new DataError(
        `${where} puts a MARK inside a tuple at byte ${p - 1}; the pickle is damaged.`,
      );
    }
    if (
      items.some((item) =>
        isGlobal(item) || isStorage(item) ||
        (typeof item === "object" && item !== null && raw.has(item))
      )
    ) {
      raw.add(items);
    }
    return items as PyValue[];
  };
  let p = 0;

  const need = (n: number) => {
    if (p + n > bytes.length) {
      throw new DataError(
        `${where} ends in the middle of its pickle (byte ${bytes.length}); the file is truncated.`,
      );
    }
  };
  const u8 = () => (need(1), bytes[p++]!);
  const u16 = () => (need(2), p += 2, view.getUint16(p - 2, true));
  const u32 = () => (need(4), p += 4, view.getUint32(p - 4, true));
  const i32 = () => (need(4), p += 4, view.getInt32(p - 4, true));
  const u64 = () => {
    need(8);
    const value = view.getBigUint64(p, true);
    p += 8;
    if (value > BigInt(bytes.length)) {
      throw new DataError(
        `${where} declares a ${value}-byte item in a ${bytes.length}-byte pickle; the file is damaged.`,
      );
    }
    return Number(value);
  };
  const take = (n: number) => (need(n), p += n, bytes.subarray(p - n, p));
  const str = (n: number) => {
    if (n <= SHORT) {
      need(n);
      const known = short.get(bytes, p, n);
      if (known !== null) return (p += n, known);
    }
    const raw = take(n);
    try {
      return text.decode(raw);
    } catch {
      throw new DataError(`${where} holds a string that is not valid UTF-8 at byte ${p - n}.`);
    }
  };
  const line = () => {
    const end = bytes.indexOf(0x0a, p);
    if (end < 0) need(bytes.length - p + 1);
    const s = str(end - p);
    p++;
    return s;
  };
  const pop = (): StackItem => {
    if (stack.length === 0) {
      throw new DataError(`${where} pops an empty stack at byte ${p}; the pickle is damaged.`);
    }
    return stack.pop()!;
  };
  const value = (item: StackItem, what: string): PyValue => {
    if (
      item === MARK || isGlobal(item) || isStorage(item) ||
      (typeof item === "object" && item !== null && raw.has(item))
    ) {
      throw new DataError(
        `${where} uses a ${describe(item)} as ${what} at byte ${p}; the pickle is damaged.`,
      );
    }
    return item;
  };
  const popMark = (): StackItem[] => {
    const at = stack.lastIndexOf(MARK);
    if (at < 0) {
      throw new DataError(
        `${where} has no MARK for the opcode at byte ${p - 1}; the pickle is damaged.`,
      );
    }
    const items = stack.splice(at);
    items.shift();
    return items;
  };
  const top = (what: string) => {
    if (stack.length === 0) {
      throw new DataError(
        `${where} has no ${what} for the opcode at byte ${p - 1}; the pickle is damaged.`,
      );
    }
    return stack[stack.length - 1]!;
  };
  const setItems = (items: StackItem[]) => {
    const dict = top("dict");
    if (!(dict instanceof Map)) {
      throw new DataError(
        `${where} adds items to a ${describe(dict)} at byte ${p - 1}; only dicts take items.`,
      );
    }
    if (items.length % 2 !== 0) {
      throw new DataError(
        `${where} has an odd number of dict items at byte ${p - 1}; the pickle is damaged.`,
      );
    }
    for (let i = 0; i < items.length; i += 2) {
      dict.set(value(items[i]!, "a dict key"), value(items[i + 1]!, "a dict value"));
    }
  };
  const appendItems = (items: StackItem[]) => {
    const list = top("list");
    if (!Array.isArray(list)) {
      throw new DataError(
        `${where} appends to a ${describe(list)} at byte ${p - 1}; only lists take appends.`,
      );
    }
    for (const item of items) list.push(value(item, "a list item"));
  };
  const get = (index: number) => {
    if (!memo.has(index)) {
      throw new DataError(
        `${where} refers to memo entry ${index}, which was never stored; the pickle is damaged.`,
      );
    }
    stack.push(memo.get(index)!);
  };
  const put = (index: number) => memo.set(index, top("value to memoize"));

  for (;;) {
    const at = p;
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) {
          throw new DataError(`${where} uses pickle protocol ${bytes[p - 1]}; at most 5 is read.`);
        }
        break;
      case 0x95: // FRAME: a length hint only
        u64();
        break;
      case 0x2e: // STOP
        if (stack.length !== 1) {
          throw new DataError(
            `${where} ends with ${stack.length} values on the stack, expected 1; the pickle is damaged.`,
          );
        }
        return value(stack[0]!, "the result");
      case 0x28: { // MARK
        // A list of ints is pickled as EMPTY_LIST, then MARK, up to 1000
        // BININT* and APPENDS per batch (SGLang's input_ids and positions,
        // 10^5–10^6 each): such a batch goes straight onto the list, with
        // no stack traffic per item, as APPENDS would put it.
        const list = stack[stack.length - 1];
        const end = Array.isArray(list) && !raw.has(list) ? intRunEnd(bytes, p) : -1;
        if (end > p && bytes[end] === 0x65) {
          readIntRun(bytes, view, p, end, list as PyValue[], (list as PyValue[]).length);
          p = end + 1;
          break;
        }
        stack.push(MARK);
        break;
      }
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x5d: { // EMPTY_LIST
        const ints = intList(bytes, view, p, arena);
        if (!ints) {
          stack.push([]);
          break;
        }
        stack.push(ints.values);
        if (ints.memo !== undefined) put(ints.memo === -1 ? memo.size : ints.memo);
        p = ints.end;
        break;
      }
      case 0x29: // EMPTY_TUPLE
        stack.push([]);
        break;
      case 0x64: { // DICT
        const items = popMark();
        stack.push(new Map());
        setItems(items);
        break;
      }
      case 0x6c: // LIST
        stack.push(popMark().map((item) => value(item, "a list item")));
        break;
      case 0x74: // TUPLE
        stack.push(tuple(popMark()));
        break;
      case 0x85: // TUPLE1
      case 0x86: // TUPLE2
      case 0x87: { // TUPLE3
        const n = op - 0x84;
        const items: StackItem[] = [];
        for (let i = 0; i < n; i++) items.unshift(pop());
        stack.push(tuple(items));
        break;
      }
      case 0x61: { // APPEND
        const item = pop();
        appendItems([item]);
        break;
      }
      case 0x65: // APPENDS
        appendItems(popMark());
        break;
      case 0x73: { // SETITEM
        const v = pop();
        const k = pop();
        setItems([k, v]);
        break;
      }
      case 0x75: // SETITEMS
        setItems(popMark());
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x4a: // BININT
        stack.push(i32());
        break;
      case 0x8a: // LONG1
        stack.push(littleEndianSigned(take(u8())));
        break;
      case 0x8b: { // LONG4
        const n = u32();
        if (n > 64) {
          throw new DataError(
            `${where} holds a ${n}-byte integer at byte ${at}; integers that long are not read.`,
          );
        }
        stack.push(littleEndianSigned(take(n)));
        break;
      }
      case 0x47: // BINFLOAT (big-endian)
        need(8);
        stack.push(view.getFloat64(p, false));
        p += 8;
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x58: // BINUNICODE
        stack.push(str(u32()));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(str(u8()));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(str(u64()));
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(take(u8()).slice());
        break;
      case 0x42: // BINBYTES
        stack.push(take(u32()).slice());
        break;
      case 0x8e: // BINBYTES8
        stack.push(take(u64()).slice());
        break;
      case 0x71: // BINPUT
        put(u8());
        break;
      case 0x72: // LONG_BINPUT
        put(u32());
        break;
      case 0x94: // MEMOIZE
        put(memo.size);
        break;
      case 0x68: // BINGET
        get(u8());
        break;
      case 0x6a: // LONG_BINGET
        get(u32());
        break;
      case 0x30: // POP
        pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top("value to duplicate"));
        break;
      case 0x63: { // GLOBAL "module\nname\n"
        const module = line();
        const name = line();
        stack.push(resolveGlobal(module, name, where));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== "string" || typeof name !== "string") {
          throw new DataError(
            `${where} names a global with non-string parts at byte ${at}; the pickle is damaged.`,
          );
        }
        stack.push(resolveGlobal(module, name, where));
        break;
      }
      case 0x51: // BINPERSID
        stack.push(persistentStorage(pop(), where));
        break;
      case 0x52: { // REDUCE
        const args = pop();
        const callable = pop();
        stack.push(reduce(callable, args, where));
        break;
      }
      default: {
        const name = OPCODE_NAMES[op];
        throw new DataError(
          name
            ? `${where} uses the pickle opcode ${name} at byte ${at}, which builds arbitrary objects; moetrace reads only tensors, dicts, lists, numbers and strings.`
            : `${where} has byte 0x${
              op.toString(16).padStart(2, "0")
            } at ${at}, which is not a pickle opcode this reader takes; the file is damaged or not a torch.save file.`,
        );
      }
    }
  }
}

/** Where a run of BININT, BININT1 and BININT2 opcodes from `from` ends (the next opcode), or −1 past the end. */
function intRunEnd(bytes: Uint8Array, from: number): number {
  let q = from;
  for (;;) {
    const op = bytes[q];
    if (op === 0x4a) q += 5;
    else if (op === 0x4b) q += 2;
    else if (op === 0x4d) q += 3;
    else return q < bytes.length ? q : -1;
  }
}

/** Items per APPENDS batch in Python's pickler (pickle._BATCHSIZE): every batch but the last is full. */
const BATCH = 1000;

/**
 * The list an EMPTY_LIST at `from` starts, as an Int32Array, when what
 * follows is an optional memo op, then MARK, ints, APPENDS batches of which
 * only the last holds fewer than BATCH items, then anything but MARK: a
 * list that certainly ends there. Else null, and the list is read op by op
 * (a list of exactly n × BATCH ints, or one whose end is not certain).
 * `memo`: the BINPUT/LONG_BINPUT index to store it under (−1: MEMOIZE);
 * `end`: where reading goes on.
 */
function intList(
  bytes: Uint8Array,
  view: DataView,
  from: number,
  arena: IntArena,
): { values: Int32Array; memo: number | undefined; end: number } | null {
  let q = from;
  let memo: number | undefined;
  if (bytes[q] === 0x71) [memo, q] = [bytes[q + 1], q + 2]; // BINPUT
  else if (bytes[q] === 0x72) [memo, q] = [view.getUint32(q + 1, true), q + 5]; // LONG_BINPUT
  else if (bytes[q] === 0x94) [memo, q] = [-1, q + 1]; // MEMOIZE
  if (q + 5 > bytes.length) return null;
  const batches: [number, number][] = [];
  let count = 0;
  let last = BATCH; // items in the last batch read
  while (last >= BATCH && bytes[q] === 0x28) {
    const end = intRunEnd(bytes, q + 1);
    if (end <= q + 1 || bytes[end] !== 0x65) return null;
    last = runLength(bytes, q + 1, end);
    batches.push([q + 1, end]);
    count += last;
    q = end + 1;
    if (q >= bytes.length) return null;
  }
  if (last >= BATCH || bytes[q] === 0x28) return null;
  const values = arena.take(count);
  let at = 0;
  for (const [start, end] of batches) at = readIntRun(bytes, view, start, end, values, at);
  return { values, memo, end: q };
}

/**
 * Int32Arrays for the int lists of one pickle, cut from shared chunks: a
 * recording has thousands of lists (two per forward pass), and an
 * ArrayBuffer of its own for each took more time than reading their ints.
 * A list is a view, and its `buffer` holds other lists too.
 */
class IntArena {
  static readonly CHUNK = 1 << 16;
  #chunk = new Int32Array(0);
  #used = 0;

  take(count: number): Int32Array {
    if (count > IntArena.CHUNK >> 2) return new Int32Array(count);
    if (this.#used + count > this.#chunk.length) {
      this.#chunk = new Int32Array(IntArena.CHUNK);
      this.#used = 0;
    }
    this.#used += count;
    return this.#chunk.subarray(this.#used - count, this.#used);
  }
}

/** Strings up to this many bytes are looked up in ShortStrings. */
const SHORT = 32;

/**
 * Short ASCII strings of one pickle, each built once: dict keys, globals'
 * names and storage locations repeat in every record of a recording (tens of
 * thousands of times), and finding one again costs less than building it
 * (a TextDecoder call costs more than the text).
 */
class ShortStrings {
  #slots: string[] = new Array<string>(4096).fill("");

  /** bytes[from, from + n) as a string, or null when they are not ASCII. */
  get(bytes: Uint8Array, from: number, n: number): string | null {
    let hash = n;
    let high = 0;
    for (let i = from; i < from + n; i++) {
      const b = bytes[i]!;
      high |= b;
      hash = (Math.imul(hash, 31) + b) | 0;
    }
    if (high >= 0x80) return null;
    const slot = hash & 4095;
    const known = this.#slots[slot]!;
    if (known.length === n) {
      let same = true;
      for (let i = 0; i < n && same; i++) same = known.charCodeAt(i) === bytes[from + i];
      if (same) return known;
    }
    const made = String.fromCharCode.apply(
      null,
      bytes.subarray(from, from + n) as unknown as number[],
    );
    return this.#slots[slot] = made;
  }
}

/** Items in the run of int opcodes bytes[from, end). */
function runLength(bytes: Uint8Array, from: number, end: number): number {
  let n = 0;
  for (let q = from; q < end; n++) q += bytes[q] === 0x4a ? 5 : bytes[q] === 0x4b ? 2 : 3;
  return n;
}

/**
 * Writes the ints of the run bytes[from, end) (one `intRunEnd` found) into
 * `into` from `at` (a list grows as it is written past its end); returns the
 * next index.
 */
function readIntRun(
  bytes: Uint8Array,
  view: DataView,
  from: number,
  end: number,
  into: Int32Array | PyValue[],
  at: number,
): number {
  for (let q = from; q < end;) {
    const op = bytes[q];
    if (op === 0x4a) {
      into[at++] = view.getInt32(q + 1, true);
      q += 5;
    } else if (op === 0x4b) {
      into[at++] = bytes[q + 1]!;
      q += 2;
    } else {
      into[at++] = view.getUint16(q + 1, true);
      q += 3;
    }
  }
  return at;
}

function resolveGlobal(module: string, name: string, where: string): Global {
  const global = lookupGlobal(module, name);
  if (!global) {
    throw new DataError(
      `${where} asks for the Python global ${module}.${name}; moetrace reads only tensors, dicts, lists, numbers and strings from a .pt file and never runs code from it.`,
    );
  }
  return global;
}

/** The persistent id torch writes for a storage: ("storage", StorageType, key, location, numel). */
function persistentStorage(pid: StackItem, where: string): StorageRef {
  const parts = Array.isArray(pid) ? (pid as StackItem[]) : [];
  const [tag, type, key, , numel] = parts;
  if (
    parts.length !== 5 || tag !== "storage" || !isGlobal(type!) || type.kind !== "storage_type" ||
    typeof key !== "string" || typeof numel !== "number" || !Number.isInteger(numel) || numel < 0
  ) {
    throw new DataError(
      `${where} has a persistent id that is not a torch storage ("storage", type, key, location, numel).`,
    );
  }
  return { kind: "storage", dtype: type.dtype, key, numel };
}

function reduce(callable: StackItem, args: StackItem, where: string): PyValue {
  if (!isGlobal(callable)) {
    throw new DataError(
      `${where} calls a ${describe(callable)}; only torch's tensor rebuild is called.`,
    );
  }
  if (!Array.isArray(args)) {
    throw new DataError(`${where} calls ${callable.kind} without an argument tuple.`);
  }
  if (callable.kind === "ordered_dict") {
    // OrderedDict() or OrderedDict([(key, value), ...]); torch writes the former for backward hooks.
    const dict = new Map<PyValue, PyValue>();
    if (args.length === 1 && Array.isArray(args[0])) {
      for (const pair of args[0] as PyValue[]) {
        if (!Array.isArray(pair) || pair.length !== 2) {
          throw new DataError(
            `${where} builds an OrderedDict from something other than (key, value) pairs.`,
          );
        }
        dict.set(pair[0]!, pair[1]!);
      }
    } else if (args.length !== 0) {
      throw new DataError(
        `${where} builds an OrderedDict with ${args.length} arguments; expected none or one list of pairs.`,
      );
    }
    return dict;
  }
  if (callable.kind === "rebuild_tensor") {
    // (storage, storage_offset, size, stride, [requires_grad, backward_hooks, [metadata]])
    const [storage, offset, size, stride] = args as unknown[];
    const counts = (v: unknown) =>
      Array.isArray(v) && v.every((x) => typeof x === "number" && Number.isInteger(x) && x >= 0);
    if (
      !isStorage(storage as StackItem) || typeof offset !== "number" || !Number.isInteger(offset) ||
      offset < 0 || !counts(size) || !counts(stride) ||
      (size as number[]).length !== (stride as number[]).length
    ) {
      throw new DataError(
        `${where} rebuilds a tensor from arguments other than (storage, offset, size, stride).`,
      );
    }
    const s = storage as StorageRef;
    return {
      kind: "tensor",
      dtype: s.dtype,
      storageKey: s.key,
      storageNumel: s.numel,
      offset,
      shape: size as number[],
      stride: stride as number[],
    };
  }
  throw new DataError(`${where} calls a torch storage type directly; torch.save never does.`);
}

function littleEndianSigned(bytes: Uint8Array): number | bigint {
  if (bytes.length === 0) return 0;
  let value = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[i]!);
  if (bytes[bytes.length - 1]! & 0x80) value -= 1n << BigInt(8 * bytes.length);
  return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER)
    ? Number(value)
    : value;
}

function isGlobal(item: StackItem): item is Global {
  return typeof item === "object" && item !== null && !Array.isArray(item) &&
    !(item instanceof Map) && !(item instanceof Uint8Array) &&
    ["rebuild_tensor", "ordered_dict", "storage_type"].includes((item as Global).kind);
}

function isStorage(item: StackItem): item is StorageRef {
  return typeof item === "object" && item !== null && (item as StorageRef).kind === "storage";
}

function describe(item: StackItem): string {
  if (item === MARK) return "MARK";
  if (isGlobal(item)) return `global (${item.kind})`;
  if (isStorage(item)) return "storage";
  if (item === null) return "None";
  if (Array.isArray(item) || item instanceof Int32Array) return "list";
  if (item instanceof Map) return "dict";
  if (item instanceof Uint8Array) return "bytes";
  if (isTensorRef(item)) return "tensor";
  return typeof item;
}
