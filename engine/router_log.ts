/**
 * The router log: what every MoE layer decided for every token, written on
 * the GPU by the router kernel (router.ts) into the run state's log buffers
 * and read back once per pass.
 *
 * Per token t and MoE layer index m (the position of layer l in `moe_layers`):
 * - experts[t, m, :] the k experts layer l uses, first choice first (by
 *   selection score: probability, biased sigmoid score or logit, router.ts);
 *   weights[t, m, :] the gate weights applied to their outputs (renormalised
 *   where the family does, times a routed scaling factor, or a softmax over the
 *   k chosen logits: they need not sum to 1); probs[t, m, :] the router's
 *   scores over all experts in f32, softmax or sigmoid (Router.probs).
 * - spec[t, m, d − 1, :]: the top-k of layer (l + d)'s router applied to the
 *   input of layer l's router, i.e. post_attention_layernorm_l(h), where h is
 *   the residual stream after layer l's attention — exactly the vector layer
 *   l's own router sees. 65535 where layer l + d does not exist or has no MoE
 *   block (counted in layers, not MoE layers).
 */
import { DataError } from "../common/errors.ts";
import { type ModelConfig, moeLayers } from "./config.ts";
import { type GpuContext, readBack } from "./gpu.ts";
import type { RunState } from "./run_state.ts";

export interface RouterLog {
  /** [T, M, k] chosen experts, first choice first. */
  experts: Uint16Array;
  /** [T, M, k] gate weights actually applied. */
  weights: Float32Array;
  /** [T, M, E] the router's scores over all experts, softmax or sigmoid (when asked). */
  probs?: Float32Array;
  /** [T, M, D, k] top-k of layer l+d's router on layer l's router input; 65535 where l+d has no MoE layer. */
  spec?: Uint16Array;
}

/** What a pass logs besides experts and weights. */
export interface RouteOptions {
  /** The full router distribution [T, M, E]. */
  probs: boolean;
  /** D: the top-k of the D following layers' routers on each MoE layer's router input. */
  lookahead: number;
}

/**
 * Reads log rows [0, T) split at `counts` (one log per sequence), plus the
 * first `tokens` token ids of the run state, in one readback.
 */
export async function readRouterLogs(
  ctx: GpuContext,
  c: ModelConfig,
  s: RunState,
  read: { rows: number; counts: readonly number[]; tokens?: number; options: RouteOptions },
): Promise<{ logs: RouterLog[]; ids: Uint32Array }> {
  const moe = moeLayers(c);
  const T = read.rows, M = moe.length, k = c.topK, E = c.numExperts;
  const { probs: withProbs, lookahead: D } = read.options;
  const parts = [
    { buffer: s.logExperts, bytes: T * M * k * 4 },
    { buffer: s.logWeights, bytes: T * M * k * 4 },
  ];
  if (withProbs) parts.push({ buffer: s.logProbs!, bytes: T * M * E * 4 });
  if (D > 0) parts.push({ buffer: s.logSpec!, bytes: T * M * D * k * 4 });
  parts.push({ buffer: s.tokens, bytes: (read.tokens ?? 0) * 4 });
  const data = await readBack(ctx, parts);
  const ids = new Uint32Array(data[data.length - 1]!);
  const experts = new Uint32Array(data[0]!);
  const weights = new Float32Array(data[1]!);
  const probs = withProbs ? new Float32Array(data[2]!) : null;
  const spec = D > 0 ? new Uint32Array(data[withProbs ? 3 : 2]!) : null;
  checkFinite(experts, weights, { counts: read.counts, moe, k, experts: E });
  const logs: RouterLog[] = [];
  let row = 0;
  for (const n of read.counts) {
    const log: RouterLog = {
      experts: Uint16Array.from(experts.subarray(row * M * k, (row + n) * M * k)),
      weights: weights.slice(row * M * k, (row + n) * M * k),
    };
    if (probs) log.probs = probs.slice(row * M * E, (row + n) * M * E);
    if (spec) {
      // The kernel writes only picks of layers that exist and have a router; the rest stay 65535.
      const out = new Uint16Array(n * M * D * k).fill(65535);
      for (let t = 0; t < n; t++) {
        for (let m = 0; m < M; m++) {
          for (let d = 1; d <= D; d++) {
            if (!c.isMoe[moe[m]! + d]) continue;
            const src = (((row + t) * M + m) * D + d - 1) * k;
            out.set(spec.subarray(src, src + k), ((t * M + m) * D + d - 1) * k);
          }
        }
      }
      log.spec = out;
    }
    logs.push(log);
    row += n;
  }
  return { logs, ids };
}

/**
 * Refuses a log whose router saw a NaN or infinite logit (the kernel logs
 * expert 65535 for it) or whose gate weight is not finite: such choices are
 * meaningless (a config or weight that overflows float32 makes every token
 * pick experts 0 and 1 with equal weights), and a trace of them would analyse
 * as perfect repetition. Names the layer, the sequence and the token.
 */
function checkFinite(
  experts: Uint32Array,
  weights: Float32Array,
  o: { counts: readonly number[]; moe: number[]; k: number; experts: number },
): void {
  const M = o.moe.length;
  let bad = -1;
  for (let i = 0; i < weights.length; i++) {
    if (experts[i]! >= o.experts || !Number.isFinite(weights[i]!)) {
      bad = i;
      break;
    }
  }
  if (bad < 0) return;
  let row = Math.floor(bad / (M * o.k));
  const layer = o.moe[Math.floor(bad / o.k) % M]!;
  let sequence = 0;
  while (sequence < o.counts.length - 1 && row >= o.counts[sequence]!) row -= o.counts[sequence++]!;
  const what = experts[bad]! >= o.experts
    ? "logits that are NaN, infinite or all equal"
    : "a gate weight that is not finite";
  throw new DataError(
    `The router of layer ${layer} gave ${what} at token ${row} of sequence ${sequence}: the activations are not finite (a checkpoint weight or a config.json number out of float32's range), so its choices would be meaningless; nothing was logged.`,
  );
}

/** The log of the first `rows` tokens (generation cut at its stop token). */
export function firstRows(
  log: RouterLog,
  rows: number,
  shape: { moeLayers: number; topK: number; experts: number; lookahead: number },
): RouterLog {
  const { moeLayers: M, topK: k, experts: E, lookahead: D } = shape;
  const out: RouterLog = {
    experts: log.experts.slice(0, rows * M * k),
    weights: log.weights.slice(0, rows * M * k),
  };
  if (log.probs) out.probs = log.probs.slice(0, rows * M * E);
  if (log.spec) out.spec = log.spec.slice(0, rows * M * D * k);
  return out;
}
