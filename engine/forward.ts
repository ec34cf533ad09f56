/**
 * The forward pass, recorded into a Recorder (llama2.c's `forward`, nanoGPT's
 * `GPT.forward`): embedding, then per layer
 *
 *   x += o_proj(attention(RMSNorm(x)))                         attentionBlock
 *   xn = RMSNorm(x)
 *   dense layer:  x += down(silu(gate(xn)) · up(xn))            denseFfn
 *   MoE layer:    router decision on xn (+ lookahead routers)  moeRouter
 *                 x += Σ_j w_j · expert_j(xn) (+ shared expert) moeExperts
 *
 * then the final RMSNorm and the LM head on the rows that need logits, and
 * the next token's choice. The MoE block is split at its router because the
 * offloaded decode (offload.ts through segments.ts) must read the decision
 * back and upload the chosen experts before they run: `plan.segment` stops
 * after a router and resumes at the same layer's experts.
 *
 * Rows: a pass computes rows [0, T) of the run state, each a token whose
 * position, K/V row and log row the `info` buffer gives (run_state.ts).
 * Decode passes (T < 16) use 1-row tiles, prefill 64-row tiles. Expert
 * grouping (moe_group.ts) writes a tile list whose length is bounded by
 * ceil(T·k / tile) + E, so no count is read back.
 */
import { type ModelConfig, moeLayers } from "./config.ts";
import type { Recorder } from "./gpu.ts";
import type { Attention, PassRows } from "./attention.ts";
import { attentionFlops } from "./kernels/attention.ts";
import { embedding } from "./kernels/embedding.ts";
import { matmulFlops, tileRows } from "./kernels/matmul.ts";
import { DECODE, matmulTex, PREFILL, texTileRows } from "./kernels/matmul_tex.ts";
import { moeCombine } from "./kernels/moe_combine.ts";
import { maxTiles, moeGroup } from "./kernels/moe_group.ts";
import { matmulMxfp4, MXFP4_TILE } from "./kernels/matmul_mxfp4.ts";
import { rmsnorm } from "./kernels/rmsnorm.ts";
import { sample } from "./kernels/sample.ts";
import { type Act, linear, stage } from "./linear.ts";
import type { Mxfp4Chunk } from "./mxfp4_weights.ts";
import { recordRouter, type Router } from "./router.ts";
import type { RunState } from "./run_state.ts";
import { type ExpertChunk, type LayerWeights, type Weights, wFormat } from "./weights.ts";

/** Everything a forward reads (llama2.c's `Transformer`): config, weights, run state, and the layer kinds. */
export interface Transformer {
  readonly config: ModelConfig;
  readonly weights: Weights;
  readonly state: RunState;
  readonly attention: Attention;
  readonly router: Router;
}

/** Routed experts read from GPU slots instead of the model's own: [MoE index] → slot chunks; choice ids are slot ids. */
export interface ExpertSlots {
  chunks: ExpertChunk[][];
  /** Slots the grouping kernel sorts rows into (per layer, or in a pool shared by all layers). */
  count: number;
}

/**
 * Routed experts streamed from host memory (expert_stream.ts): MoE layer m's
 * chunks as the kernels read them, each in a ring slot, and the host write
 * that puts chunk i there, recorded before the chunk's matmuls.
 */
export interface ExpertSource {
  chunks(m: number): ExpertChunk[];
  load(m: number, i: number): void;
}

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
   * Part of the forward only (the offloaded decode, segments.ts): resume at
   * layer `from`'s grouped experts (−1: from the embedding) and stop after
   * layer `to`'s router (and lookahead routers); undefined runs the whole pass.
   */
  segment?: { from: number; to: number };
  /** Routed experts from these slots instead of the model's own. */
  slots?: ExpertSlots;
  /** Routed experts streamed chunk by chunk through a ring of slots. */
  stream?: ExpertSource;
}

/** One pass: the recorder, what it reads, its plan and rows. */
interface Pass extends PassRows {
  rec: Recorder;
  t: Transformer;
  plan: ForwardPlan;
  /** The MoE layers' indices (moe_layers). */
  moe: readonly number[];
}

/** Records the whole forward pass, embedding to logits (or `plan.segment` of it), into `rec`. */
export function recordForward(rec: Recorder, t: Transformer, plan: ForwardPlan): void {
  const c = t.config;
  const moe = moeLayers(c);
  const lastMoe = moe[moe.length - 1] ?? -1;
  const p: Pass = { rec, t, plan, moe, rows: plan.tokens, decode: plan.tokens < 16 };
  const from = plan.segment?.from ?? -1, to = plan.segment?.to ?? c.numLayers;

  rec.section = "other";
  if (from < 0) embed(p);
  for (let l = Math.max(0, from); l < c.numLayers; l++) {
    const L = t.weights.layers[l]!;
    if (l === from) {
      // resuming at this layer's experts: its router input is still in xn (and its staging texture)
      moeExperts(p, l, routerInput(t.state, c.hiddenSize));
      continue;
    }
    rec.section = "layer";
    attentionBlock(p, l, L);
    const xn = normInto(p, L.postNorm, {
      rows: p.rows,
      buffer: !L.dense && !expertsOnTexture(p, l),
    });
    if (L.dense) {
      denseFfn(p, L.dense, xn);
      continue;
    }
    moeRouter(p, l, xn);
    if (l === to) return;
    if (plan.logits === "none" && l === lastMoe) return; // nothing later changes a router decision
    moeExperts(p, l, xn);
  }
  if (plan.logits !== "none") logits(p);
}

/** x [T, H] = embedding rows of the pass's token ids, one dispatch per row chunk of the table. */
function embed(p: Pass): void {
  const s = p.t.state;
  for (const chunk of p.t.weights.embed) {
    embedding(p.rec, {
      table: chunk.buffer,
      tokens: s.tokens,
      info: s.info,
      x: s.x,
      tokensCount: p.rows,
      hidden: p.t.config.hiddenSize,
      rowBase: chunk.first,
      rowCount: chunk.count,
    });
  }
}

/**
 * xn [rows, H] = RMSNorm(x rows from `inRowOffset`) · weight: straight into
 * the H staging texture when H takes the texture path, and then into the xn
 * buffer as well only with `buffer` (a reader on storage, such as routed
 * experts on the storage path, follows); else the buffer is left unwritten.
 */
function normInto(
  p: Pass,
  weight: GPUBuffer,
  at: { rows: number; inRowOffset?: number; buffer?: boolean },
): Act {
  const s = p.t.state, c = p.t.config;
  const { buffer, ...rows } = at;
  const args = { weight, ...rows, n: c.hiddenSize, eps: c.rmsEps };
  const tex = s.staging.get(c.hiddenSize);
  if (tex) {
    rmsnorm(p.rec, { ...args, x: s.x, y: tex.view, ...(buffer ? { yBuffer: s.xn } : {}) });
    return { buffer: s.xn, view: tex.view };
  }
  rmsnorm(p.rec, { ...args, x: s.x, y: s.xn });
  return { buffer: s.xn };
}

/**
 * Whether MoE layer l's routed experts (the model's or the pass's slots) read
 * xn through the H staging texture; else they read the xn buffer, which the
 * norm must then write too (issue 17: H on the texture path with experts on
 * storage, e.g. an expert width not a multiple of 64, read an unwritten buffer).
 */
function expertsOnTexture(p: Pass, l: number): boolean {
  const chunks = layerChunks(p, l);
  return chunks?.[0]?.w1.view !== undefined && p.t.state.staging.has(p.t.config.hiddenSize);
}

/** MoE layer l's routed expert chunks: the pass's slots, the stream's ring slots, or the model's own. */
function layerChunks(p: Pass, l: number): ExpertChunk[] | undefined {
  const m = p.moe.indexOf(l);
  return p.plan.slots?.chunks[m] ?? p.plan.stream?.chunks(m) ?? p.t.weights.layers[l]!.experts;
}

/** The MoE block input a previous pass left in xn (and in the H staging texture on the texture path). */
function routerInput(s: RunState, h: number): Act {
  const tex = s.staging.get(h);
  return tex ? { buffer: s.xn, view: tex.view } : { buffer: s.xn };
}

/**
 * x += o_proj(attention(input_layernorm(x))) (× Granite's residual
 * multiplier): o_proj [nq·dv, H] (+ bias) accumulates into the residual.
 */
function attentionBlock(p: Pass, l: number, L: LayerWeights): void {
  const xn = normInto(p, L.attnNorm, { rows: p.rows });
  const att = p.t.attention.record(p.rec, l, xn, p);
  const alpha = p.t.config.multipliers.residual;
  linear(
    p.rec,
    att,
    L.wo,
    {
      y: p.t.state.x,
      rows: p.rows,
      ...(L.bo ? { bias: L.bo } : {}),
      ...(alpha !== 1 ? { alpha } : {}),
    },
    { accumulate: true, bias: L.bo !== undefined, alpha: alpha !== 1 },
    p.decode,
  );
}

/** x += down(silu(gate(xn)) · up(xn)): gate and up [H, F] fused into one SwiGLU matmul, down [F, H]. */
function denseFfn(p: Pass, w: NonNullable<LayerWeights["dense"]>, xn: Act): void {
  const s = p.t.state;
  const f = p.t.config.denseFfn;
  linear(p.rec, xn, w.w1, { w3: w.w3, y: s.hidden, rows: p.rows }, { swiglu: true }, p.decode);
  const hidden = stage(p.rec, s, s.hidden, f, p.rows);
  linear(p.rec, hidden, w.w2, { y: s.x, rows: p.rows }, { accumulate: true }, p.decode);
}

/**
 * Layer l's router decision on xn (choice, gate weights, log), then with
 * lookahead D the picks of layers l + 1..l + D's routers on the same input
 * (the spec log; layers without a router stay 65535, filled on readback).
 */
function moeRouter(p: Pass, l: number, xn: Act): void {
  const { t, plan } = p;
  const call = {
    router: t.router,
    state: t.state,
    xn,
    rows: p.rows,
    decode: p.decode,
    moeIndex: p.moe.indexOf(l),
    numMoe: p.moe.length,
  };
  const weights = t.weights.layers[l]!.router!;
  recordRouter(p.rec, { ...call, weights }, { probs: plan.probs });
  for (let d = 1; d <= plan.lookahead; d++) {
    const target = t.weights.layers[l + d]?.router;
    if (target === undefined) continue;
    recordRouter(p.rec, { ...call, weights: target }, {
      lookahead: plan.lookahead,
      distance: d,
    });
  }
}

/**
 * x += Σ_j w_j · expert_j(xn) over each row's k chosen experts, plus the
 * shared expert where there is one. Rows are grouped by expert into tiles
 * (moe_group.ts), each expert's SwiGLU runs on its tiles (gate|up, then down
 * scaled by the row's gate weight into one output row per (token, choice)),
 * and moe_combine.ts adds a token's k outputs to x in choice order.
 */
function moeExperts(p: Pass, l: number, xn: Act): void {
  const { rec, t, plan } = p;
  const c = t.config, s = t.state, L = t.weights.layers[l]!;
  rec.section = "experts";
  const chunks = layerChunks(p, l);
  const mx = plan.slots || plan.stream ? undefined : L.mxfp4;
  if (chunks === undefined && mx === undefined) {
    throw new Error(
      `recordForward: layer ${l}'s experts are in host memory (hostExperts); run the model through offload.ts`,
    );
  }
  const numExperts = plan.slots?.count ?? c.numExperts;
  const texExperts = mx === undefined && expertsOnTexture(p, l);
  const tr = mx
    ? MXFP4_TILE
    : texExperts
    ? texTileRows(p.decode ? DECODE : PREFILL)
    : tileRows(p.decode ? 1 : 4);
  moeGroup(rec, {
    choice: s.choice,
    choiceWeight: s.choiceWeight,
    rowToken: s.rowToken,
    rowWeight: s.rowWeight,
    slotOf: s.slotOf,
    tiles: s.tiles,
    tokens: p.rows,
    topK: c.topK,
    numExperts,
    tileRows: tr,
    weightScale: c.multipliers.residual,
  });
  const tiles = maxTiles(p.rows * c.topK, numExperts, tr);
  const stream = plan.stream;
  if (mx) mxfp4Experts(p, mx, xn, tiles);
  else if (stream) {
    // chunk by chunk, each after the host write that puts it in its ring slot:
    // its rows are its experts' own, so the order of chunks changes no result
    const m = p.moe.indexOf(l);
    chunks!.forEach((chunk, i) => {
      rec.hostWrite(() => stream.load(m, i));
      if (texExperts) routedExpertsTex(p, [chunk], xn, tiles);
      else routedExperts(p, [chunk], xn, tiles);
    });
  } else if (texExperts) routedExpertsTex(p, chunks!, xn, tiles);
  else routedExperts(p, chunks!, xn, tiles);
  if (L.shared) {
    rec.section = "layer";
    sharedExpert(p, L.shared, xn);
  }
  rec.section = "experts";
  moeCombine(rec, {
    y: texExperts ? s.expertOutTex! : s.expertOut,
    slotOf: s.slotOf,
    x: s.x,
    tokens: p.rows,
    topK: c.topK,
    hidden: c.hiddenSize,
  });
}

/** The grouped arguments of one chunk of experts: which tiles, and which experts the chunk holds. */
function grouped(s: RunState, e: ExpertChunk, tiles: number) {
  return { tiles: s.tiles, rows: tiles, expertBase: e.first, expertCount: e.count };
}

/**
 * Routed experts with hidden states [T·k, F] and outputs [T·k, H] in
 * textures, written by textureStore and read by textureLoad.
 */
function routedExpertsTex(p: Pass, chunks: ExpertChunk[], xn: Act, tiles: number): void {
  const { rec, t } = p;
  const c = t.config, s = t.state;
  const hiddenTex = s.expertHiddenTex!, outTex = s.expertOutTex!;
  const shape = p.decode ? DECODE : PREFILL;
  for (const e of chunks) {
    matmulTex(rec, {
      a: xn.view!,
      w: e.w1.view!,
      w3: e.w3.view!,
      y: hiddenTex,
      rowToken: s.rowToken,
      k: c.hiddenSize,
      n: c.expertFfn,
      ...grouped(s, e, tiles),
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
    matmulTex(rec, {
      a: hiddenTex,
      w: e.w2.view!,
      y: outTex,
      scale: s.rowWeight,
      k: c.expertFfn,
      n: c.hiddenSize,
      ...grouped(s, e, tiles),
    }, { grouped: true, scale: "row", outTexture: true, shape, weights: wFormat(e.w2) });
  }
}

/** Routed experts on storage buffers: hidden [T·k, F], outputs [T·k, H]. */
function routedExperts(p: Pass, chunks: ExpertChunk[], xn: Act, tiles: number): void {
  const { rec, t } = p;
  const s = t.state;
  for (const e of chunks) {
    linear(
      rec,
      { buffer: xn.buffer },
      e.w1,
      {
        w3: e.w3,
        y: s.hidden,
        rowToken: s.rowToken,
        ...grouped(s, e, tiles),
      },
      { grouped: true, gather: true, swiglu: true },
      p.decode,
    );
  }
  for (const e of chunks) {
    linear(
      rec,
      { buffer: s.hidden },
      e.w2,
      {
        y: s.expertOut,
        scale: s.rowWeight,
        ...grouped(s, e, tiles),
      },
      { grouped: true, scale: "row" },
      p.decode,
    );
  }
}

/**
 * gpt-oss's routed experts from their MXFP4 blocks (kernels/matmul_mxfp4.ts):
 * hidden [T·k, F] = clamped SwiGLU of xn · gate_up + bias (gate and up rows
 * interleaved), outputs [T·k, H] = (hidden · down + bias) × the row's weight.
 */
function mxfp4Experts(p: Pass, chunks: Mxfp4Chunk[], xn: Act, tiles: number): void {
  const { rec, t } = p;
  const s = t.state, c = t.config;
  for (const e of chunks) {
    const where = { tiles: s.tiles, tiles_: tiles, expertBase: e.first, expertCount: e.count };
    matmulMxfp4(rec, {
      a: xn.buffer,
      ...e.gateUp,
      y: s.hidden,
      rowToken: s.rowToken,
      limit: c.swigluLimit,
      ...where,
    }, "swiglu-clamp");
  }
  for (const e of chunks) {
    const where = { tiles: s.tiles, tiles_: tiles, expertBase: e.first, expertCount: e.count };
    matmulMxfp4(
      rec,
      { a: s.hidden, ...e.down, y: s.expertOut, rowWeight: s.rowWeight, ...where },
      "bias-scale",
    );
  }
}

/**
 * x += down(silu(gate(xn)) · up(xn)) of the shared experts (DeepSeek's and
 * GLM's n_shared_experts fused into one FFN), scaled by sigmoid(xn · gate
 * [H, 1]) where the family gates it (qwen2_moe).
 */
function sharedExpert(p: Pass, w: NonNullable<LayerWeights["shared"]>, xn: Act): void {
  const { rec, t } = p;
  const s = t.state;
  if (w.gate) linear(rec, xn, w.gate, { y: s.sharedGate, rows: p.rows }, {}, p.decode);
  linear(rec, xn, w.w1, { w3: w.w3, y: s.hidden, rows: p.rows }, { swiglu: true }, p.decode);
  const hidden = stage(rec, s, s.hidden, t.config.sharedFfn, p.rows);
  if (!w.gate) {
    linear(rec, hidden, w.w2, { y: s.x, rows: p.rows }, { accumulate: true }, p.decode);
    return;
  }
  linear(rec, hidden, w.w2, { y: s.x, scale: s.sharedGate, rows: p.rows }, {
    scale: "sigmoid",
    accumulate: true,
  }, p.decode);
}

/**
 * Final RMSNorm and LM head [H, V] (in column chunks) on the last row into
 * the run state's logits row, or on every row into `plan.allLogits`
 * [T, V]; then the next token's choice after the last row.
 */
function logits(p: Pass): void {
  const { rec, t, plan } = p;
  const c = t.config, s = t.state;
  rec.section = "other";
  const all = plan.logits === "all";
  const rows = all ? p.rows : 1;
  const xn = normInto(p, t.weights.norm, { rows, inRowOffset: all ? 0 : p.rows - 1 });
  const out = all ? plan.allLogits! : s.logits;
  for (const chunk of t.weights.lmHead) {
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
      row: p.rows - 1,
      ...plan.sample,
    });
  }
}

/** FLOPs of one layer's attention projections over T rows: q|k|v and o, or MLA's low-rank chain. */
function attentionProjectionFlops(c: ModelConfig, T: number): number {
  const h = c.hiddenSize, d = c.headDim, m = c.mla, nq = c.numHeads;
  if (m === null) {
    return matmulFlops(T, (nq + 2 * c.numKvHeads) * d, h) + matmulFlops(T, h, nq * d);
  }
  const q = m.qLoraRank === null
    ? matmulFlops(T, nq * d, h)
    : matmulFlops(T, m.qLoraRank, h) + matmulFlops(T, nq * d, m.qLoraRank);
  return q + matmulFlops(T, m.kvLoraRank + m.ropeDim, h) +
    matmulFlops(T, nq * (m.nopeDim + c.vHeadDim), m.kvLoraRank) +
    matmulFlops(T, h, nq * c.vHeadDim);
}

/** FLOPs of a forward over sequences of these lengths (`route`: up to the last router; else to logits of every token). */
export function forwardFlops(c: ModelConfig, lengths: number[], upTo: "route" | "logits"): number {
  const h = c.hiddenSize, d = c.headDim, k = c.topK;
  const T = lengths.reduce((a, b) => a + b, 0);
  const moe = moeLayers(c);
  const last = upTo === "route" ? (moe[moe.length - 1] ?? -1) : c.numLayers;
  let flops = 0;
  for (let l = 0; l < c.numLayers && l <= last; l++) {
    flops += attentionProjectionFlops(c, T);
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
