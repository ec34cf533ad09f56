/**
 * The run state (llama2.c's `RunState`): every activation, K/V store and
 * router log buffer of one forward of up to `cap` tokens, allocated once at
 * load (the log buffers for probabilities and lookahead on first use). A pass
 * names its rows through `info` ([cap, 4] u32 per row: position in its
 * sequence, K/V row, log row, token index), so one state serves packed
 * teacher-forced batches, a prefill and the decode steps after it.
 */
import { DataError } from "../common/errors.ts";
import { type ModelConfig, moeLayers } from "./config.ts";
import type { GpuContext } from "./gpu.ts";
import { maxTiles } from "./kernels/moe_group.ts";
import { texturePath } from "./weights.ts";

/** Multi-head latent attention's activations for `cap` rows. */
export interface MlaState {
  qa: GPUBuffer | null; // [cap, q_lora_rank] q_a projection (null: q_lora_rank null)
  qaNorm: GPUBuffer | null; // [cap, q_lora_rank] its norm (on storage)
  ckv: GPUBuffer; // [cap, kv_lora_rank + rope]
  latent: GPUBuffer; // [cap, kv_lora_rank] normalised latent
  kRope: GPUBuffer; // [cap, rope] the shared rotated key
  kv: GPUBuffer; // [cap, nq (nope + dv)] per-head k_nope | v
}

/** Buffers for one forward of up to `cap` tokens, allocated once. */
export interface RunState {
  cap: number;
  tokens: GPUBuffer; // [cap + 1] u32 token ids
  info: GPUBuffer; // [cap, 4] u32: pos, kv_row, log_row, token_index
  x: GPUBuffer; // [cap, H] residual stream
  xn: GPUBuffer; // [cap, H] normalised
  qkv: GPUBuffer; // [cap, (nq + 2 nkv) d] (MLA: unused)
  q: GPUBuffer; // [cap, nq d]
  att: GPUBuffer; // [cap, nq max(d, dv)]
  kCache: GPUBuffer[]; // per layer [cap, nkv d]
  vCache: GPUBuffer[]; // per layer [cap, nkv dv]
  /** Multi-head latent attention's activations (mla.ts), or null. */
  mla: MlaState | null;
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

/**
 * Allocates the run state for `cap` rows. `qkvTexture`: the fused q|k|v
 * weight is a texture, which (with textures for H, nq·d and the K/V stores)
 * lets attention run on textures end to end (attention.ts).
 */
export function allocateRunState(
  ctx: GpuContext,
  c: ModelConfig,
  cap: number,
  options: { qkvTexture: boolean },
): RunState {
  const pool = ctx.pool;
  const h = c.hiddenSize, d = c.headDim, k = c.topK, M = moeLayers(c).length;
  const ffn = Math.max(k * c.expertFfn, c.denseFfn, c.sharedFfn);
  const f32 = (label: string, n: number) => pool.storage(label, n * 4);
  const state: RunState = {
    cap,
    tokens: f32("tokens", cap + 1),
    info: f32("token info", cap * 4),
    x: f32("x", cap * h),
    xn: f32("xn", cap * h),
    qkv: f32("qkv", c.mla ? 1 : cap * (c.numHeads + 2 * c.numKvHeads) * d),
    q: f32("q", cap * c.numHeads * d),
    att: f32("attention", cap * c.numHeads * Math.max(d, c.vHeadDim)),
    kCache: Array.from(
      { length: c.numLayers },
      (_, l) => f32(`k cache ${l}`, cap * c.numKvHeads * d),
    ),
    vCache: Array.from(
      { length: c.numLayers },
      (_, l) => f32(`v cache ${l}`, cap * c.numKvHeads * c.vHeadDim),
    ),
    mla: c.mla
      ? {
        qa: c.mla.qLoraRank === null ? null : f32("mla q_a", cap * c.mla.qLoraRank),
        qaNorm: c.mla.qLoraRank === null ? null : f32("mla q_a norm", cap * c.mla.qLoraRank),
        ckv: f32("mla ckv", cap * (c.mla.kvLoraRank + c.mla.ropeDim)),
        latent: f32("mla latent", cap * c.mla.kvLoraRank),
        kRope: f32("mla k rope", cap * c.mla.ropeDim),
        kv: f32("mla kv", cap * c.numHeads * (c.mla.nopeDim + c.vHeadDim)),
      }
      : null,
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
  const qkvTexels = (c.numHeads + 2 * c.numKvHeads) * d / 4;
  if (
    state.staging.has(h) && state.staging.has(c.numHeads * d) && state.kTex.length > 0 &&
    d % 8 === 0 && options.qkvTexture && qkvTexels <= ctx.device.limits.maxTextureDimension2D
  ) {
    state.attnTex = {
      qkv: pool.texture("qkv texture", qkvTexels, cap, undefined, true).createView(),
      q: pool.texture("q texture", c.numHeads * d / 4, cap, undefined, true).createView(),
    };
  }
  return state;
}

function kvTextures(ctx: GpuContext, c: ModelConfig, cap: number, which: string): GPUTextureView[] {
  const texels = c.numKvHeads * c.headDim / 4;
  const maxTex = ctx.device.limits.maxTextureDimension2D;
  // MLA attends on storage (its keys and values differ in width)
  if (!ctx.textures || c.mla || c.headDim % 4 !== 0 || texels > maxTex || cap > maxTex) return [];
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
  const widths = new Set([c.hiddenSize, c.numHeads * c.vHeadDim, c.expertFfn]);
  if (c.mla?.qLoraRank) widths.add(c.mla.qLoraRank);
  if (c.mla) widths.add(c.mla.kvLoraRank);
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
export function capForLimits(
  c: ModelConfig,
  maxBinding: number,
  maxTex: number,
  wanted: number,
): number {
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

/**
 * Grows the optional log buffers for a pass logging `o`: the full router
 * distribution [cap, M, E] when asked for, the lookahead picks [cap, M, D, k]
 * when D exceeds what is allocated. A bad lookahead is a DataError.
 */
export function ensureLogBuffers(
  ctx: GpuContext,
  c: ModelConfig,
  s: RunState,
  o: { probs: boolean; lookahead: number },
): void {
  if (!Number.isInteger(o.lookahead) || o.lookahead < 0) {
    throw new DataError(`Lookahead is ${o.lookahead}, expected a non-negative integer.`);
  }
  const M = moeLayers(c).length;
  if (o.probs && s.logProbs === null) {
    s.logProbs = ctx.pool.storage("log probs", s.cap * M * c.numExperts * 4);
  }
  if (o.lookahead > s.specD) {
    if (s.logSpec) ctx.pool.release(s.logSpec);
    s.logSpec = ctx.pool.storage("log spec", s.cap * M * o.lookahead * c.topK * 4);
    s.specD = o.lookahead;
  }
}

/** Writes the rows' `info` entries ([pos, kv_row, log_row, token_index] each) from row 0. */
export function writeRows(device: GPUDevice, s: RunState, rows: readonly number[][]): void {
  const info = new Uint32Array(rows.length * 4);
  rows.forEach((r, i) => info.set(r, i * 4));
  device.queue.writeBuffer(s.info, 0, info);
}

/** Points a one-row pass (a decode step) at the token at position `pos` of the sequence in rows [0, pos]. */
export function writeDecodeRow(device: GPUDevice, s: RunState, pos: number): void {
  device.queue.writeBuffer(s.info, 0, new Uint32Array([pos, pos, pos, pos]));
}

/** A DataError naming the first id of `seq` outside the vocabulary of `model` (V ids). */
export function checkTokens(seq: Uint32Array, vocabSize: number, model: string): void {
  for (const id of seq) {
    if (id >= vocabSize) {
      throw new DataError(
        `Token id ${id} is outside the vocabulary of ${model} (${vocabSize} ids).`,
      );
    }
  }
}
