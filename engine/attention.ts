/**
 * Self-attention of one layer, behind one interface: the forward (forward.ts)
 * hands it the normalised residual and adds o_proj of what it returns, so an
 * attention variant is one more implementation with its weights in
 * weights.ts and its buffers in run_state.ts, and nothing in the transformer
 * loop changes. Multi-head latent attention (DeepSeek) is mla.ts; attention
 * sinks (gpt-oss), partial rotary (GLM) and Granite's score scale are options
 * of the grouped-query implementations here.
 *
 * The implementations are the same computation (Hugging Face's eager
 * attention in f32) on different memory:
 * - "texture": q|k|v, q, K/V and the output never touch storage buffers
 *   (matmul_tex.ts writes q|k|v into a texture, qkv_prepare.ts writes q and
 *   K/V textures, attention.ts reads them). Taken when the q|k|v weight is a
 *   texture and H, nq·d and nkv·d take the texture path (d % 8 = 0).
 * - "storage, K/V textures": q|k|v and the K/V store in buffers, mirrored
 *   into per-layer textures (kv_texture.ts) that attention reads (d % 4 = 0).
 * - "storage": buffers throughout (the random fixtures' odd sizes, or a
 *   context without textures), the kernels the Hugging Face goldens pin.
 * model_test.ts checks that the paths agree.
 */
import type { ModelConfig } from "./config.ts";
import type { Recorder } from "./gpu.ts";
import { attention } from "./kernels/attention.ts";
import { kvTexture } from "./kernels/kv_texture.ts";
import { DECODE, matmulTex, PREFILL } from "./kernels/matmul_tex.ts";
import { qkvPrepare, qkvPrepareTex } from "./kernels/qkv_prepare.ts";
import { type Act, linear, stage } from "./linear.ts";
import type { RunState } from "./run_state.ts";
import { type LayerWeights, type Weights, wFormat } from "./weights.ts";

/** Which memory an attention implementation runs on (see the file comment). */
export type AttentionPath = "texture" | "storage, K/V textures" | "storage";

/** The rows one pass computes: rows [0, rows) of the run state, `decode` when rows < 16 (1-row tiles). */
export interface PassRows {
  rows: number;
  decode: boolean;
}

export interface Attention {
  readonly path: AttentionPath;
  /**
   * Records layer l's attention for rows [0, T) of `xn` [T, H] (the input
   * RMSNorm of the residual): q|k|v = xn · Wqkv [H, (nq + 2 nkv) d] (+ bias);
   * q/k norm, clamp and RoPE at each row's position; k and v stored at each
   * row's kv_row of layer l's K/V store; out = softmax(q·Kᵀ / √d) · V over
   * the keys the row sees (causal, within the layer's window, its own
   * sequence). Returns out [T, nq·d] as o_proj reads it.
   */
  record(rec: Recorder, l: number, xn: Act, pass: PassRows): Act;
}

/** The attention this model's weights and run state allow, fastest first. */
export function attentionFor(c: ModelConfig, w: Weights, s: RunState): Attention {
  if (s.attnTex) return textureAttention(c, w, s, s.attnTex);
  return storageAttention(c, w, s);
}

/** The q/k/v preparation arguments every path shares: heads, norms, clamp, RoPE table. */
function prepareArgs(c: ModelConfig, w: Weights, s: RunState, L: LayerWeights, rows: number) {
  return {
    rope: w.rope,
    info: s.info,
    ...(L.qNorm ? { qNorm: L.qNorm, kNorm: L.kNorm! } : {}),
    tokens: rows,
    numHeads: c.numHeads,
    numKvHeads: c.numKvHeads,
    headDim: c.headDim,
    ropeDim: c.rope.dim,
    eps: c.rmsEps,
    clip: c.clipQkv ?? 0,
  };
}

/** The score arguments every path shares: scale, window and sinks of layer l. */
function scoreArgs(c: ModelConfig, L: LayerWeights, l: number) {
  return {
    window: c.window[l] ?? null,
    scale: c.attentionScale,
    ...(L.sinks ? { sinks: L.sinks } : {}),
  };
}

/** q|k|v, q, K/V and the output in textures end to end. */
function textureAttention(
  c: ModelConfig,
  w: Weights,
  s: RunState,
  tex: { qkv: GPUTextureView; q: GPUTextureView },
): Attention {
  // the attention output is written straight into the staging texture o_proj reads
  const out = s.staging.get(c.numHeads * c.headDim)!.view;
  return {
    path: "texture",
    record(rec, l, xn, { rows: T, decode }) {
      const L = w.layers[l]!, wqkv = L.wqkv!;
      matmulTex(rec, {
        a: xn.view!,
        w: wqkv.view!,
        y: tex.qkv,
        rows: T,
        k: c.hiddenSize,
        n: wqkv.n,
        ...(L.bqkv ? { bias: L.bqkv } : {}),
      }, {
        bias: L.bqkv !== undefined,
        outTexture: true,
        shape: decode ? DECODE : PREFILL,
        weights: wFormat(wqkv),
      });
      qkvPrepareTex(rec, {
        qkv: tex.qkv,
        q: tex.q,
        kTex: s.kTex[l]!,
        vTex: s.vTex[l]!,
        ...prepareArgs(c, w, s, L, T),
      }, c.qkNorm);
      attention(rec, {
        q: tex.q,
        kCache: s.kTex[l]!,
        vCache: s.vTex[l]!,
        info: s.info,
        out,
        tokens: T,
        numHeads: c.numHeads,
        numKvHeads: c.numKvHeads,
        headDim: c.headDim,
        ...scoreArgs(c, L, l),
      });
      return { buffer: s.att, view: out };
    },
  };
}

/** q|k|v and the K/V store in buffers; attention reads texture mirrors of K/V when the run state has them. */
function storageAttention(c: ModelConfig, w: Weights, s: RunState): Attention {
  const kvTex = s.kTex.length > 0;
  return {
    path: kvTex ? "storage, K/V textures" : "storage",
    record(rec, l, xn, { rows: T, decode }) {
      const L = w.layers[l]!;
      const bias = L.bqkv ? { bias: L.bqkv } : {};
      linear(
        rec,
        xn,
        L.wqkv!,
        { y: s.qkv, rows: T, ...bias },
        { bias: L.bqkv !== undefined },
        decode,
      );
      qkvPrepare(rec, {
        qkv: s.qkv,
        q: s.q,
        kCache: s.kCache[l]!,
        vCache: s.vCache[l]!,
        ...prepareArgs(c, w, s, L, T),
      }, c.qkNorm);
      if (kvTex) {
        kvTexture(rec, {
          kCache: s.kCache[l]!,
          vCache: s.vCache[l]!,
          info: s.info,
          kTex: s.kTex[l]!,
          vTex: s.vTex[l]!,
          tokens: T,
          texels: c.numKvHeads * c.headDim / 4,
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
        headDim: c.headDim,
        ...scoreArgs(c, L, l),
      });
      return stage(rec, s, s.att, c.numHeads * c.headDim, T);
    },
  };
}
