/**
 * The router of an MoE layer, in three named steps so that each family's
 * variant is one case of one step:
 *
 *   scoring:       logits [T, E] = xn [T, H] · W_router [H, E];
 *                  scores = softmax(logits) over the E experts (f32, max-subtracted)
 *   selection:     the k highest scores per token, in descending order (ties: lower id first)
 *   normalisation: gate weights = the chosen scores divided by their sum ("sum":
 *                  Mixtral, `norm_topk_prob`), or the scores as they are ("none")
 *
 * Variants to come fit the same three steps: sigmoid scores with a correction
 * bias that steers selection only (DeepSeek-V3, GLM), group-limited top-k
 * (DeepSeek-V2/V3), softmax over the top-k logits (Granite, gpt-oss), a
 * routed scaling factor. `Router` describes a layer's choice of each; the
 * kernel (kernels/router_topk.ts) fuses the three steps after the matmul and
 * writes the chosen experts and weights for the expert kernels and the
 * router log (router_log.ts) at each row's log row.
 */
import { DataError } from "../common/errors.ts";
import type { ModelConfig } from "./config.ts";
import type { Recorder } from "./gpu.ts";
import { routerTopK } from "./kernels/router_topk.ts";
import { type Act, linear } from "./linear.ts";
import type { RunState } from "./run_state.ts";
import type { Linear } from "./weights.ts";

export interface Router {
  /** E: experts scored per token. */
  readonly experts: number;
  /** k: experts chosen per token (at most 64, the kernel's register array). */
  readonly topK: number;
  /** Router logits → scores: softmax over all E. */
  readonly scoring: "softmax";
  /** Scores → k experts: the k highest. */
  readonly selection: "top-k";
  /** The k chosen scores → gate weights: divided by their sum, or unchanged. */
  readonly normalisation: "sum" | "none";
}

/** The largest k the router kernel holds in registers. */
const MAX_TOP_K = 64;

/** The router of a config's MoE layers (all of a model's layers route alike); `source` names config.json in errors. */
export function routerFor(c: ModelConfig, source: string): Router {
  if (c.topK > MAX_TOP_K) {
    throw new DataError(
      `Field num_experts_per_tok in ${source} is ${c.topK}, expected at most ${MAX_TOP_K}.`,
    );
  }
  return {
    experts: c.numExperts,
    topK: c.topK,
    scoring: "softmax",
    selection: "top-k",
    normalisation: c.normTopK ? "sum" : "none",
  };
}

/** One router evaluation in a pass: which router and weight, on which rows, logged as which MoE layer. */
export interface RouterCall {
  router: Router;
  /** The run state: router logits [T, E] go to `routerLogits`, the decision to `choice`, `choiceWeight` and the logs. */
  state: RunState;
  /** [T, H]: the MoE block's normalised input (post_attention_layernorm of the residual). */
  xn: Act;
  /** [H, E]: this layer's router, or layer l + d's for a lookahead pick. */
  weight: Linear;
  rows: number;
  decode: boolean;
  /** m: index among the MoE layers of the layer whose input this is, and M. */
  moeIndex: number;
  numMoe: number;
}

/**
 * What a router call writes: the decision (the chosen experts and gate
 * weights [T, k] for the expert kernels, and the log; with `probs` the scores
 * [T, E] too), or a lookahead pick (the top-k ids only, at distance d of D in
 * the spec log).
 */
export type RouterOutput = { probs: boolean } | { lookahead: number; distance: number };

/** Records the router matmul into the run state's logits [T, E], then scoring, selection and normalisation. */
export function recordRouter(rec: Recorder, call: RouterCall, out: RouterOutput): void {
  const { router, state: s } = call;
  linear(rec, call.xn, call.weight, { y: s.routerLogits, rows: call.rows }, {}, call.decode);
  const args = {
    logits: s.routerLogits,
    info: s.info,
    tokens: call.rows,
    numExperts: router.experts,
    topK: router.topK,
    numMoe: call.numMoe,
    moeIndex: call.moeIndex,
    normalise: router.normalisation === "sum",
  };
  if ("lookahead" in out) {
    routerTopK(rec, args, {
      logSpec: s.logSpec!,
      lookahead: out.lookahead,
      distance: out.distance,
    });
    return;
  }
  routerTopK(rec, args, {
    choice: s.choice,
    choiceWeight: s.choiceWeight,
    logExperts: s.logExperts,
    logWeights: s.logWeights,
    ...(out.probs ? { logProbs: s.logProbs! } : {}),
  });
}
