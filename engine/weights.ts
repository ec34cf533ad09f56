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
import type { Checkpoint } from "./checkpoint.ts";
import { type MoeWeights, uploadMoe } from "./expert_weights.ts";
import type { GpuContext } from "./gpu.ts";
import { ropeTable } from "./rope.ts";
import { type Linear, transpose, WeightReader } from "./weight_reader.ts";

export {
  type ExpertChunk,
  type ExpertLayout,
  expertsPerChunk,
  type HostExperts,
  ROUTED_EXPERTS,
  type RouterWeights,
} from "./expert_weights.ts";
export {
  type HostMatrix,
  type Linear,
  TEXEL_FORMAT,
  texturePath,
  wFormat,
} from "./weight_reader.ts";

export interface LayerWeights extends Partial<MoeWeights> {
  attnNorm: GPUBuffer; // [H]
  wqkv?: Linear; // [H, (nq + 2 nkv) d]   q | k | v columns (every attention but MLA)
  bqkv?: GPUBuffer; // [(nq + 2 nkv) d]
  qNorm?: GPUBuffer; // [nq d] (whole) or [d] (per head)
  kNorm?: GPUBuffer; // [nkv d] or [d]
  sinks?: GPUBuffer; // [nq] attention sink logits (gpt_oss)
  mla?: MlaWeights; // multi-head latent attention (deepseek)
  wo: Linear; // [nq dv, H]
  bo?: GPUBuffer; // [H]
  postNorm: GPUBuffer; // [H]
  dense?: { w1: Linear; w3: Linear; w2: Linear }; // [H, Fd] ×2, [Fd, H]
}

/** Multi-head latent attention weights, [in, out] as every Linear. */
export interface MlaWeights {
  wq?: Linear; // [H, nq (nope + rope)] when q_lora_rank is null
  wqa?: Linear; // [H, qr]
  bqa?: GPUBuffer; // [qr]
  qaNorm?: GPUBuffer; // [qr]
  wqb?: Linear; // [qr, nq (nope + rope)]
  wkva: Linear; // [H, kvr + rope]   the latent | the shared rope key
  bkva?: GPUBuffer; // [kvr + rope]
  kvaNorm: GPUBuffer; // [kvr]
  wkvb: Linear; // [kvr, nq (nope + dv)]   per head: k_nope | v
}

export interface Weights {
  embed: { buffer: GPUBuffer; first: number; count: number }[]; // row chunks of [V, H]
  layers: LayerWeights[];
  norm: GPUBuffer; // [H]
  lmHead: { w: Linear; first: number; count: number }[]; // column chunks of [H, V]
  rope: GPUBuffer; // [positions, rope dim/2, 2] cos, sin
}

/**
 * Uploads a checkpoint: embedding, per layer attention (or MLA) + (dense FFN |
 * router, routed experts, shared experts: expert_weights.ts), final norm, LM
 * head, and a RoPE table of `positions` rows. With `hostExperts` the routed
 * experts stay in host memory.
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
    const layer = c.mla ? await uploadMla(r, l) : await uploadAttention(r, l);
    if (c.isMoe[l]) Object.assign(layer, await uploadMoe(r, l, hostExperts));
    else layer.dense = await uploadDense(r, l);
    layers.push(layer);
  }
  const lmHead = await uploadLmHead(r);
  return {
    embed,
    layers,
    norm: await finalNorm(r),
    lmHead,
    rope: ctx.pool.upload("rope table", ropeTable(c.rope, positions)),
  };
}

/**
 * The final norm's weight [H], with Granite's logits scaling folded in:
 * logits = (norm(x) · w / s) · W_head equals HF's (norm(x) · w · W_head) / s
 * to f32 rounding, and the LM head keeps its 16-bit weights untouched.
 */
async function finalNorm(r: WeightReader): Promise<GPUBuffer> {
  const w = await r.f32("model.norm.weight");
  const m = r.ck.config.multipliers.logits;
  if (m !== 1) { for (let i = 0; i < w.length; i++) w[i] = w[i]! * m; }
  return r.ctx.pool.upload("final norm", w);
}

/** The embedding [V, H] (× granite's embedding_multiplier, in f32 as HF multiplies it) in row chunks of at most one storage binding each. */
async function uploadEmbedding(r: WeightReader): Promise<Weights["embed"]> {
  const c = r.ck.config, h = c.hiddenSize;
  const rows = await r.f32("model.embed_tokens.weight");
  const m = c.multipliers.embedding;
  if (m !== 1) { for (let i = 0; i < rows.length; i++) rows[i] = rows[i]! * m; }
  const rowsPerChunk = Math.max(1, Math.floor(r.ctx.weightLimits.binding / (h * 4)));
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
  if (c.oBias) layer.bo = await r.vector(`L${l} o bias`, p + "self_attn.o_proj.bias");
  if (c.sinks) layer.sinks = await r.vector(`L${l} sinks`, p + "self_attn.sinks");
  return layer;
}

/**
 * Layer l's norms and multi-head latent attention: q (directly, or through
 * the q_a low-rank projection and its norm), the K/V latent with the shared
 * rope key, its norm, and the up-projection to per-head k_nope | v.
 */
async function uploadMla(r: WeightReader, l: number): Promise<LayerWeights> {
  const c = r.ck.config, m = c.mla!;
  const h = c.hiddenSize, qk = c.numHeads * c.headDim;
  const p = `model.layers.${l}.self_attn.`;
  const latent = m.kvLoraRank + m.ropeDim;
  const mla: MlaWeights = {
    wkva: await r.linear(`L${l} kv_a`, p + "kv_a_proj_with_mqa.weight", latent, h),
    kvaNorm: await r.vector(`L${l} kv_a norm`, p + "kv_a_layernorm.weight"),
    wkvb: await r.linear(
      `L${l} kv_b`,
      p + "kv_b_proj.weight",
      c.numHeads * (m.nopeDim + c.vHeadDim),
      m.kvLoraRank,
    ),
  };
  if (m.bias) mla.bkva = await r.vector(`L${l} kv_a bias`, p + "kv_a_proj_with_mqa.bias");
  if (m.qLoraRank === null) mla.wq = await r.linear(`L${l} q`, p + "q_proj.weight", qk, h);
  else {
    mla.wqa = await r.linear(`L${l} q_a`, p + "q_a_proj.weight", m.qLoraRank, h);
    mla.qaNorm = await r.vector(`L${l} q_a norm`, p + "q_a_layernorm.weight");
    mla.wqb = await r.linear(`L${l} q_b`, p + "q_b_proj.weight", qk, m.qLoraRank);
    if (m.bias) mla.bqa = await r.vector(`L${l} q_a bias`, p + "q_a_proj.bias");
  }
  const layer: LayerWeights = {
    attnNorm: await r.vector(`L${l} input norm`, `model.layers.${l}.input_layernorm.weight`),
    mla,
    wo: await r.linear(`L${l} o`, p + "o_proj.weight", h, c.numHeads * c.vHeadDim),
    postNorm: await r.vector(
      `L${l} post norm`,
      `model.layers.${l}.post_attention_layernorm.weight`,
    ),
  };
  if (c.oBias) layer.bo = await r.vector(`L${l} o bias`, p + "o_proj.bias");
  return layer;
}

/** A dense layer's SwiGLU FFN (qwen `mlp_only_layers`, deepseek/glm `first_k_dense_replace`): gate, up [H, Fd], down [Fd, H]. */
async function uploadDense(
  r: WeightReader,
  l: number,
): Promise<NonNullable<LayerWeights["dense"]>> {
  const h = r.ck.config.hiddenSize, f = r.ck.config.denseFfn;
  const p = `model.layers.${l}.mlp.`;
  const names = { gate: p + "gate_proj.weight", up: p + "up_proj.weight" };
  return {
    ...await r.swigluPair(`L${l} dense`, names, f, h),
    w2: await r.linear(`L${l} dense down`, p + "down_proj.weight", h, f),
  };
}

/** The LM head [H, V] (or the tied embedding) in column chunks under the binding and texture limits. */
async function uploadLmHead(r: WeightReader): Promise<Weights["lmHead"]> {
  const c = r.ck.config, h = c.hiddenSize;
  const name = c.tieEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  const head = await r.transposed(name, c.vocabSize, h); // [H, V]
  const colsPerChunk = Math.min(
    4 * r.ctx.weightLimits.texture,
    Math.max(4, Math.floor(r.ctx.weightLimits.binding / (h * 4) / 4) * 4),
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
