/**
 * Multi-head latent attention (DeepSeek-V2/V3), one implementation of the
 * Attention interface (attention.ts), as transformers' eager path computes it:
 *
 *   q        = xn · Wq                      (q_lora_rank null)
 *            = RMSNorm(xn · Wq_a + b) · Wq_b (q_lora_rank set; norm eps 1e-6)
 *   ckv      = xn · Wkv_a (+ b)             [T, kv_lora_rank + rope]
 *   latent   = RMSNorm(ckv[:kv_lora_rank]); k_rope = RoPE(ckv[kv_lora_rank:]);
 *   q[:, h, nope:] = RoPE(...)             (kernels/mla_latent.ts)
 *   kv       = latent · Wkv_b                per head: k_nope | v
 *   K, V     = [k_nope | k_rope], v per head into the layer's store (kernels/mla_kv.ts)
 *   out      = softmax(q·Kᵀ · scale) · V     (kernels/attention.ts, dv ≠ d)
 *
 * with scale = 1/√(nope + rope), × mscale(factor, mscale_all_dim)² under
 * YaRN. The store holds the expanded per-head keys and values, as
 * transformers' cache does after expand_kv, not the compressed latent: simple
 * and exact, but nq·(nope + rope + dv) floats per token and layer. Activations
 * whose width takes the texture path (q_lora_rank, kv_lora_rank, nq·dv) are
 * staged for the texture matmul; the rest runs on storage buffers.
 */
import type { Attention } from "./attention.ts";
import type { ModelConfig } from "./config.ts";
import { attention } from "./kernels/attention.ts";
import { mlaKv } from "./kernels/mla_kv.ts";
import { mlaLatent } from "./kernels/mla_latent.ts";
import { rmsnorm } from "./kernels/rmsnorm.ts";
import { linear, stage } from "./linear.ts";
import type { RunState } from "./run_state.ts";
import type { Weights } from "./weights.ts";

export function mlaAttention(c: ModelConfig, w: Weights, s: RunState): Attention {
  const m = c.mla!, scratch = s.mla!;
  const nq = c.numHeads;
  return {
    path: "storage",
    record(rec, l, xn, { rows: T, decode }) {
      const L = w.layers[l]!, W = L.mla!;
      // the compressed K/V with the shared rope key (first: the q_a norm may reuse xn's staging texture)
      const bias = W.bkva ? { bias: W.bkva } : {};
      linear(rec, xn, W.wkva, { y: scratch.ckv, rows: T, ...bias }, {
        bias: W.bkva !== undefined,
      }, decode);
      // q [T, nq (nope + rope)]
      if (W.wq) linear(rec, xn, W.wq, { y: s.q, rows: T }, {}, decode);
      else {
        const bias = W.bqa ? { bias: W.bqa } : {};
        linear(rec, xn, W.wqa!, { y: scratch.qa!, rows: T, ...bias }, {
          bias: W.bqa !== undefined,
        }, decode);
        const qr = m.qLoraRank!, tex = s.staging.get(qr);
        const normArgs = { x: scratch.qa!, weight: W.qaNorm!, rows: T, n: qr, eps: m.normEps };
        rmsnorm(rec, { ...normArgs, y: tex ? tex.view : scratch.qaNorm! });
        const qa = tex ? { buffer: scratch.qaNorm!, view: tex.view } : { buffer: scratch.qaNorm! };
        linear(rec, qa, W.wqb!, { y: s.q, rows: T }, {}, decode);
      }
      mlaLatent(rec, {
        ckv: scratch.ckv,
        norm: W.kvaNorm,
        rope: w.rope,
        info: s.info,
        latent: scratch.latent,
        kRope: scratch.kRope,
        q: s.q,
        tokens: T,
        kvLoraRank: m.kvLoraRank,
        ropeDim: m.ropeDim,
        nopeDim: m.nopeDim,
        numHeads: nq,
        eps: m.normEps,
        interleaved: c.rope.interleaved,
      });
      const latent = stage(rec, s, scratch.latent, m.kvLoraRank, T);
      linear(rec, latent, W.wkvb, { y: scratch.kv, rows: T }, {}, decode);
      mlaKv(rec, {
        kv: scratch.kv,
        kRope: scratch.kRope,
        info: s.info,
        kCache: s.kCache[l]!,
        vCache: s.vCache[l]!,
        tokens: T,
        numHeads: nq,
        nopeDim: m.nopeDim,
        ropeDim: m.ropeDim,
        vHeadDim: c.vHeadDim,
      });
      attention(rec, {
        q: s.q,
        kCache: s.kCache[l]!,
        vCache: s.vCache[l]!,
        info: s.info,
        out: s.att,
        tokens: T,
        numHeads: nq,
        numKvHeads: nq,
        headDim: c.headDim,
        vHeadDim: c.vHeadDim,
        window: c.window[l] ?? null,
        scale: c.attentionScale,
      });
      return stage(rec, s, s.att, nq * c.vHeadDim, T);
    },
  };
}
