/**
 * Reading a checkpoint's tensors and uploading them as the matmul kernels
 * read them (weights.ts and expert_weights.ts build the model from these):
 * every linear weight transposed to [in = K, out = N] so that a row of
 * activations times it is y = x Wᵀ as Hugging Face computes.
 *
 * Where K is a multiple of 64 (every real checkpoint, tiny-moe) a weight is a
 * texture read by kernels/matmul_tex.ts: rgba32f, or for a 16-bit checkpoint
 * whose linear weights share one dtype rgba16float (f16) or rg32uint (bf16,
 * unpacked in WGSL; no shader-f16 needed). Other sizes (the random fixtures)
 * are f32 storage buffers for kernels/matmul.ts.
 */
import { DataError } from "../common/errors.ts";
import { type Checkpoint, readFloat32 } from "./checkpoint.ts";
import type { GpuContext } from "./gpu.ts";
import { readTensorBytes, toFloat32 } from "./safetensors.ts";

/**
 * A linear weight stored transposed, [in = K, out = N] (× experts), either as
 * an rgba32f texture for matmul_tex.ts (K a multiple of 64, fits the texture
 * limits) or as a storage buffer for matmul.ts.
 */
export interface Linear {
  k: number;
  n: number;
  /** Texture texel format: f32 (rgba32float), f16 (rgba16float) or bf16 (rg32uint, unpacked in WGSL). */
  format: "f32" | "f16" | "bf16";
  view?: GPUTextureView; // [experts·K, ceil(N/4)] texels
  buffer?: GPUBuffer; // [experts, K, N]
  /**
   * A weight past one binding or texture (weight limits, gpu.ts): its pieces,
   * each [experts, kCount, nCount] of rows [kFirst, +kCount) and columns
   * [nFirst, +nCount) with its own view or buffer, in order of kFirst; the
   * whole then has neither. linear.ts runs one matmul per piece.
   */
  pieces?: LinearPiece[];
}

/** One block of a split weight: a whole Linear of its own, placed at (kFirst, nFirst) of the weight. */
export interface LinearPiece extends Linear {
  kFirst: number;
  nFirst: number;
}

/** The GPU texture format of each texel format (bf16: four values packed into the two u32 of an rg32uint texel). */
export const TEXEL_FORMAT = {
  f32: "rgba32float",
  f16: "rgba16float",
  bf16: "rg32uint",
} as const satisfies Record<Linear["format"], GPUTextureFormat>;

/** The matmul_tex weight variant of a texture weight. */
export function wFormat(w: Linear): "float" | "bf16" {
  return w.format === "bf16" ? "bf16" : "float";
}

/** Host weights: f32, or the raw bits of an f16/bf16 checkpoint (kept 16-bit on the texture path). */
export type HostMatrix = Float32Array | Uint16Array;

/** Whether activations with row length k go through textures (256-byte rows). */
export function texturePath(k: number): boolean {
  return k % 64 === 0;
}

/**
 * Uploads one [K, N] (× experts) weight: a texture when the context allows
 * them, `allowTexture` holds and K takes the texture path (rows padded to
 * whole texels when N % 4 ≠ 0); else an f32 buffer, widening 16-bit bits of
 * dtype `half`. A weight past the weight limits (gpu.ts `weightLimits`) is
 * split into pieces (`Linear.pieces`): on textures into blocks of at most
 * the texture side in rows (a multiple of 64) and 4 × the side in columns,
 * experts never split along K; in buffers into column blocks (a multiple of
 * 4) of one binding each, along K as well only when 4 columns exceed it.
 */
export function uploadLinear(
  ctx: GpuContext,
  label: string,
  data: HostMatrix,
  shape: { k: number; n: number; experts?: number },
  options: { allowTexture: boolean; half: "F16" | "BF16" | null },
): Linear {
  const { k, n, experts = 1 } = shape;
  const maxTex = ctx.weightLimits.texture, maxBinding = ctx.weightLimits.binding;
  const texture = ctx.textures && options.allowTexture && texturePath(k) &&
    (experts === 1 ? maxTex >= 64 : experts * k <= maxTex);
  let kBlock: number, nBlock: number;
  if (texture) {
    kBlock = experts === 1 ? Math.min(k, Math.floor(maxTex / 64) * 64) : k;
    nBlock = Math.min(n, 4 * maxTex);
  } else {
    const columns = Math.floor(maxBinding / (experts * k * 4) / 4) * 4;
    nBlock = Math.min(n, Math.max(4, columns));
    kBlock = Math.min(k, Math.max(1, Math.floor(maxBinding / (experts * nBlock * 4))));
    if (experts * kBlock * Math.min(nBlock, n) * 4 > maxBinding || (experts > 1 && kBlock < k)) {
      throw new DataError(
        `The weight ${label} ([${experts} × ${k} × ${n}]) cannot be split under a ${maxBinding}-byte binding: one expert's 4 columns need ${
          experts * k * 16
        } bytes.`,
      );
    }
  }
  if (kBlock >= k && nBlock >= n) {
    return uploadWhole(ctx, label, data, shape, texture, options.half);
  }
  const pieces: LinearPiece[] = [];
  for (let kFirst = 0; kFirst < k; kFirst += kBlock) {
    for (let nFirst = 0; nFirst < n; nFirst += nBlock) {
      const kc = Math.min(kBlock, k - kFirst), nc = Math.min(nBlock, n - nFirst);
      const block = new (data.constructor as new (n: number) => HostMatrix)(experts * kc * nc);
      for (let e = 0; e < experts; e++) {
        for (let r = 0; r < kc; r++) {
          const from = (e * k + kFirst + r) * n + nFirst;
          block.set(data.subarray(from, from + nc), (e * kc + r) * nc);
        }
      }
      const piece = uploadWhole(
        ctx,
        `${label} [${kFirst}+${kc}, ${nFirst}+${nc}]`,
        block,
        { k: kc, n: nc, experts },
        texture,
        options.half,
      );
      pieces.push({ ...piece, kFirst, nFirst });
    }
  }
  ctx.stats.splitWeights++;
  return { k, n, format: pieces[0]!.format, pieces };
}

/** One texture or buffer holding the whole [experts, K, N] weight. */
function uploadWhole(
  ctx: GpuContext,
  label: string,
  data: HostMatrix,
  shape: { k: number; n: number; experts?: number },
  texture: boolean,
  half: "F16" | "BF16" | null,
): Linear {
  const { k, n, experts = 1 } = shape;
  const width = Math.ceil(n / 4), height = experts * k;
  if (texture) {
    let texels = data;
    if (n % 4 !== 0) {
      texels = new (data.constructor as new (n: number) => HostMatrix)(height * width * 4);
      for (let r = 0; r < height; r++) texels.set(data.subarray(r * n, (r + 1) * n), r * width * 4);
    }
    const format = texels instanceof Float32Array ? "f32" : half === "BF16" ? "bf16" : "f16";
    const view = ctx.pool.texture(label, width, height, texels, false, TEXEL_FORMAT[format])
      .createView();
    return { k, n, format, view };
  }
  const f32 = data instanceof Float32Array ? data : toFloat32(
    new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    half ?? "F16",
    label,
  );
  return { k, n, format: "f32", buffer: ctx.pool.upload(label, f32) };
}

/**
 * [rows, cols] → [cols, rows], in tiles so that reads and writes stay in
 * cache; 16-bit data with an even row count is written two rows at a time as
 * one u32 (halving the stores): about 2× the plain loop's 60–140 MB/s for
 * bf16 checkpoints on the development machine, where loading is bound by it.
 */
export function transpose<T extends HostMatrix>(m: T, rows: number, cols: number): T {
  const out = new (m.constructor as new (n: number) => T)(m.length);
  const B = 32;
  if (m instanceof Uint16Array && rows % 2 === 0 && out.byteOffset === 0) {
    const o32 = new Uint32Array(out.buffer, 0, out.length / 2), half = rows / 2;
    for (let r0 = 0; r0 < rows; r0 += 2 * B) {
      const r1 = Math.min(rows, r0 + 2 * B);
      for (let c0 = 0; c0 < cols; c0 += B) {
        const c1 = Math.min(cols, c0 + B);
        for (let r = r0; r < r1; r += 2) {
          const a = r * cols, b = a + cols, h = r / 2;
          // little-endian: row r's value is the low half of the pair
          for (let c = c0; c < c1; c++) o32[c * half + h] = m[a + c]! | (m[b + c]! << 16);
        }
      }
    }
    return out;
  }
  for (let r0 = 0; r0 < rows; r0 += B) {
    const r1 = Math.min(rows, r0 + B);
    for (let c0 = 0; c0 < cols; c0 += B) {
      const c1 = Math.min(cols, c0 + B);
      for (let r = r0; r < r1; r++) {
        const a = r * cols;
        for (let c = c0; c < c1; c++) out[c * rows + r] = m[a + c]!;
      }
    }
  }
  return out;
}

/** a [m, r] @ b [r, n] on the CPU (weight-decomposed experts multiplied out on load). */
export function matmulCpu(
  a: Float32Array,
  b: Float32Array,
  m: number,
  r: number,
  n: number,
): Float32Array {
  const out = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < r; j++) {
      const aij = a[i * r + j]!;
      for (let c = 0; c < n; c++) out[i * n + c]! += aij * b[j * n + c]!;
    }
  }
  return out;
}

/** The 16-bit dtype every linear weight shares, or null (then all widen to f32). */
function halfDtype(ck: Checkpoint): "F16" | "BF16" | null {
  const dtypes = new Set<string>();
  for (const info of ck.tensors.values()) {
    if (info.shape.length === 2 && !info.name.includes("embed_tokens")) dtypes.add(info.dtype);
  }
  const [only] = dtypes;
  return dtypes.size === 1 && (only === "F16" || only === "BF16") ? only : null;
}

/** Reads tensors of one checkpoint and uploads them, 16-bit linear weights kept 16-bit where they can be. */
export class WeightReader {
  readonly half: "F16" | "BF16" | null;
  /** The host array type of linear weights: f32, or the raw 16-bit bits. */
  readonly Host: new (n: number) => HostMatrix;

  constructor(readonly ctx: GpuContext, readonly ck: Checkpoint) {
    // 16-bit checkpoints keep their linear weights 16-bit on the texture path when every one shares the dtype.
    this.half = halfDtype(ck);
    this.Host = (this.half === null ? Float32Array : Uint16Array) as new (n: number) => HostMatrix;
  }

  /** A tensor widened to f32 (norms, biases, embeddings, decomposed factors). */
  f32(name: string): Promise<Float32Array> {
    return readFloat32(this.ck, name);
  }

  /** A linear weight as stored, [out, in]: f32 or the raw bits of the shared 16-bit dtype. */
  async raw(name: string): Promise<HostMatrix> {
    if (this.half === null) return await this.f32(name);
    const bytes = await readTensorBytes(this.ck.tensors.get(name)!);
    return new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
  }

  /** The last tensor read through `cached` (fused expert tensors are sliced once per expert). */
  #cache: { name: string; data: HostMatrix } | null = null;

  /** `raw(name)`, kept until another name is asked for. */
  async cached(name: string): Promise<HostMatrix> {
    if (this.#cache?.name !== name) this.#cache = { name, data: await this.raw(name) };
    return this.#cache.data;
  }

  /** A linear weight [out, in] on disk, transposed to [in, out]. */
  async transposed(name: string, out: number, inp: number): Promise<HostMatrix> {
    return transpose(await this.raw(name), out, inp);
  }

  /** Uploads [K, N] (× experts) host data; `allowTexture` false keeps it in a storage buffer. */
  upload(
    label: string,
    data: HostMatrix,
    shape: { k: number; n: number; experts?: number },
    allowTexture = true,
  ): Linear {
    return uploadLinear(this.ctx, label, data, shape, { allowTexture, half: this.half });
  }

  /** Reads `name` ([out, in] on disk) and uploads it as [in, out]. */
  async linear(label: string, name: string, out: number, inp: number): Promise<Linear> {
    return this.upload(label, await this.transposed(name, out, inp), { k: inp, n: out });
  }

  /**
   * A SwiGLU pair (gate and up [H, F]) read and uploaded as `linear` does. The
   * fused SwiGLU epilogue needs whole dot products, so a pair the texture
   * limit would split along H is refused in one sentence.
   */
  async swigluPair(
    label: string,
    names: { gate: string; up: string },
    f: number,
    h: number,
  ): Promise<{ w1: Linear; w3: Linear }> {
    const w1 = await this.linear(`${label} gate`, names.gate, f, h);
    if (w1.pieces?.some((p) => p.kFirst > 0)) {
      throw new DataError(
        `${this.ck.dir}: the ${label} gate and up weights have ${h} input rows, more than the ${this.ctx.weightLimits.texture}-texel texture limit the engine assumes, and a fused SwiGLU cannot be split along its input; this needs a device whose textures are at least ${h} texels on a side.`,
      );
    }
    return { w1, w3: await this.linear(`${label} up`, names.up, f, h) };
  }

  /** An f32 vector (norm weight, bias) into a storage buffer. */
  async vector(label: string, name: string): Promise<GPUBuffer> {
    return this.ctx.pool.upload(label, await this.f32(name));
  }
}
