/**
 * The checkpoint's weights on the GPU, read once at load (llama2.c's
 * `TransformerWeights`): every linear weight transposed to [in = K, out = N]
 * so that a row of activations times it is y = x Wᵀ as Hugging Face computes.
 *
 * Where K is a multiple of 64 (every real checkpoint, tiny-moe) a weight is a
 * texture read by kernels/matmul_tex.ts: rgba32f, or for a 16-bit checkpoint
 * whose linear weights share one dtype rgba16float (f16) or rg32uint (bf16,
 * unpacked in WGSL; no shader-f16 needed). Other sizes (the random fixtures)
 * are f32 storage buffers for kernels/matmul.ts. Norms, embeddings and
 * multiplied-out weight-decomposed experts are always f32.
 *
 * With `hostExperts` the routed experts stay in host memory (`HostExperts`),
 * each matrix laid out as one slot of the GPU copy, for offload.ts.
 */
import { type Checkpoint, expertNames, readFloat32 } from "./checkpoint.ts";
import type { GpuContext } from "./gpu.ts";
import { ropeTable } from "./rope.ts";
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

export interface LayerWeights {
  attnNorm: GPUBuffer; // [H]
  wqkv: Linear; // [H, (nq + 2 nkv) d]   q | k | v columns
  bqkv?: GPUBuffer; // [(nq + 2 nkv) d]
  qNorm?: GPUBuffer; // [nq d] (whole) or [d] (per head)
  kNorm?: GPUBuffer; // [nkv d] or [d]
  wo: Linear; // [nq d, H]
  postNorm: GPUBuffer; // [H]
  router?: RouterWeights; // [H, E] and its biases
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
  rope: GPUBuffer; // [positions, rope dim/2, 2] cos, sin
}

/** Whether activations with row length k go through textures (256-byte rows). */
export function texturePath(k: number): boolean {
  return k % 64 === 0;
}

/**
 * Experts per chunk of [H, F] matrices: as many as fit one storage binding,
 * and with `textureBound` as many [K, N/4] slabs as stack under the texture
 * height limit. offload.ts chunks its slots the same way.
 */
export function expertsPerChunk(
  ctx: GpuContext,
  shape: { h: number; f: number },
  textureBound: boolean,
): number {
  const { h, f } = shape;
  const maxTex = ctx.device.limits.maxTextureDimension2D;
  return Math.max(
    1,
    Math.min(
      Math.floor(ctx.maxBinding / (h * f * 4)),
      textureBound ? Math.floor(maxTex / Math.max(h, f)) : Infinity,
    ),
  );
}

/**
 * Uploads one [K, N] (× experts) weight: a texture when the context allows
 * them, `allowTexture` holds and K takes the texture path within the texture
 * limits (rows padded to whole texels when N % 4 ≠ 0); else an f32 buffer,
 * widening 16-bit bits of dtype `half`.
 */
function uploadLinear(
  ctx: GpuContext,
  label: string,
  data: HostMatrix,
  shape: { k: number; n: number; experts?: number },
  options: { allowTexture: boolean; half: "F16" | "BF16" | null },
): Linear {
  const { k, n, experts = 1 } = shape;
  const width = Math.ceil(n / 4), height = experts * k;
  const maxTex = ctx.device.limits.maxTextureDimension2D;
  if (
    ctx.textures && options.allowTexture && texturePath(k) && width <= maxTex && height <= maxTex
  ) {
    let texels = data;
    if (n % 4 !== 0) {
      texels = new (data.constructor as new (n: number) => HostMatrix)(height * width * 4);
      for (let r = 0; r < height; r++) texels.set(data.subarray(r * n, (r + 1) * n), r * width * 4);
    }
    const format = texels instanceof Float32Array
      ? "f32"
      : options.half === "BF16"
      ? "bf16"
      : "f16";
    const view = ctx.pool.texture(label, width, height, texels, false, TEXEL_FORMAT[format])
      .createView();
    return { k, n, format, view };
  }
  const f32 = data instanceof Float32Array ? data : toFloat32(
    new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    options.half ?? "F16",
    label,
  );
  return { k, n, format: "f32", buffer: ctx.pool.upload(label, f32) };
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
class WeightReader {
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

  /** An f32 vector (norm weight, bias) into a storage buffer. */
  async vector(label: string, name: string): Promise<GPUBuffer> {
    return this.ctx.pool.upload(label, await this.f32(name));
  }
}

/**
 * Uploads a checkpoint: embedding, per layer attention + (dense FFN | router,
 * routed experts, shared expert), final norm, LM head, and a RoPE table of
 * `positions` rows. With `hostExperts` the routed experts stay in host memory.
 */
export async function uploadWeights(
  ctx: GpuContext,
  ck: Checkpoint,
  positions: number,
  hostExperts = false,
): Promise<Weights> {
  const c = ck.config;
  const r = new WeightReader(ctx, ck);
  const embed = await uploadEmbedding(r);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.numLayers; l++) {
    const layer = await uploadAttention(r, l);
    if (c.isMoe[l]) await uploadMoe(r, l, layer, hostExperts);
    else layer.dense = await uploadDense(r, l);
    layers.push(layer);
  }
  const lmHead = await uploadLmHead(r);
  return {
    embed,
    layers,
    norm: await r.vector("final norm", "model.norm.weight"),
    lmHead,
    rope: ctx.pool.upload("rope table", ropeTable(c.rope, positions)),
  };
}

/** The embedding [V, H] in row chunks of at most one storage binding each. */
async function uploadEmbedding(r: WeightReader): Promise<Weights["embed"]> {
  const c = r.ck.config, h = c.hiddenSize;
  const rows = await r.f32("model.embed_tokens.weight");
  const rowsPerChunk = Math.max(1, Math.floor(r.ctx.maxBinding / (h * 4)));
  const embed = [];
  for (let first = 0; first < c.vocabSize; first += rowsPerChunk) {
    const count = Math.min(rowsPerChunk, c.vocabSize - first);
    const chunk = rows.subarray(first * h, (first + count) * h);
    embed.push({ buffer: r.ctx.pool.upload(`embed ${first}`, chunk), first, count });
  }
  return embed;
}

/** Layer l's norms and attention: q, k, v fused into one [H, (nq + 2 nkv) d] weight (and bias). */
async function uploadAttention(r: WeightReader, l: number): Promise<LayerWeights> {
  const c = r.ck.config;
  const h = c.hiddenSize, q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim;
  const p = `model.layers.${l}.`;
  const qkvRows = new r.Host((q + 2 * kv) * h); // [q | k | v rows, H] as on disk
  qkvRows.set(await r.raw(p + "self_attn.q_proj.weight"), 0);
  qkvRows.set(await r.raw(p + "self_attn.k_proj.weight"), q * h);
  qkvRows.set(await r.raw(p + "self_attn.v_proj.weight"), (q + kv) * h);
  const layer: LayerWeights = {
    attnNorm: await r.vector(`L${l} input norm`, p + "input_layernorm.weight"),
    wqkv: r.upload(`L${l} qkv`, transpose(qkvRows, q + 2 * kv, h), { k: h, n: q + 2 * kv }),
    wo: await r.linear(`L${l} o`, p + "self_attn.o_proj.weight", h, q),
    postNorm: await r.vector(`L${l} post norm`, p + "post_attention_layernorm.weight"),
  };
  if (c.qkvBias) {
    const b = new Float32Array(q + 2 * kv);
    b.set(await r.f32(p + "self_attn.q_proj.bias"), 0);
    b.set(await r.f32(p + "self_attn.k_proj.bias"), q);
    b.set(await r.f32(p + "self_attn.v_proj.bias"), q + kv);
    layer.bqkv = r.ctx.pool.upload(`L${l} qkv bias`, b);
  }
  if (c.qkNorm !== "none") {
    layer.qNorm = await r.vector(`L${l} q norm`, p + "self_attn.q_norm.weight");
    layer.kNorm = await r.vector(`L${l} k norm`, p + "self_attn.k_norm.weight");
  }
  return layer;
}

/** A dense layer's SwiGLU FFN (qwen `mlp_only_layers`): gate, up [H, Fd], down [Fd, H]. */
async function uploadDense(
  r: WeightReader,
  l: number,
): Promise<NonNullable<LayerWeights["dense"]>> {
  const h = r.ck.config.hiddenSize, f = r.ck.config.denseFfn;
  const p = `model.layers.${l}.mlp.`;
  return {
    w1: await r.linear(`L${l} dense gate`, p + "gate_proj.weight", f, h),
    w3: await r.linear(`L${l} dense up`, p + "up_proj.weight", f, h),
    w2: await r.linear(`L${l} dense down`, p + "down_proj.weight", h, f),
  };
}

/** An MoE layer's router [H, E], routed experts (GPU chunks or host copies) and shared expert. */
async function uploadMoe(
  r: WeightReader,
  l: number,
  layer: LayerWeights,
  hostExperts: boolean,
): Promise<void> {
  const c = r.ck.config;
  const h = c.hiddenSize;
  const b = `model.layers.${l}.${expertNames(c).block}.`;
  layer.router = { weight: await r.linear(`L${l} router`, b + "gate.weight", c.numExperts, h) };
  if (hostExperts) layer.hostExperts = await readHostExperts(r, l);
  else layer.experts = await uploadExperts(r, l);
  if (c.sharedFfn > 0) {
    const s = b + "shared_expert.", fs = c.sharedFfn;
    layer.shared = {
      w1: await r.linear(`L${l} shared gate`, s + "gate_proj.weight", fs, h),
      w3: await r.linear(`L${l} shared up`, s + "up_proj.weight", fs, h),
      w2: await r.linear(`L${l} shared down`, s + "down_proj.weight", h, fs),
      // [1, H] on disk is already [H, 1] transposed
      gate: r.upload(`L${l} shared gate`, await r.f32(b + "shared_expert_gate.weight"), {
        k: h,
        n: 1,
      }),
    };
  }
}

/** One expert's matrix, [out, in] on disk, as [in, out]; weight-decomposed ones are u [out, r] @ v [r, in] in f32. */
async function expertMatrix(
  r: WeightReader,
  l: number,
  e: number,
  which: "gate" | "up" | "down",
): Promise<HostMatrix> {
  const c = r.ck.config, names = expertNames(c);
  const h = c.hiddenSize, f = c.expertFfn, rank = c.decomposedRank;
  const [out, inp] = which === "down" ? [h, f] : [f, h];
  const base = `model.layers.${l}.${names.block}.experts.${e}.${names[which]}`;
  const m: HostMatrix = rank === null
    ? await r.raw(base + ".weight")
    : matmulCpu(await r.f32(base + ".u"), await r.f32(base + ".v"), out, rank, inp);
  return transpose(m, out, inp);
}

/** Experts use textures only when all three matrices can (one tile size for the group). */
function expertTexture(r: WeightReader): boolean {
  const { hiddenSize: h, expertFfn: f } = r.ck.config;
  return texturePath(h) && texturePath(f) &&
    Math.max(h, f) <= r.ctx.device.limits.maxTextureDimension2D;
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

/** The LM head [H, V] (or the tied embedding) in column chunks under the binding and texture limits. */
async function uploadLmHead(r: WeightReader): Promise<Weights["lmHead"]> {
  const c = r.ck.config, h = c.hiddenSize;
  const name = c.tieEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  const head = await r.transposed(name, c.vocabSize, h); // [H, V]
  const colsPerChunk = Math.min(
    4 * r.ctx.device.limits.maxTextureDimension2D,
    Math.max(4, Math.floor(r.ctx.maxBinding / (h * 4) / 4) * 4),
  );
  const lmHead = [];
  for (let first = 0; first < c.vocabSize; first += colsPerChunk) {
    const count = Math.min(colsPerChunk, c.vocabSize - first);
    const part = new r.Host(h * count);
    for (let k = 0; k < h; k++) {
      part.set(head.subarray(k * c.vocabSize + first, k * c.vocabSize + first + count), k * count);
    }
    lmHead.push({ w: r.upload(`lm_head ${first}+`, part, { k: h, n: count }), first, count });
  }
  return lmHead;
}
