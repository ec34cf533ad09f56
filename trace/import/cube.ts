/**
 * Nested JSON lists of expert ids ([tokens][layers][k] and the like) read
 * into one flat Int32Array, every length and value checked, with the path of
 * the first bad entry in the error.
 */
import { DataError } from "../../common/errors.ts";

export interface IdCube {
  /** Row-major values. */
  data: Int32Array;
  /** Lengths of the three axes. */
  dims: [number, number, number];
}

/**
 * Reads a three-level nested list of integers. `dims` fixes the lengths of
 * the inner two axes when given (null: taken from the first entry).
 * `name` is the field's name in messages, e.g. `choices[0].routed_experts`.
 */
export function readIdCube(
  value: unknown,
  where: string,
  name: string,
  inner: [number, number] | null,
): IdCube {
  if (!Array.isArray(value)) {
    throw new DataError(
      `${where} field "${name}" must be a nested list [tokens][layers][k] of expert ids.`,
    );
  }
  const T = value.length;
  let [A, B] = inner ?? [-1, -1];
  if (A < 0 && T > 0) {
    const first = value[0];
    A = Array.isArray(first) ? first.length : 0;
    B = Array.isArray(first) && Array.isArray(first[0]) ? (first[0] as unknown[]).length : 0;
    if (A === 0 || B === 0) {
      throw new DataError(
        `${where} field "${name}[0]" must be a non-empty list of non-empty lists.`,
      );
    }
  }
  if (A < 0) [A, B] = [0, 0];
  const data = new Int32Array(T * A * B);
  let i = 0;
  for (let t = 0; t < T; t++) {
    const row = value[t];
    if (!Array.isArray(row) || row.length !== A) {
      throw new DataError(
        `${where} field "${name}[${t}]" must hold ${A} lists, got ${
          Array.isArray(row) ? row.length : JSON.stringify(row)?.slice(0, 40)
        }.`,
      );
    }
    for (let a = 0; a < A; a++) {
      const leaf = row[a];
      if (!Array.isArray(leaf) || leaf.length !== B) {
        throw new DataError(
          `${where} field "${name}[${t}][${a}]" must list ${B} values, got ${
            JSON.stringify(leaf)?.slice(0, 60)
          }.`,
        );
      }
      for (let b = 0; b < B; b++) {
        const v = leaf[b];
        if (typeof v !== "number" || !Number.isInteger(v) || v < -1 || v > 0x7fffffff) {
          throw new DataError(
            `${where} field "${name}[${t}][${a}][${b}]" must be an expert id, got ${
              JSON.stringify(v)
            }.`,
          );
        }
        data[i++] = v;
      }
    }
  }
  return { data, dims: [T, A, B] };
}

/** A list of token ids, or null when `value` is absent. */
export function readTokenIds(value: unknown, where: string, name: string): Uint32Array | null {
  if (value === undefined || value === null) return null;
  if (!Array.isArray(value)) {
    throw new DataError(`${where} field "${name}" must be a list of token ids.`);
  }
  const out = new Uint32Array(value.length);
  value.forEach((v, i) => {
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0xffffffff) {
      throw new DataError(
        `${where} field "${name}[${i}]" must be a non-negative integer, got ${JSON.stringify(v)}.`,
      );
    }
    out[i] = v;
  });
  return out;
}

/**
 * Copies `rows` rows of a [rows][L][K] id cube into trace layout [rows][M][K]
 * keeping layer positions `keep`, checking ids: every kept id in 0..E−1 (E
 * unknown: any id ≥ 0), no −1 in a kept layer, no expert chosen twice.
 */
export function keptExperts(
  source: Int32Array,
  rows: number,
  layerAxis: number,
  k: number,
  keep: readonly number[],
  numExperts: number | undefined,
  describe: (row: number, layer: number) => string,
): Uint16Array {
  const M = keep.length;
  const out = new Uint16Array(rows * M * k);
  for (let r = 0; r < rows; r++) {
    for (let m = 0; m < M; m++) {
      const l = keep[m]!;
      const from = (r * layerAxis + l) * k;
      const to = (r * M + m) * k;
      for (let j = 0; j < k; j++) {
        const e = source[from + j]!;
        if (e < 0 || e >= (numExperts ?? 65535)) {
          throw new DataError(
            `${describe(r, l)} holds expert ${e}, expected an id in 0..${
              (numExperts ?? 65535) - 1
            }${
              e < 0
                ? " (−1 marks a layer without routing; is --model-config's layer list right?)"
                : ""
            }.`,
          );
        }
        for (let q = 0; q < j; q++) {
          if (out[to + q] === e) {
            throw new DataError(
              `${describe(r, l)} chooses expert ${e} twice; top-k experts must differ.`,
            );
          }
        }
        out[to + j] = e;
      }
    }
  }
  return out;
}
