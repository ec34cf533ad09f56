/**
 * Storage formats of expert weights (`--dtype`): bits per weight, scales and
 * zero points included, and the bytes of one expert.
 */
import { UsageError } from "../common/errors.ts";
import { didYouMean } from "../common/suggest.ts";

export interface DtypeInfo {
  name: string;
  /** Bits per weight including quantisation scales and zero points. */
  bitsPerWeight: number;
  description: string;
}

/**
 * Storage formats for expert weights. Grouped formats store one fp16 scale (and
 * for q3/q2 one fp16 zero point) per group; the overhead is included in
 * bitsPerWeight. int8/int4 follow GPTQ/AWQ-style groups of 128 with an fp16
 * scale; q3/q2 follow HQQ as used by Eliseev & Mazur (groups of 64, fp16 scale
 * and zero point).
 */
export const DTYPES: Record<string, DtypeInfo> = {
  fp32: { name: "fp32", bitsPerWeight: 32, description: "IEEE 754 single precision" },
  fp16: { name: "fp16", bitsPerWeight: 16, description: "IEEE 754 half precision" },
  bf16: { name: "bf16", bitsPerWeight: 16, description: "bfloat16" },
  int8: {
    name: "int8",
    bitsPerWeight: 8 + 16 / 128,
    description: "8-bit integers, one fp16 scale per group of 128 weights (8.125 bits/weight)",
  },
  int4: {
    name: "int4",
    bitsPerWeight: 4 + 16 / 128,
    description: "4-bit integers, one fp16 scale per group of 128 weights (4.125 bits/weight)",
  },
  mxfp4: {
    name: "mxfp4",
    bitsPerWeight: 4 + 8 / 32,
    description:
      "OCP microscaling FP4 (E2M1) with one 8-bit power-of-two scale per block of 32, as gpt-oss ships its experts (4.25 bits/weight)",
  },
  q3: {
    name: "q3",
    bitsPerWeight: 3 + 32 / 64,
    description:
      "3-bit grouped quantisation, fp16 scale and zero per group of 64 (3.5 bits/weight)",
  },
  q2: {
    name: "q2",
    bitsPerWeight: 2 + 32 / 64,
    description:
      "2-bit grouped quantisation, fp16 scale and zero per group of 64 (2.5 bits/weight)",
  },
};

export function dtypeInfo(name: string): DtypeInfo {
  const info = DTYPES[name];
  if (!info) {
    throw new UsageError(
      `--dtype takes ${Object.keys(DTYPES).join(", ")}, got "${name}".${
        didYouMean(name, Object.keys(DTYPES))
      }`,
    );
  }
  return info;
}

/** Bytes of one expert stored as `dtype`. */
export function expertBytes(expertParams: number, dtype: DtypeInfo): number {
  return Math.ceil(expertParams * dtype.bitsPerWeight / 8);
}
