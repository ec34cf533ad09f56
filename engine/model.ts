/**
 * An MoE checkpoint on WebGPU, with every router decision logged on the GPU.
 *
 * API
 * - `loadModel(dir, { maxBatchTokens })` validates the checkpoint
 *   (checkpoint.ts), creates the device (a DataError naming the fix when there
 *   is no adapter), uploads the weights and allocates the run state once for
 *   `maxBatchTokens` tokens (default 4096, lowered so that no activation
 *   exceeds one binding or texture). f16 and bf16 linear weights stay 16-bit
 *   in textures on the texture path (rgba16float, or rg32uint unpacked in
 *   WGSL for bf16; no shader-f16 needed); norms, embeddings, weights on the
 *   storage path and multiplied-out decomposed experts are widened to f32.
 *   With `hostExperts` the routed experts stay in host memory (offload.ts
 *   uploads them into its slots); `route`, `generate`, `logits` and `profile`
 *   throw (their forward would need the experts on the GPU).
 * - `route(sequences, { probs, lookahead })`: teacher-forced router logs.
 *   Sequences are packed into passes of at most maxBatchTokens tokens, each
 *   sequence from position 0 with its own keys and values; one readback per
 *   pass, so a call whose sequences fit in maxBatchTokens reads back once. The
 *   pass stops after the last MoE layer's router (nothing after it changes a
 *   router decision), so no logits are computed.
 * - `generate(prompt, options)`: prompt prefill, then a decode loop whose
 *   token choice (sample.ts) writes the next token id into the GPU token
 *   buffer: no readback per token; one at the end (or every 32 tokens when
 *   `stopIds` are given, to stop early). The returned tokens include a stop
 *   token that ended generation. prompt + maxNewTokens ≤ maxBatchTokens.
 * - `logits(sequence)`: final logits [T, V] of one teacher-forced sequence.
 *
 * Router log definitions (per token t, MoE layer index m = position of layer l in `moe_layers`):
 * - experts[t, m, :] the k experts layer l uses, in descending probability;
 *   weights[t, m, :] the gate weights applied to their outputs (renormalised
 *   top-k probabilities for mixtral and `norm_topk_prob` models, the raw
 *   probabilities otherwise); probs[t, m, :] = softmax(router logits) in f32.
 * - spec[t, m, d − 1, :]: the top-k of layer (l + d)'s router applied to the
 *   input of layer l's router, i.e. post_attention_layernorm_l(h), where h is
 *   the residual stream after layer l's attention — exactly the vector layer
 *   l's own router sees. 65535 where layer l + d does not exist or has no MoE
 *   block (counted in layers, not MoE layers).
 *
 * The forward (`recordForward`) reads as llama2.c's: embedding, then per layer
 * RMSNorm → fused q|k|v → q/k norm, clamp, RoPE, KV store → attention → o_proj
 * added to the residual → RMSNorm → router → grouped experts (+ shared expert)
 * added to the residual, or a dense SwiGLU; final RMSNorm → lm_head.
 *
 * Two kernel paths, same results (model_test.ts): where a row length K is a
 * multiple of 64 (every real checkpoint and tiny-moe), weights live in
 * rgba32f textures and activations are written or copied into textures, read
 * by matmul_tex.ts; K/V are mirrored into textures for attention. On lavapipe
 * a storage-buffer access costs ~70 cycles per float while texel loads are
 * vector code, which made this 15× faster. Other sizes (the random fixtures)
 * use the storage-buffer kernels, which the HF goldens pin.
 *
 * Decode (T < 16 rows) uses 1-row tiles; prefill 64-row tiles; expert
 * grouping (moe_group.ts) writes a tile list whose length is bounded by
 * ceil(T·k / tile) + E, so no count is read back.
 */
import { basename } from "node:path";
import { DataError } from "../common/errors.ts";
import type { ModelFacts } from "../trace/mod.ts";
import { type Checkpoint, expertNames, openCheckpoint, readFloat32 } from "./checkpoint.ts";
import { readTensorBytes, toFloat32 } from "./safetensors.ts";
import { expertParams, type ModelConfig, moeLayers } from "./config.ts";
import { createGpuContext, type GpuContext, readBack, Recorder } from "./gpu.ts";
import { embedding } from "./kernels/embedding.ts";
import { rmsnorm } from "./kernels/rmsnorm.ts";
import {
  matmul,
  type MatmulArgs,
  matmulFlops,
  type MatmulVariant,
  tileRows,
} from "./kernels/matmul.ts";
import { DECODE, matmulTex, PREFILL, texTileRows } from "./kernels/matmul_tex.ts";
import { qkvPrepare, qkvPrepareTex } from "./kernels/qkv_prepare.ts";
import { attention, attentionFlops } from "./kernels/attention.ts";
import { kvTexture } from "./kernels/kv_texture.ts";
import { routerTopK } from "./kernels/router_topk.ts";
import { maxTiles, moeGroup } from "./kernels/moe_group.ts";
import { moeCombine } from "./kernels/moe_combine.ts";
import { sample } from "./kernels/sample.ts";

export interface RouterLog {
  /** [T, M, k] chosen experts, first choice first. */
  experts: Uint16Array;
  /** [T, M, k] gate weights actually applied. */
  weights: Float32Array;
  /** [T, M, E] softmax of the router logits (when asked). */
  probs?: Float32Array;
  /** [T, M, D, k] top-k of layer l+d's router on layer l's router input; 65535 where l+d has no MoE layer. */
  spec?: Uint16Array;
}

export interface RouteOptions {
  probs: boolean;
  lookahead: number;
}

export interface GenerateOptions extends RouteOptions {
  maxNewTokens: number;
  temperature: number;
  seed: number;
  stopIds?: number[];
}

export interface MoeModel {
  readonly facts: ModelFacts;
  readonly vocabSize: number;
  readonly config: ModelConfig;
  readonly maxBatchTokens: number;
  route(sequences: Uint32Array[], options: RouteOptions): Promise<RouterLog[]>;
  generate(
    prompt: Uint32Array,
    options: GenerateOptions,
  ): Promise<{ tokens: Uint32Array; promptLength: number; log: RouterLog }>;
  logits(sequence: Uint32Array): Promise<Float32Array>;
  /** FLOPs of a forward over sequences of these lengths (`route`: up to the last router; else to logits of every token). */
  flops(lengths: number[], upTo: "route" | "logits"): number;
  /** Bytes of GPU buffers and textures this model holds (weights, run state, logs; an offloader's slots). */
  gpuBytes(): number;
  /** The part of `gpuBytes` holding routed expert weights: every expert, or with `hostExperts` an offloader's slots. */
  expertGpuBytes(): number;
  /** GPU → CPU readbacks (mapAsync) since loading: one per route pass, one per generate call (+1 per 32 tokens with stopIds). */
  readbacks(): number;
  /**
   * GPU milliseconds per kernel and per section ("layer": norms, attention,
   * routers, shared/dense FFN; "experts": grouping, routed experts, combine;
   * "other": embedding, final norm, lm_head, sampling) of one `route` pass over
   * these sequences, or of one decode step after them (bench, calibration;
   * needs timestamp-query; each dispatch in its own pass, so slower than a run).
   */
  profile(
    sequences: Uint32Array[],
    mode: "route" | "decode",
  ): Promise<{ kernels: Map<string, number>; sections: Map<string, number> }>;
  destroy(): void;
}

// ---------------------------------------------------------------- weights

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
}

/** The matmul_tex weight variant of a texture weight. */
function wFormat(w: Linear): "float" | "bf16" {
  return w.format === "bf16" ? "bf16" : "float";
}

/** Whether activations with row length k go through textures (256-byte rows). */
function texturePath(k: number): boolean {
  return k % 64 === 0;
}

/** Host weights: f32, or the raw bits of an f16/bf16 checkpoint (kept 16-bit on the texture path). */
export type HostMatrix = Float32Array | Uint16Array;

function uploadLinear(
  ctx: GpuContext,
  label: string,
  data: HostMatrix,
  k: number,
  n: number,
  experts = 1,
  allowTexture = true,
  half: "F16" | "BF16" | null = null,
): Linear {
  const width = Math.ceil(n / 4), height = experts * k;
  const maxTex = ctx.device.limits.maxTextureDimension2D;
  if (ctx.textures && allowTexture && texturePath(k) && width <= maxTex && height <= maxTex) {
    let texels = data;
    if (n % 4 !== 0) {
      texels = new (data.constructor as new (n: number) => HostMatrix)(height * width * 4);
      for (let r = 0; r < height; r++) texels.set(data.subarray(r * n, (r + 1) * n), r * width * 4);
    }
    const format = texels instanceof Float32Array ? "f32" : half === "BF16" ? "bf16" : "f16";
    const texFormat = format === "f32"
      ? "rgba32float"
      : format === "f16"
      ? "rgba16float"
      : "rg32uint";
    const view = ctx.pool.texture(label, width, height, texels, false, texFormat).createView();
    return { k, n, format, view };
  }
  const f32 = data instanceof Float32Array ? data : toFloat32(
    new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    half ?? "F16",
    label,
  );
  return { k, n, format: "f32", buffer: ctx.pool.upload(label, f32) };
}

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
export interface HostExperts {
  /** Whether GPU copies are textures (matmul_tex.ts; H and F multiples of 64, so no row padding) or f32 storage buffers. */
  texture: boolean;
  /** Texel format on the texture path (16-bit checkpoints stay 16-bit); "f32" on the storage path. */
  format: "f32" | "f16" | "bf16";
  w1: HostMatrix[]; // [E] × [H, F]   gate projection
  w3: HostMatrix[]; // [E] × [H, F]   up projection
  w2: HostMatrix[]; // [E] × [F, H]   down projection
}

/** Pool group (BufferPool.grouped) of the GPU memory holding routed expert weights: all of them, or the offloader's slots. */
export const ROUTED_EXPERTS = "routed experts";

export interface LayerWeights {
  attnNorm: GPUBuffer; // [H]
  wqkv: Linear; // [H, (nq + 2 nkv) d]   q | k | v columns
  bqkv?: GPUBuffer; // [(nq + 2 nkv) d]
  qNorm?: GPUBuffer; // [nq d] (whole) or [d] (per head)
  kNorm?: GPUBuffer; // [nkv d] or [d]
  wo: Linear; // [nq d, H]
  postNorm: GPUBuffer; // [H]
  router?: Linear; // [H, E]
  experts?: ExpertChunk[]; // on the GPU, unless the model was loaded with hostExperts
  hostExperts?: HostExperts;
  shared?: { w1: Linear; w3: Linear; w2: Linear; gate: Linear }; // [H, Fs] ×2, [Fs, H], [H, 1]
  dense?: { w1: Linear; w3: Linear; w2: Linear }; // [H, Fd] ×2, [Fd, H]
}

export interface Weights {
  embed: { buffer: GPUBuffer; first: number; count: number }[]; // row chunks of [V, H]
  layers: LayerWeights[];
  norm: GPUBuffer; // [H]
  lmHead: { w: Linear; first: number; count: number }[]; // column chunks of [H, V]
  rope: GPUBuffer; // [positions, d/2, 2] cos, sin
}

/** [rows, cols] → [cols, rows]. */
function transpose<T extends HostMatrix>(m: T, rows: number, cols: number): T {
  const out = new (m.constructor as new (n: number) => T)(m.length);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[c * rows + r] = m[r * cols + c]!;
  }
  return out;
}

/** a [m, r] @ b [r, n] on the CPU (weight-decomposed experts multiplied out on load). */
function matmulCpu(
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

/** HF default RoPE in f32: inv_freq = 1/θ^(2i/d); freq = pos·inv_freq; cos, sin of it. */
function ropeTable(theta: number, d: number, positions: number): Float32Array {
  const half = d / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    inv[i] = Math.fround(1 / Math.fround(Math.pow(theta, Math.fround((2 * i) / d))));
  }
  const out = new Float32Array(positions * d);
  for (let p = 0; p < positions; p++) {
    for (let i = 0; i < half; i++) {
      const f = Math.fround(p * inv[i]!);
      out[p * d + 2 * i] = Math.cos(f);
      out[p * d + 2 * i + 1] = Math.sin(f);
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

async function uploadWeights(
  ctx: GpuContext,
  ck: Checkpoint,
  positions: number,
  hostExperts = false,
): Promise<Weights> {
  const c = ck.config;
  const pool = ctx.pool;
  const h = c.hiddenSize, d = c.headDim, q = c.numHeads * d, kv = c.numKvHeads * d;
  const read = (name: string) => readFloat32(ck, name);
  // 16-bit checkpoints keep their linear weights 16-bit on the texture path when every one shares the dtype.
  const half = halfDtype(ck);
  const readLin = async (name: string): Promise<HostMatrix> => {
    if (half === null) return await read(name);
    const bytes = await readTensorBytes(ck.tensors.get(name)!);
    return new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
  };
  const Host = (half === null ? Float32Array : Uint16Array) as new (n: number) => HostMatrix;
  const linear = async (name: string, out: number, inp: number) =>
    transpose(await readLin(name), out, inp);
  const up = (
    label: string,
    data: HostMatrix,
    k: number,
    n: number,
    experts = 1,
    allow = true,
  ): Linear => uploadLinear(ctx, label, data, k, n, experts, allow, half);

  const embedRows = await read("model.embed_tokens.weight");
  const rowsPerChunk = Math.max(1, Math.floor(ctx.maxBinding / (h * 4)));
  const embed = [];
  for (let first = 0; first < c.vocabSize; first += rowsPerChunk) {
    const count = Math.min(rowsPerChunk, c.vocabSize - first);
    embed.push({
      buffer: pool.upload(`embed ${first}`, embedRows.subarray(first * h, (first + count) * h)),
      first,
      count,
    });
  }
  const names = expertNames(c);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    const wq = await readLin(p + "self_attn.q_proj.weight");
    const wk = await readLin(p + "self_attn.k_proj.weight");
    const wv = await readLin(p + "self_attn.v_proj.weight");
    const qkvRows = new Host((q + 2 * kv) * h);
    qkvRows.set(wq, 0);
    qkvRows.set(wk, q * h);
    qkvRows.set(wv, (q + kv) * h);
    const layer: LayerWeights = {
      attnNorm: pool.upload(`L${l} input norm`, await read(p + "input_layernorm.weight")),
      wqkv: up(`L${l} qkv`, transpose(qkvRows, q + 2 * kv, h), h, q + 2 * kv),
      wo: up(`L${l} o`, await linear(p + "self_attn.o_proj.weight", h, q), q, h),
      postNorm: pool.upload(`L${l} post norm`, await read(p + "post_attention_layernorm.weight")),
    };
    if (c.qkvBias) {
      const b = new Float32Array(q + 2 * kv);
      b.set(await read(p + "self_attn.q_proj.bias"), 0);
      b.set(await read(p + "self_attn.k_proj.bias"), q);
      b.set(await read(p + "self_attn.v_proj.bias"), q + kv);
      layer.bqkv = pool.upload(`L${l} qkv bias`, b);
    }
    if (c.qkNorm !== "none") {
      layer.qNorm = pool.upload(`L${l} q norm`, await read(p + "self_attn.q_norm.weight"));
      layer.kNorm = pool.upload(`L${l} k norm`, await read(p + "self_attn.k_norm.weight"));
    }
    if (!c.isMoe[l]) {
      const f = c.denseFfn;
      layer.dense = {
        w1: up(
          `L${l} dense gate`,
          await linear(p + "mlp.gate_proj.weight", f, h),
          h,
          f,
        ),
        w3: up(`L${l} dense up`, await linear(p + "mlp.up_proj.weight", f, h), h, f),
        w2: up(
          `L${l} dense down`,
          await linear(p + "mlp.down_proj.weight", h, f),
          f,
          h,
        ),
      };
      layers.push(layer);
      continue;
    }
    const b = p + names.block + ".";
    const routerT = await linear(b + "gate.weight", c.numExperts, h);
    layer.router = up(`L${l} router`, routerT, h, c.numExperts);
    const f = c.expertFfn, r = c.decomposedRank;
    // One expert matrix, [out, in] on disk, as [in, out]; decomposed ones are u @ v.
    const expertMatrix = async (e: number, which: string, out: number, inp: number) => {
      const base = `${b}experts.${e}.${which}`;
      const m: HostMatrix = r === null
        ? await readLin(base + ".weight")
        : matmulCpu(await read(base + ".u"), await read(base + ".v"), out, r, inp);
      return transpose(m, out, inp);
    };
    // Experts use textures only when all three matrices can (one tile size for the group).
    const maxTex = ctx.device.limits.maxTextureDimension2D;
    const expertTex = texturePath(h) && texturePath(f) && Math.max(h, f) <= maxTex;
    const perChunk = Math.max(
      1,
      Math.min(
        Math.floor(ctx.maxBinding / (h * f * 4)),
        expertTex ? Math.floor(maxTex / Math.max(h, f)) : Infinity,
      ),
    );
    if (hostExperts) {
      // Nothing of the routed experts goes to the GPU: each is kept as its slot
      // copy will hold it (uploadLinear's choice of texture and format).
      const texture = ctx.textures && expertTex;
      const slotCopy = (m: HostMatrix, label: string): HostMatrix =>
        texture || m instanceof Float32Array
          ? m
          : toFloat32(new Uint8Array(m.buffer, m.byteOffset, m.byteLength), half ?? "F16", label);
      const host: HostExperts = { texture, format: "f32", w1: [], w3: [], w2: [] };
      for (let e = 0; e < c.numExperts; e++) {
        const w1 = await expertMatrix(e, names.gate, f, h);
        if (texture && !(w1 instanceof Float32Array)) {
          host.format = half === "BF16" ? "bf16" : "f16";
        }
        host.w1.push(slotCopy(w1, `L${l} expert ${e} gate`));
        host.w3.push(slotCopy(await expertMatrix(e, names.up, f, h), `L${l} expert ${e} up`));
        host.w2.push(slotCopy(await expertMatrix(e, names.down, h, f), `L${l} expert ${e} down`));
      }
      layer.hostExperts = host;
    } else {
      layer.experts = [];
    }
    for (let first = 0; !hostExperts && first < c.numExperts; first += perChunk) {
      const count = Math.min(perChunk, c.numExperts - first);
      const Stack = r === null ? Host : Float32Array; // decomposed experts are multiplied out in f32
      const w1 = new Stack(count * h * f), w3 = new Stack(count * h * f);
      const w2 = new Stack(count * h * f);
      for (let i = 0; i < count; i++) {
        w1.set(await expertMatrix(first + i, names.gate, f, h), i * h * f);
        w3.set(await expertMatrix(first + i, names.up, f, h), i * h * f);
        w2.set(await expertMatrix(first + i, names.down, h, f), i * h * f);
      }
      layer.experts!.push(ctx.pool.grouped(ROUTED_EXPERTS, () => ({
        first,
        count,
        w1: up(`L${l} experts ${first}+ gate`, w1, h, f, count, expertTex),
        w3: up(`L${l} experts ${first}+ up`, w3, h, f, count, expertTex),
        w2: up(`L${l} experts ${first}+ down`, w2, f, h, count, expertTex),
      })));
    }
    if (c.sharedFfn > 0) {
      const s = b + "shared_expert.", fs = c.sharedFfn;
      layer.shared = {
        w1: up(
          `L${l} shared gate`,
          await linear(s + "gate_proj.weight", fs, h),
          h,
          fs,
        ),
        w3: up(`L${l} shared up`, await linear(s + "up_proj.weight", fs, h), h, fs),
        w2: up(
          `L${l} shared down`,
          await linear(s + "down_proj.weight", h, fs),
          fs,
          h,
        ),
        gate: up(
          `L${l} shared gate`,
          await read(b + "shared_expert_gate.weight"),
          h,
          1,
        ),
      };
    }
    layers.push(layer);
  }
  const headName = c.tieEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  const head = await linear(headName, c.vocabSize, h); // [H, V]
  const colsPerChunk = Math.min(
    4 * ctx.device.limits.maxTextureDimension2D,
    Math.max(4, Math.floor(ctx.maxBinding / (h * 4) / 4) * 4),
  );
  const lmHead = [];
  for (let first = 0; first < c.vocabSize; first += colsPerChunk) {
    const count = Math.min(colsPerChunk, c.vocabSize - first);
    const part = new Host(h * count);
    for (let k = 0; k < h; k++) {
      part.set(head.subarray(k * c.vocabSize + first, k * c.vocabSize + first + count), k * count);
    }
    lmHead.push({ w: up(`lm_head ${first}+`, part, h, count), first, count });
  }
  return {
    embed,
    layers,
    norm: pool.upload("final norm", await read("model.norm.weight")),
    lmHead,
    rope: pool.upload("rope table", ropeTable(c.ropeTheta, d, positions)),
  };
}

// ---------------------------------------------------------------- run state

/** Buffers for one forward of up to `cap` tokens, allocated once. */
export interface RunState {
  cap: number;
  tokens: GPUBuffer; // [cap + 1] u32 token ids
  info: GPUBuffer; // [cap, 4] u32: pos, kv_row, log_row, token_index
  x: GPUBuffer; // [cap, H] residual stream
  xn: GPUBuffer; // [cap, H] normalised
  qkv: GPUBuffer; // [cap, (nq + 2 nkv) d]
  q: GPUBuffer; // [cap, nq d]
  att: GPUBuffer; // [cap, nq d]
  kCache: GPUBuffer[]; // per layer [cap, nkv d]
  vCache: GPUBuffer[];
  /** Per layer texture mirrors of the K/V stores [nkv d / 4 texels, cap] when d % 4 = 0, else empty. */
  kTex: GPUTextureView[];
  vTex: GPUTextureView[];
  routerLogits: GPUBuffer; // [cap, E]
  choice: GPUBuffer; // [cap, k] u32
  choiceWeight: GPUBuffer; // [cap, k]
  rowToken: GPUBuffer; // [cap k] u32
  rowWeight: GPUBuffer; // [cap k]
  slotOf: GPUBuffer; // [cap k] u32
  tiles: GPUBuffer; // [max tiles, 3] u32
  hidden: GPUBuffer; // [cap k, F] expert activations (also dense and shared FFN [cap, F*])
  expertOut: GPUBuffer; // [cap k, H]
  sharedGate: GPUBuffer; // [cap]
  logExperts: GPUBuffer; // [cap, M, k] u32
  logWeights: GPUBuffer; // [cap, M, k]
  logProbs: GPUBuffer | null; // [cap, M, E], allocated on first use
  logSpec: GPUBuffer | null; // [cap, M, specD, k] u32
  specD: number;
  logits: GPUBuffer; // [1, V] (generate); logits() allocates its own
  /** Per activation row length K on the texture path: [K/4 texels, cap·k rows] staging texture. */
  staging: Map<number, { texture: GPUTexture; view: GPUTextureView }>;
  /** q|k|v [(nq + 2 nkv) d / 4, cap] and q [nq d / 4, cap] textures when attention runs on textures end to end. */
  attnTex: { qkv: GPUTextureView; q: GPUTextureView } | null;
  /**
   * Expert hidden states [F/4, cap·k] and outputs [H/4, cap·k] when the experts take
   * the texture path (their own textures: F may equal H, whose staging texture holds xn).
   */
  expertHiddenTex: GPUTextureView | null;
  expertOutTex: GPUTextureView | null;
}

function allocateRunState(ctx: GpuContext, c: ModelConfig, cap: number): RunState {
  const pool = ctx.pool;
  const h = c.hiddenSize, d = c.headDim, k = c.topK, M = moeLayers(c).length;
  const ffn = Math.max(k * c.expertFfn, c.denseFfn, c.sharedFfn);
  const f32 = (label: string, n: number) => pool.storage(label, n * 4);
  return {
    cap,
    tokens: f32("tokens", cap + 1),
    info: f32("token info", cap * 4),
    x: f32("x", cap * h),
    xn: f32("xn", cap * h),
    qkv: f32("qkv", cap * (c.numHeads + 2 * c.numKvHeads) * d),
    q: f32("q", cap * c.numHeads * d),
    att: f32("attention", cap * c.numHeads * d),
    kCache: Array.from(
      { length: c.numLayers },
      (_, l) => f32(`k cache ${l}`, cap * c.numKvHeads * d),
    ),
    vCache: Array.from(
      { length: c.numLayers },
      (_, l) => f32(`v cache ${l}`, cap * c.numKvHeads * d),
    ),
    routerLogits: f32("router logits", cap * c.numExperts),
    choice: f32("choice", cap * k),
    choiceWeight: f32("choice weight", cap * k),
    rowToken: f32("row token", cap * k),
    rowWeight: f32("row weight", cap * k),
    slotOf: f32("slot of", cap * k),
    tiles: f32("tiles", 3 * maxTiles(cap * k, c.numExperts, 1)),
    hidden: f32("ffn hidden", cap * ffn),
    expertOut: f32("expert out", cap * k * h),
    sharedGate: f32("shared gate", cap),
    logExperts: f32("log experts", cap * M * k),
    logWeights: f32("log weights", cap * M * k),
    logProbs: null,
    logSpec: null,
    specD: 0,
    logits: f32("logits row", c.vocabSize),
    staging: stagingTextures(ctx, c, cap),
    expertHiddenTex: ctx.textures && texturePath(h) && texturePath(c.expertFfn)
      ? ctx.pool.texture("expert hidden", c.expertFfn / 4, cap * k, undefined, true).createView()
      : null,
    expertOutTex: ctx.textures && texturePath(h) && texturePath(c.expertFfn)
      ? ctx.pool.texture("expert out", h / 4, cap * k, undefined, true).createView()
      : null,
    kTex: kvTextures(ctx, c, cap, "k"),
    vTex: kvTextures(ctx, c, cap, "v"),
    attnTex: null,
  };
}

function kvTextures(ctx: GpuContext, c: ModelConfig, cap: number, which: string): GPUTextureView[] {
  const texels = c.numKvHeads * c.headDim / 4;
  const maxTex = ctx.device.limits.maxTextureDimension2D;
  if (!ctx.textures || c.headDim % 4 !== 0 || texels > maxTex || cap > maxTex) return [];
  return Array.from(
    { length: c.numLayers },
    (_, l) => ctx.pool.texture(`${which} texture ${l}`, texels, cap, undefined, true).createView(),
  );
}

function stagingTextures(
  ctx: GpuContext,
  c: ModelConfig,
  cap: number,
): Map<number, { texture: GPUTexture; view: GPUTextureView }> {
  const widths = new Set([c.hiddenSize, c.numHeads * c.headDim, c.expertFfn]);
  if (c.denseFfn > 0) widths.add(c.denseFfn);
  if (c.sharedFfn > 0) widths.add(c.sharedFfn);
  const out = new Map<number, { texture: GPUTexture; view: GPUTextureView }>();
  if (!ctx.textures) return out;
  const maxTex = ctx.device.limits.maxTextureDimension2D;
  for (const k of widths) {
    if (!texturePath(k) || k > maxTex) continue;
    const texture = ctx.pool.texture(
      `staging ${k}`,
      k / 4,
      Math.min(maxTex, cap * c.topK),
      undefined,
      true,
    );
    out.set(k, { texture, view: texture.createView() });
  }
  return out;
}

/** Largest token count whose activations fit one binding each. */
function capForLimits(c: ModelConfig, maxBinding: number, maxTex: number, wanted: number): number {
  const M = Math.max(1, moeLayers(c).length);
  const perToken = Math.max(
    c.topK * Math.max(c.expertFfn, c.hiddenSize),
    c.denseFfn,
    c.sharedFfn,
    (c.numHeads + 2 * c.numKvHeads) * c.headDim,
    M * c.numExperts,
    M * 8 * c.topK,
  ) * 4;
  return Math.max(
    1,
    Math.min(wanted, Math.floor(maxBinding / perToken), Math.floor(maxTex / c.topK), 65535),
  );
}

// ---------------------------------------------------------------- forward

export interface ForwardPlan {
  /** Tokens in this pass (rows of info). */
  tokens: number;
  /** Which logits to compute: none (route), the last row into state.logits, or every row into `allLogits`. */
  logits: "none" | "last" | "all";
  allLogits?: GPUBuffer;
  probs: boolean;
  lookahead: number;
  /** Greedy/sampled next token written after the last row's logits. */
  sample?: { temperature: number; seed: number };
  /**
   * Part of the forward only (the offloaded decode, offload.ts): resume at
   * layer `from`'s grouped experts (−1: from the embedding) and stop after
   * layer `to`'s router (and lookahead routers); undefined runs the whole pass.
   */
  segment?: { from: number; to: number };
  /** Routed experts from these chunks instead ([MoE index] → slot chunks; choice ids are slot ids). */
  slots?: { chunks: ExpertChunk[][]; count: number };
}

/** RMSNorm of x rows into xn: straight into the H staging texture when H takes the texture path. */
function normInto(
  rec: Recorder,
  s: RunState,
  args: { weight: GPUBuffer; rows: number; n: number; eps: number; inRowOffset?: number },
): Act {
  const tex = s.staging.get(args.n);
  if (tex) {
    rmsnorm(rec, { ...args, x: s.x, y: tex.view });
    return { buffer: s.xn, view: tex.view };
  }
  rmsnorm(rec, { ...args, x: s.x, y: s.xn });
  return { buffer: s.xn };
}

/** An activation buffer and, when its rows go through textures, the texture holding its copy. */
interface Act {
  buffer: GPUBuffer;
  view?: GPUTextureView;
}

/**
 * Copies `rows` rows of an activation with row length k into its staging
 * texture when that length takes the texture path; returns what matmuls read.
 */
function stage(rec: Recorder, s: RunState, buffer: GPUBuffer, k: number, rows: number): Act {
  const tex = s.staging.get(k);
  if (tex === undefined) return { buffer };
  rec.copyToTexture(buffer, tex.texture, k / 4, rows);
  return { buffer, view: tex.view };
}

type LinearVariant = Omit<MatmulVariant, "rowGroups">;
type LinearArgs = Omit<MatmulArgs, "a" | "w" | "w3" | "k" | "n">;

/** y = epilogue(a · W): the texture kernel when both operands are textures, else the storage one. */
function linear(
  rec: Recorder,
  a: Act,
  w: Linear,
  args: LinearArgs & { w3?: Linear },
  variant: LinearVariant,
  decode: boolean,
): void {
  const { w3, ...rest } = args;
  if (w.view && a.view && (!w3 || w3.view)) {
    matmulTex(rec, {
      ...rest,
      a: a.view,
      w: w.view,
      ...(w3 ? { w3: w3.view! } : {}),
      k: w.k,
      n: w.n,
    }, {
      ...variant,
      weights: wFormat(w),
      shape: decode ? DECODE : PREFILL,
    });
    return;
  }
  if (a.view) {
    throw new Error(`linear: ${w.k}×${w.n} weight missed the texture path its input took`);
  }
  if (!w.buffer || (w3 && !w3.buffer)) throw new Error("linear: weight has no storage copy");
  matmul(rec, {
    ...rest,
    a: a.buffer,
    w: w.buffer,
    ...(w3 ? { w3: w3.buffer! } : {}),
    k: w.k,
    n: w.n,
  }, {
    ...variant,
    rowGroups: decode ? 1 : 4,
  });
}

/** Records the whole forward pass, embedding to logits (or `plan.segment` of it), into `rec`. */
export function recordForward(
  rec: Recorder,
  c: ModelConfig,
  w: Weights,
  s: RunState,
  plan: ForwardPlan,
): void {
  const T = plan.tokens, h = c.hiddenSize, d = c.headDim, k = c.topK;
  const moe = moeLayers(c);
  const lastMoe = moe[moe.length - 1] ?? -1;
  const decode = T < 16;
  const from = plan.segment?.from ?? -1, to = plan.segment?.to ?? c.numLayers;

  rec.section = "other";
  for (const chunk of from >= 0 ? [] : w.embed) {
    embedding(rec, {
      table: chunk.buffer,
      tokens: s.tokens,
      info: s.info,
      x: s.x,
      tokensCount: T,
      hidden: h,
      rowBase: chunk.first,
      rowCount: chunk.count,
    });
  }
  for (let l = Math.max(0, from); l < c.numLayers; l++) {
    const L = w.layers[l]!;
    const m = moe.indexOf(l);
    let xn: Act;
    if (l === from) {
      // resuming at this layer's experts: its router input is still in xn (and its staging texture)
      const tex = s.staging.get(h);
      xn = tex ? { buffer: s.xn, view: tex.view } : { buffer: s.xn };
    } else {
      rec.section = "layer";
      // attention
      xn = normInto(rec, s, { weight: L.attnNorm, rows: T, n: h, eps: c.rmsEps });
      let att: Act;
      if (s.attnTex) {
        // the texture path end to end: q|k|v, q, K/V and the attention output never touch storage
        const shape = decode ? DECODE : PREFILL;
        matmulTex(rec, {
          a: xn.view!,
          w: L.wqkv.view!,
          y: s.attnTex.qkv,
          rows: T,
          k: h,
          n: L.wqkv.n,
          ...(L.bqkv ? { bias: L.bqkv } : {}),
        }, { bias: L.bqkv !== undefined, outTexture: true, shape, weights: wFormat(L.wqkv) });
        qkvPrepareTex(rec, {
          qkv: s.attnTex.qkv,
          rope: w.rope,
          info: s.info,
          q: s.attnTex.q,
          kTex: s.kTex[l]!,
          vTex: s.vTex[l]!,
          ...(L.qNorm ? { qNorm: L.qNorm, kNorm: L.kNorm! } : {}),
          tokens: T,
          numHeads: c.numHeads,
          numKvHeads: c.numKvHeads,
          headDim: d,
          eps: c.rmsEps,
          clip: c.clipQkv ?? 0,
        }, c.qkNorm);
        const out = s.staging.get(c.numHeads * d)!.view;
        attention(rec, {
          q: s.attnTex.q,
          kCache: s.kTex[l]!,
          vCache: s.vTex[l]!,
          info: s.info,
          out,
          tokens: T,
          numHeads: c.numHeads,
          numKvHeads: c.numKvHeads,
          headDim: d,
          window: c.window[l] ?? null,
        });
        att = { buffer: s.att, view: out };
      } else {
        linear(rec, xn, L.wqkv, { y: s.qkv, rows: T, ...(L.bqkv ? { bias: L.bqkv } : {}) }, {
          bias: L.bqkv !== undefined,
        }, decode);
        qkvPrepare(rec, {
          qkv: s.qkv,
          rope: w.rope,
          info: s.info,
          q: s.q,
          kCache: s.kCache[l]!,
          vCache: s.vCache[l]!,
          ...(L.qNorm ? { qNorm: L.qNorm, kNorm: L.kNorm! } : {}),
          tokens: T,
          numHeads: c.numHeads,
          numKvHeads: c.numKvHeads,
          headDim: d,
          eps: c.rmsEps,
          clip: c.clipQkv ?? 0,
        }, c.qkNorm);
        const kvTex = s.kTex.length > 0;
        if (kvTex) {
          kvTexture(rec, {
            kCache: s.kCache[l]!,
            vCache: s.vCache[l]!,
            info: s.info,
            kTex: s.kTex[l]!,
            vTex: s.vTex[l]!,
            tokens: T,
            texels: c.numKvHeads * d / 4,
          });
        }
        attention(rec, {
          q: s.q,
          kCache: kvTex ? s.kTex[l]! : s.kCache[l]!,
          vCache: kvTex ? s.vTex[l]! : s.vCache[l]!,
          info: s.info,
          out: s.att,
          tokens: T,
          numHeads: c.numHeads,
          numKvHeads: c.numKvHeads,
          headDim: d,
          window: c.window[l] ?? null,
        });
        att = stage(rec, s, s.att, c.numHeads * d, T);
      }
      linear(rec, att, L.wo, { y: s.x, rows: T }, { accumulate: true }, decode);
      // feed-forward
      xn = normInto(rec, s, { weight: L.postNorm, rows: T, n: h, eps: c.rmsEps });
      if (L.dense) {
        const f = c.denseFfn;
        linear(
          rec,
          xn,
          L.dense.w1,
          { w3: L.dense.w3, y: s.hidden, rows: T },
          { swiglu: true },
          decode,
        );
        const hidden = stage(rec, s, s.hidden, f, T);
        linear(rec, hidden, L.dense.w2, { y: s.x, rows: T }, { accumulate: true }, decode);
        continue;
      }
      const route = {
        info: s.info,
        tokens: T,
        numExperts: c.numExperts,
        topK: k,
        numMoe: moe.length,
        moeIndex: m,
        normalise: c.normTopK,
      };
      linear(rec, xn, L.router!, { y: s.routerLogits, rows: T }, {}, decode);
      routerTopK(rec, { logits: s.routerLogits, ...route }, {
        choice: s.choice,
        choiceWeight: s.choiceWeight,
        logExperts: s.logExperts,
        logWeights: s.logWeights,
        ...(plan.probs ? { logProbs: s.logProbs! } : {}),
      });
      for (let dd = 1; dd <= plan.lookahead; dd++) {
        const target = w.layers[l + dd];
        if (target?.router === undefined) continue; // stays 65535 (filled on readback)
        linear(rec, xn, target.router, { y: s.routerLogits, rows: T }, {}, decode);
        routerTopK(rec, { logits: s.routerLogits, ...route }, {
          logSpec: s.logSpec!,
          lookahead: plan.lookahead,
          distance: dd,
        });
      }
      if (l === to) return;
      if (plan.logits === "none" && l === lastMoe) return; // nothing later changes a router decision
    }
    rec.section = "experts";
    const chunks = plan.slots?.chunks[m] ?? L.experts;
    if (chunks === undefined) {
      throw new Error(
        `recordForward: layer ${l}'s experts are in host memory (hostExperts); run the model through offload.ts`,
      );
    }
    const numExperts = plan.slots?.count ?? c.numExperts;
    const texExperts = chunks[0]!.w1.view !== undefined && xn.view !== undefined;
    const tr = texExperts ? texTileRows(decode ? DECODE : PREFILL) : tileRows(decode ? 1 : 4);
    const tiles = maxTiles(T * k, numExperts, tr);
    moeGroup(rec, {
      choice: s.choice,
      choiceWeight: s.choiceWeight,
      rowToken: s.rowToken,
      rowWeight: s.rowWeight,
      slotOf: s.slotOf,
      tiles: s.tiles,
      tokens: T,
      topK: k,
      numExperts,
      tileRows: tr,
    });
    const f = c.expertFfn;
    if (texExperts) {
      // hidden and expert outputs stay in textures: written by textureStore, read by textureLoad
      const hiddenTex = s.expertHiddenTex!, outTex = s.expertOutTex!;
      const shape = decode ? DECODE : PREFILL;
      for (const e of chunks) {
        const grouped = { tiles: s.tiles, rows: tiles, expertBase: e.first, expertCount: e.count };
        matmulTex(rec, {
          a: xn.view!,
          w: e.w1.view!,
          w3: e.w3.view!,
          y: hiddenTex,
          rowToken: s.rowToken,
          k: h,
          n: f,
          ...grouped,
        }, {
          grouped: true,
          gather: true,
          swiglu: true,
          outTexture: true,
          shape,
          weights: wFormat(e.w1),
        });
      }
      for (const e of chunks) {
        const grouped = { tiles: s.tiles, rows: tiles, expertBase: e.first, expertCount: e.count };
        matmulTex(rec, {
          a: hiddenTex,
          w: e.w2.view!,
          y: outTex,
          scale: s.rowWeight,
          k: f,
          n: h,
          ...grouped,
        }, { grouped: true, scale: "row", outTexture: true, shape, weights: wFormat(e.w2) });
      }
    } else {
      for (const e of chunks) {
        const grouped = { tiles: s.tiles, rows: tiles, expertBase: e.first, expertCount: e.count };
        linear(
          rec,
          { buffer: xn.buffer },
          e.w1,
          {
            w3: e.w3,
            y: s.hidden,
            rowToken: s.rowToken,
            ...grouped,
          },
          { grouped: true, gather: true, swiglu: true },
          decode,
        );
      }
      for (const e of chunks) {
        const grouped = { tiles: s.tiles, rows: tiles, expertBase: e.first, expertCount: e.count };
        linear(
          rec,
          { buffer: s.hidden },
          e.w2,
          { y: s.expertOut, scale: s.rowWeight, ...grouped },
          {
            grouped: true,
            scale: "row",
          },
          decode,
        );
      }
    }
    if (L.shared) {
      rec.section = "layer";
      const fs = c.sharedFfn;
      linear(rec, xn, L.shared.gate, { y: s.sharedGate, rows: T }, {}, decode);
      linear(
        rec,
        xn,
        L.shared.w1,
        { w3: L.shared.w3, y: s.hidden, rows: T },
        { swiglu: true },
        decode,
      );
      const sh = stage(rec, s, s.hidden, fs, T);
      linear(rec, sh, L.shared.w2, { y: s.x, scale: s.sharedGate, rows: T }, {
        scale: "sigmoid",
        accumulate: true,
      }, decode);
    }
    rec.section = "experts";
    moeCombine(rec, {
      y: texExperts ? s.expertOutTex! : s.expertOut,
      slotOf: s.slotOf,
      x: s.x,
      tokens: T,
      topK: k,
      hidden: h,
    });
  }
  if (plan.logits === "none") return;
  rec.section = "other";
  const rows = plan.logits === "all" ? T : 1;
  const xn = normInto(rec, s, {
    weight: w.norm,
    rows,
    n: h,
    eps: c.rmsEps,
    inRowOffset: plan.logits === "all" ? 0 : T - 1,
  });
  const out = plan.logits === "all" ? plan.allLogits! : s.logits;
  for (const chunk of w.lmHead) {
    linear(
      rec,
      xn,
      chunk.w,
      { y: out, rows, yStride: c.vocabSize, yCol: chunk.first },
      {},
      rows < 16,
    );
  }
  if (plan.sample) {
    sample(rec, {
      logits: s.logits,
      info: s.info,
      tokens: s.tokens,
      vocab: c.vocabSize,
      row: T - 1,
      ...plan.sample,
    });
  }
}

function forwardFlops(c: ModelConfig, lengths: number[], upTo: "route" | "logits"): number {
  const h = c.hiddenSize, d = c.headDim, k = c.topK;
  const T = lengths.reduce((a, b) => a + b, 0);
  const moe = moeLayers(c);
  const last = upTo === "route" ? (moe[moe.length - 1] ?? -1) : c.numLayers;
  let flops = 0;
  for (let l = 0; l < c.numLayers && l <= last; l++) {
    flops += matmulFlops(T, (c.numHeads + 2 * c.numKvHeads) * d, h) +
      matmulFlops(T, h, c.numHeads * d);
    for (const n of lengths) {
      for (let p = 0; p < n; p++) flops += attentionFlops(p, c.window[l] ?? null, c.numHeads, d);
    }
    if (!c.isMoe[l]) {
      flops += 3 * matmulFlops(T, c.denseFfn, h);
      continue;
    }
    flops += matmulFlops(T, c.numExperts, h);
    if (l === last) break;
    flops += 3 * matmulFlops(T * k, c.expertFfn, h);
    if (c.sharedFfn > 0) flops += 3 * matmulFlops(T, c.sharedFfn, h) + matmulFlops(T, 1, h);
  }
  if (upTo === "logits") flops += matmulFlops(T, c.vocabSize, h);
  return flops;
}

// ---------------------------------------------------------------- the model

export async function loadModel(
  dir: string,
  options: {
    maxBatchTokens?: number;
    textures?: boolean;
    /**
     * Keep routed experts in host memory and upload none of them (default
     * false): only an offloader (offload.ts) can then run the model, through
     * its expert slots.
     */
    hostExperts?: boolean;
  } = {},
): Promise<MoeModel> {
  const ck = await openCheckpoint(dir);
  const c = ck.config;
  if (c.topK > 64) {
    throw new DataError(
      `Field num_experts_per_tok in ${dir}/config.json is ${c.topK}, expected at most 64.`,
    );
  }
  const ctx = await createGpuContext({ textures: options.textures ?? true });
  // Allocation failures surface asynchronously in WebGPU: catch them in an
  // error scope around the uploads and report them as what they are.
  ctx.device.pushErrorScope("out-of-memory");
  const cap = capForLimits(
    c,
    ctx.maxBinding,
    ctx.device.limits.maxTextureDimension2D,
    options.maxBatchTokens ?? 4096,
  );
  const weights = await uploadWeights(
    ctx,
    ck,
    Math.max(cap + 1, c.maxPositions),
    options.hostExperts ?? false,
  );
  const state = allocateRunState(ctx, c, cap);
  const qkvTexels = (c.numHeads + 2 * c.numKvHeads) * c.headDim / 4;
  if (
    state.staging.has(c.hiddenSize) && state.staging.has(c.numHeads * c.headDim) &&
    state.kTex.length > 0 && c.headDim % 8 === 0 && weights.layers[0]!.wqkv.view &&
    qkvTexels <= ctx.device.limits.maxTextureDimension2D
  ) {
    state.attnTex = {
      qkv: ctx.pool.texture("qkv texture", qkvTexels, cap, undefined, true).createView(),
      q: ctx.pool.texture("q texture", c.numHeads * c.headDim / 4, cap, undefined, true)
        .createView(),
    };
  }
  const outOfMemory = await ctx.device.popErrorScope();
  if (outOfMemory) {
    const mib = (ctx.pool.bytes / 2 ** 20).toFixed(0);
    ctx.pool.releaseAll();
    throw new DataError(
      `The GPU ran out of memory loading ${dir}: it needs about ${mib} MiB for weights and run state (${outOfMemory.message}).`,
    );
  }
  const moe = moeLayers(c);
  const M = moe.length, k = c.topK, E = c.numExperts;
  const facts: ModelFacts = {
    name: basename(dir),
    family: c.family,
    num_layers: c.numLayers,
    moe_layers: moe,
    num_experts: E,
    top_k: k,
    num_shared_experts: c.sharedFfn > 0 ? 1 : 0,
    hidden_size: c.hiddenSize,
    expert_params: expertParams(c),
    dtype: ck.dtype,
  };
  const device = ctx.device;

  const ensureLogs = (o: RouteOptions) => {
    if (!Number.isInteger(o.lookahead) || o.lookahead < 0) {
      throw new DataError(`Lookahead is ${o.lookahead}, expected a non-negative integer.`);
    }
    if (o.probs && state.logProbs === null) {
      state.logProbs = ctx.pool.storage("log probs", cap * M * E * 4);
    }
    if (o.lookahead > state.specD) {
      if (state.logSpec) ctx.pool.release(state.logSpec);
      state.logSpec = ctx.pool.storage("log spec", cap * M * o.lookahead * k * 4);
      state.specD = o.lookahead;
    }
  };
  const writeInfo = (rows: number[][]) => {
    const info = new Uint32Array(rows.length * 4);
    rows.forEach((r, i) => info.set(r, i * 4));
    device.queue.writeBuffer(state.info, 0, info);
  };
  /** Reads log rows [0, T) and splits them at the given row counts. */
  /** Reads log rows [0, T) split at `counts`, plus the first `tokens` token ids, in one readback. */
  const readLogs = async (
    T: number,
    o: RouteOptions,
    counts: number[],
    tokens = 0,
  ): Promise<{ logs: RouterLog[]; ids: Uint32Array }> => {
    const D = o.lookahead;
    const parts = [
      { buffer: state.logExperts, bytes: T * M * k * 4 },
      { buffer: state.logWeights, bytes: T * M * k * 4 },
    ];
    if (o.probs) parts.push({ buffer: state.logProbs!, bytes: T * M * E * 4 });
    if (D > 0) parts.push({ buffer: state.logSpec!, bytes: T * M * D * k * 4 });
    parts.push({ buffer: state.tokens, bytes: tokens * 4 });
    const data = await readBack(ctx, parts);
    const ids = new Uint32Array(data[data.length - 1]!);
    const experts = new Uint32Array(data[0]!);
    const weightsAll = new Float32Array(data[1]!);
    const probs = o.probs ? new Float32Array(data[2]!) : null;
    const spec = D > 0 ? new Uint32Array(data[o.probs ? 3 : 2]!) : null;
    const logs: RouterLog[] = [];
    let row = 0;
    for (const n of counts) {
      const log: RouterLog = {
        experts: Uint16Array.from(experts.subarray(row * M * k, (row + n) * M * k)),
        weights: weightsAll.slice(row * M * k, (row + n) * M * k),
      };
      if (probs) log.probs = probs.slice(row * M * E, (row + n) * M * E);
      if (spec) {
        const out = new Uint16Array(n * M * D * k).fill(65535);
        for (let t = 0; t < n; t++) {
          for (let m = 0; m < M; m++) {
            for (let dd = 1; dd <= D; dd++) {
              if (!c.isMoe[moe[m]! + dd]) continue;
              const src = (((row + t) * M + m) * D + dd - 1) * k;
              out.set(spec.subarray(src, src + k), ((t * M + m) * D + dd - 1) * k);
            }
          }
        }
        log.spec = out;
      }
      logs.push(log);
      row += n;
    }
    return { logs, ids };
  };
  const checkTokens = (seq: Uint32Array) => {
    for (const id of seq) {
      if (id >= c.vocabSize) {
        throw new DataError(
          `Token id ${id} is outside the vocabulary of ${dir} (${c.vocabSize} ids).`,
        );
      }
    }
  };
  const submit = (rec: Recorder) => {
    const encoder = device.createCommandEncoder();
    rec.encode(encoder);
    device.queue.submit([encoder.finish()]);
  };

  const model: MoeModel = {
    facts,
    vocabSize: c.vocabSize,
    config: c,
    maxBatchTokens: cap,

    async route(sequences, o) {
      ensureLogs(o);
      const out: RouterLog[] = [];
      let i = 0;
      while (i < sequences.length) {
        const batch: Uint32Array[] = [];
        let total = 0;
        while (i < sequences.length && total + sequences[i]!.length <= cap) {
          total += sequences[i]!.length;
          batch.push(sequences[i++]!);
        }
        if (batch.length === 0) {
          throw new DataError(
            `A sequence of ${
              sequences[i]!.length
            } tokens is longer than the engine's batch of ${cap} tokens; raise maxBatchTokens or cut the document.`,
          );
        }
        const tokens = new Uint32Array(total);
        const info: number[][] = [];
        let off = 0;
        for (const seq of batch) {
          checkTokens(seq);
          tokens.set(seq, off);
          for (let p = 0; p < seq.length; p++) info.push([p, off + p, off + p, off + p]);
          off += seq.length;
        }
        if (total === 0) {
          for (const _ of batch) {
            out.push({ experts: new Uint16Array(0), weights: new Float32Array(0) });
          }
          continue;
        }
        device.queue.writeBuffer(state.tokens, 0, tokens);
        writeInfo(info);
        const rec = new Recorder(ctx);
        recordForward(rec, c, weights, state, {
          tokens: total,
          logits: "none",
          probs: o.probs,
          lookahead: o.lookahead,
        });
        rec.finish();
        submit(rec);
        out.push(...(await readLogs(total, o, batch.map((b) => b.length))).logs);
        rec.destroy();
      }
      return out;
    },

    async logits(sequence) {
      const T = sequence.length;
      if (T === 0 || T > cap) {
        throw new DataError(`Sequence has ${T} tokens, expected 1 to ${cap}.`);
      }
      checkTokens(sequence);
      ensureLogs({ probs: false, lookahead: 0 });
      const out = ctx.pool.storage("all logits", T * c.vocabSize * 4);
      device.queue.writeBuffer(state.tokens, 0, new Uint32Array(sequence));
      writeInfo(Array.from({ length: T }, (_, p) => [p, p, p, p]));
      const rec = new Recorder(ctx);
      recordForward(rec, c, weights, state, {
        tokens: T,
        logits: "all",
        allLogits: out,
        probs: false,
        lookahead: 0,
      });
      rec.finish();
      submit(rec);
      const [data] = await readBack(ctx, [{ buffer: out, bytes: T * c.vocabSize * 4 }]);
      rec.destroy();
      ctx.pool.release(out);
      return new Float32Array(data!);
    },

    async generate(prompt, o) {
      const P = prompt.length;
      if (P === 0) throw new DataError("The prompt is empty, expected at least one token.");
      if (!Number.isInteger(o.maxNewTokens) || o.maxNewTokens < 0 || P + o.maxNewTokens > cap) {
        throw new DataError(
          `Prompt of ${P} tokens plus ${o.maxNewTokens} new tokens exceeds the engine's ${cap}-token context; lower max-new-tokens.`,
        );
      }
      checkTokens(prompt);
      ensureLogs(o);
      const sampling = { temperature: Math.max(0, o.temperature), seed: o.seed };
      device.queue.writeBuffer(state.tokens, 0, new Uint32Array(prompt));
      writeInfo(Array.from({ length: P }, (_, p) => [p, p, p, p]));
      const prefill = new Recorder(ctx);
      const logitsPlan = o.maxNewTokens > 0 ? "last" as const : "none" as const;
      recordForward(prefill, c, weights, state, {
        tokens: P,
        logits: logitsPlan,
        probs: o.probs,
        lookahead: o.lookahead,
        ...(o.maxNewTokens > 0 ? { sample: sampling } : {}),
      });
      prefill.finish();
      submit(prefill);
      const decode = new Recorder(ctx);
      recordForward(decode, c, weights, state, {
        tokens: 1,
        logits: "last",
        probs: o.probs,
        lookahead: o.lookahead,
        sample: sampling,
      });
      decode.finish();
      const stops = new Set(o.stopIds ?? []);
      const checkEvery = stops.size > 0 ? 32 : Infinity;
      let produced = 0; // generated tokens whose forward has run
      let end = P + o.maxNewTokens;
      while (produced < o.maxNewTokens) {
        const pos = P + produced;
        device.queue.writeBuffer(state.info, 0, new Uint32Array([pos, pos, pos, pos]));
        submit(decode);
        produced++;
        if (produced % checkEvery === 0 && produced < o.maxNewTokens) {
          const [ids] = await readBack(ctx, [{
            buffer: state.tokens,
            offset: P * 4,
            bytes: produced * 4,
          }]);
          const hit = new Uint32Array(ids!).findIndex((id) => stops.has(id));
          if (hit >= 0) {
            end = P + hit + 1;
            break;
          }
        }
      }
      // one readback: every row's log and the tokens; cut at the first stop token
      const rows = P + produced;
      const { logs: [full], ids: tokens } = await readLogs(rows, o, [rows], rows);
      const hit = tokens.subarray(P).findIndex((id) => stops.has(id));
      if (hit >= 0) end = Math.min(end, P + hit + 1);
      end = Math.min(end, rows);
      const log: RouterLog = {
        experts: full!.experts.slice(0, end * M * k),
        weights: full!.weights.slice(0, end * M * k),
      };
      if (full!.probs) log.probs = full!.probs.slice(0, end * M * E);
      if (full!.spec) log.spec = full!.spec.slice(0, end * M * o.lookahead * k);
      prefill.destroy();
      decode.destroy();
      return { tokens: tokens.slice(0, end), promptLength: P, log };
    },

    flops: (lengths, upTo) => forwardFlops(c, lengths, upTo),
    gpuBytes: () => ctx.pool.bytes,
    expertGpuBytes: () => ctx.pool.groupBytes.get(ROUTED_EXPERTS) ?? 0,
    readbacks: () => ctx.stats.readbacks,

    async profile(sequences, mode) {
      const total = sequences.reduce((a, b) => a + b.length, 0);
      if (total + 1 > cap) {
        throw new DataError(`Profiling takes at most ${cap - 1} tokens, got ${total}.`);
      }
      const tokens = new Uint32Array(total + 1);
      const info: number[][] = [];
      let off = 0;
      for (const seq of sequences) {
        checkTokens(seq);
        tokens.set(seq, off);
        for (let p = 0; p < seq.length; p++) info.push([p, off + p, off + p, off + p]);
        off += seq.length;
      }
      device.queue.writeBuffer(state.tokens, 0, tokens);
      writeInfo(info);
      const rec = new Recorder(ctx);
      const plan = { tokens: total, logits: "none" as const, probs: false, lookahead: 0 };
      recordForward(rec, c, weights, state, plan);
      rec.finish();
      if (mode === "route") {
        const out = await rec.profile();
        rec.destroy();
        return out;
      }
      // decode: the last sequence's next position, after a prefill of all of them
      submit(rec);
      const last = sequences[sequences.length - 1]!;
      const pos = last.length, row = total;
      device.queue.writeBuffer(state.info, 0, new Uint32Array([pos, row, row, row]));
      const step = new Recorder(ctx);
      recordForward(step, c, weights, state, {
        tokens: 1,
        logits: "last",
        probs: false,
        lookahead: 0,
        sample: { temperature: 0, seed: 0 },
      });
      step.finish();
      const out = await step.profile();
      rec.destroy();
      step.destroy();
      return out;
    },

    destroy() {
      ctx.pool.releaseAll();
      device.destroy();
    },
  };
  internals.set(model, {
    ctx,
    weights,
    state,
    ensureLogs,
    writeInfo,
    readLogs,
    checkTokens,
    submit,
  });
  return model;
}

/** What the offloaded decode (offload.ts) drives: the model's device, weights, run state and helpers. */
export interface ModelInternals {
  ctx: GpuContext;
  weights: Weights;
  state: RunState;
  ensureLogs(o: RouteOptions): void;
  writeInfo(rows: number[][]): void;
  readLogs(
    T: number,
    o: RouteOptions,
    counts: number[],
    tokens?: number,
  ): Promise<{ logs: RouterLog[]; ids: Uint32Array }>;
  checkTokens(seq: Uint32Array): void;
  submit(rec: Recorder): void;
}

const internals = new WeakMap<MoeModel, ModelInternals>();

/** The internals of a model made by `loadModel`. */
export function modelInternals(model: MoeModel): ModelInternals {
  const found = internals.get(model);
  if (!found) throw new Error("modelInternals: not a model made by loadModel");
  return found;
}
