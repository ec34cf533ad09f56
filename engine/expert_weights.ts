/**
 * An MoE layer's weights on the GPU: the router (and its biases), the routed
 * experts in chunks of consecutive experts (or kept in host memory for an
 * offloader), and the shared experts.
 *
 * With `hostExperts` the routed experts stay in host memory (`HostExperts`),
 * each matrix laid out as one slot of the GPU copy, for offload.ts.
 */
import { DataError } from "../common/errors.ts";
import { moeNames } from "./checkpoint.ts";
import type { GpuContext } from "./gpu.ts";
import { type Mxfp4Chunk, uploadMxfp4Experts } from "./mxfp4_weights.ts";
import { toFloat32 } from "./safetensors.ts";
import {
  type HostMatrix,
  type Linear,
  matmulCpu,
  texturePath,
  transpose,
  type WeightReader,
} from "./weight_reader.ts";

/** Consecutive routed experts of one layer in one texture or buffer per matrix. */
export interface ExpertChunk {
  first: number; // first expert held
  count: number;
  w1: Linear; // [count, H, F]   gate projection (through SiLU)
  w3: Linear; // [count, H, F]   up projection
  w2: Linear; // [count, F, H]   down projection
}

/**
 * The routed experts of one MoE layer kept in host memory instead of on the
 * GPU (`loadModel`'s `hostExperts`), each expert's matrix laid out exactly as
 * one slot of the GPU copy, so that loading an expert into a slot
 * (offload.ts) is one write per matrix with no conversion.
 */
export interface HostExperts extends ExpertLayout {
  w1: HostMatrix[]; // [E] × [H, F]   gate projection
  w3: HostMatrix[]; // [E] × [H, F]   up projection
  w2: HostMatrix[]; // [E] × [F, H]   down projection
}

/** How a routed expert's GPU copy is laid out; an offloader's slots take the same layout. */
export interface ExpertLayout {
  /** Whether GPU copies are textures (matmul_tex.ts; H and F multiples of 64, so no row padding) or f32 storage buffers. */
  texture: boolean;
  /** Texel format on the texture path (16-bit checkpoints stay 16-bit); "f32" on the storage path. */
  format: "f32" | "f16" | "bf16";
}

/** Pool group (BufferPool.grouped) of the GPU memory holding routed expert weights: all of them, or the offloader's slots. */
export const ROUTED_EXPERTS = "routed experts";

/** One MoE layer's router weights (router.ts): the matmul, and the biases its variant uses. */
export interface RouterWeights {
  /** [H, E] */
  weight: Linear;
  /** [E] added to the logits (Router.logitBias). */
  logitBias?: GPUBuffer;
  /** [E] added to the scores for choosing (Router.selection.bias). */
  selectionBias?: GPUBuffer;
}

/** An MoE layer's weights. */
export interface MoeWeights {
  router: RouterWeights; // [H, E] and its biases
  experts?: ExpertChunk[]; // on the GPU, unless the model was loaded with hostExperts
  hostExperts?: HostExperts;
  mxfp4?: Mxfp4Chunk[]; // gpt_oss: MXFP4 blocks and scales instead of `experts`
  shared?: { w1: Linear; w3: Linear; w2: Linear; gate?: Linear }; // [H, Fs] ×2, [Fs, H], [H, 1]
}

/**
 * Experts per chunk of [H, F] matrices: as many as fit one storage binding,
 * and with `textureBound` as many [K, N/4] slabs as stack under the texture
 * height limit (the weight limits, gpu.ts). offload.ts chunks its slots the
 * same way. One expert past a binding is a chunk of its own whose matrices
 * uploadLinear splits into column pieces (storage path only: experts larger
 * than a texture take the storage path).
 */
export function expertsPerChunk(
  ctx: GpuContext,
  shape: { h: number; f: number },
  textureBound: boolean,
): number {
  const { h, f } = shape;
  const maxTex = ctx.weightLimits.texture;
  return Math.max(
    1,
    Math.min(
      Math.floor(ctx.weightLimits.binding / (h * f * 4)),
      textureBound ? Math.floor(maxTex / Math.max(h, f)) : Infinity,
    ),
  );
}

/** An MoE layer's router [H, E] (and biases), routed experts (GPU chunks or host copies) and shared experts. */
export async function uploadMoe(
  r: WeightReader,
  l: number,
  hostExperts: boolean,
): Promise<MoeWeights> {
  const c = r.ck.config;
  const h = c.hiddenSize;
  const names = moeNames(c, l);
  const router: RouterWeights = {
    weight: await r.linear(`L${l} router`, names.router, c.numExperts, h),
  };
  if (names.logitBias) router.logitBias = await r.vector(`L${l} router bias`, names.logitBias);
  if (names.selectionBias) {
    router.selectionBias = await r.vector(`L${l} selection bias`, names.selectionBias);
  }
  const moe: MoeWeights = { router };
  if (c.expertFormat === "mxfp4") {
    if (hostExperts) {
      throw new DataError(
        `${r.ck.dir} has MXFP4 experts, which cannot be kept in host memory yet (for --offload or --gpu-memory); run it with its experts on the GPU.`,
      );
    }
    moe.mxfp4 = await uploadMxfp4Experts(r, l, ROUTED_EXPERTS);
  } else if (hostExperts) moe.hostExperts = await readHostExperts(r, l);
  else moe.experts = await uploadExperts(r, l);
  if (names.shared) {
    const s = names.shared, fs = c.sharedFfn;
    const pair = { gate: s + ".gate_proj.weight", up: s + ".up_proj.weight" };
    moe.shared = {
      ...await r.swigluPair(`L${l} shared`, pair, fs, h),
      w2: await r.linear(`L${l} shared down`, s + ".down_proj.weight", h, fs),
    };
    if (names.sharedGate) {
      // [1, H] on disk is already [H, 1] transposed
      moe.shared.gate = r.upload(`L${l} shared gate`, await r.f32(names.sharedGate), {
        k: h,
        n: 1,
      });
    }
  }
  return moe;
}

/**
 * One expert's matrix as [in, out]: from its own [out, in] tensor, from
 * granitemoe's fused [E, 2F, H] (gate rows, then up rows) and [E, H, F]
 * tensors, or for weight-decomposed experts u [out, r] @ v [r, in] in f32.
 */
async function expertMatrix(
  r: WeightReader,
  l: number,
  e: number,
  which: "gate" | "up" | "down",
): Promise<HostMatrix> {
  const c = r.ck.config, names = moeNames(c, l);
  const h = c.hiddenSize, f = c.expertFfn, rank = c.decomposedRank;
  const [out, inp] = which === "down" ? [h, f] : [f, h];
  if (c.expertFormat === "fused") {
    const all = await r.cached(which === "down" ? names.down : names.gateUp);
    const rows = which === "down" ? h : 2 * f; // rows of one expert in the fused tensor
    const first = e * rows * inp + (which === "up" ? f * inp : 0);
    return transpose(all.subarray(first, first + out * inp) as HostMatrix, out, inp);
  }
  const base = names.expert(e, which);
  const m: HostMatrix = rank === null
    ? await r.raw(base + ".weight")
    : matmulCpu(await r.f32(base + ".u"), await r.f32(base + ".v"), out, rank, inp);
  return transpose(m, out, inp);
}

/** Experts use textures only when all three matrices can (one tile size for the group). */
function expertTexture(r: WeightReader): boolean {
  const { hiddenSize: h, expertFfn: f } = r.ck.config;
  return texturePath(h) && texturePath(f) &&
    Math.max(h, f) <= r.ctx.weightLimits.texture;
}

/** Layer l's routed experts on the GPU, in chunks of consecutive experts (pool group ROUTED_EXPERTS). */
async function uploadExperts(r: WeightReader, l: number): Promise<ExpertChunk[]> {
  const c = r.ck.config, h = c.hiddenSize, f = c.expertFfn;
  const texture = expertTexture(r);
  const perChunk = expertsPerChunk(r.ctx, { h, f }, texture);
  // decomposed experts are multiplied out in f32
  const Stack = c.decomposedRank === null ? r.Host : Float32Array;
  const chunks: ExpertChunk[] = [];
  for (let first = 0; first < c.numExperts; first += perChunk) {
    const count = Math.min(perChunk, c.numExperts - first);
    const w1 = new Stack(count * h * f), w3 = new Stack(count * h * f);
    const w2 = new Stack(count * h * f);
    for (let i = 0; i < count; i++) {
      w1.set(await expertMatrix(r, l, first + i, "gate"), i * h * f);
      w3.set(await expertMatrix(r, l, first + i, "up"), i * h * f);
      w2.set(await expertMatrix(r, l, first + i, "down"), i * h * f);
    }
    const label = `L${l} experts ${first}+`;
    chunks.push(r.ctx.pool.grouped(ROUTED_EXPERTS, () => ({
      first,
      count,
      w1: r.upload(`${label} gate`, w1, { k: h, n: f, experts: count }, texture),
      w3: r.upload(`${label} up`, w3, { k: h, n: f, experts: count }, texture),
      w2: r.upload(`${label} down`, w2, { k: f, n: h, experts: count }, texture),
    })));
  }
  return chunks;
}

/**
 * Layer l's routed experts kept in host memory, nothing of them on the GPU:
 * each as its slot copy will hold it (uploadLinear's choice of texture and
 * format: 16-bit bits on the texture path, else widened to f32).
 */
async function readHostExperts(r: WeightReader, l: number): Promise<HostExperts> {
  const c = r.ck.config;
  const texture = r.ctx.textures && expertTexture(r);
  const slotCopy = (m: HostMatrix, label: string): HostMatrix =>
    texture || m instanceof Float32Array
      ? m
      : toFloat32(new Uint8Array(m.buffer, m.byteOffset, m.byteLength), r.half ?? "F16", label);
  const host: HostExperts = { texture, format: "f32", w1: [], w3: [], w2: [] };
  for (let e = 0; e < c.numExperts; e++) {
    const w1 = await expertMatrix(r, l, e, "gate");
    if (texture && !(w1 instanceof Float32Array)) host.format = r.half === "BF16" ? "bf16" : "f16";
    host.w1.push(slotCopy(w1, `L${l} expert ${e} gate`));
    host.w3.push(slotCopy(await expertMatrix(r, l, e, "up"), `L${l} expert ${e} up`));
    host.w2.push(slotCopy(await expertMatrix(r, l, e, "down"), `L${l} expert ${e} down`));
  }
  return host;
}
