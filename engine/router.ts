/**
 * The router of an MoE layer: one configurable router for every family, in
 * named steps so that each family's variant is a choice in each step, not a
 * router of its own:
 *
 *   logits:        [T, E] = xn [T, H] · W_router [H, E] (+ a logit bias: gpt-oss)
 *   scoring:       scores = softmax(logits) over the E experts (Mixtral, OLMoE,
 *                  Qwen, DeepSeek-V2), sigmoid(logits) (DeepSeek-V3, GLM-4.5), or
 *                  "softmax-over-k": choose by logit, weights = softmax of the k
 *                  chosen logits (Granite, gpt-oss; probs = softmax over all E)
 *   selection:     choice scores = scores + a selection bias (DeepSeek-V3's
 *                  `e_score_correction_bias`, for choosing only); optionally
 *                  group-limited (DeepSeek `n_group`/`topk_group`: only experts of
 *                  the best groups compete, a group scored by its best expert
 *                  (V2) or the sum of its best two (V3, GLM)); then the k highest,
 *                  in descending order (ties: lower id first)
 *   normalisation: gate weights = the chosen (unbiased) scores divided by their
 *                  sum ("sum": Mixtral, `norm_topk_prob`) or as they are ("none"),
 *                  times the routed scaling factor
 *
 * The fields are read from config.json as transformers' modeling code reads
 * them (config.ts). The kernel (kernels/router_topk.ts) fuses the steps after
 * the matmul and writes the chosen experts and the weights actually applied
 * for the expert kernels and the router log (router_log.ts), and `probs` =
 * the scores over all experts: softmax or sigmoid, which the trace manifest
 * records as `router_scores`.
 */
import { DataError } from "../common/errors.ts";
import type { ModelConfig } from "./config.ts";
import type { Recorder } from "./gpu.ts";
import { routerTopK } from "./kernels/router_topk.ts";
import { type Act, linear } from "./linear.ts";
import type { RunState } from "./run_state.ts";
import type { RouterWeights } from "./weights.ts";

export interface Router {
  /** E: experts scored per token (at most 256, the grouping kernel's limit). */
  readonly experts: number;
  /** k: experts chosen per token (at most 64, the kernel's register array). */
  readonly topK: number;
  /** Whether a bias is added to the router logits (gpt-oss `router.bias`). */
  readonly logitBias: boolean;
  /** Router logits → scores over all E, and how the weights come from them (see the file comment). */
  readonly scoring: "softmax" | "sigmoid" | "softmax-over-k";
  /** Scores → k experts. */
  readonly selection: {
    /** A per-expert bias added to the scores for choosing only. */
    readonly bias: boolean;
    /** Group-limited selection, or null: `count` groups, the `top` best compete, scored by "max" or "top2-sum". */
    readonly groups: { count: number; top: number; score: "max" | "top2-sum" } | null;
  };
  /** The k chosen scores → gate weights: divided by their sum, or unchanged (softmax-over-k: always a softmax). */
  readonly normalisation: "sum" | "none";
  /** The weights multiplied by this after normalisation (`routed_scaling_factor`; 1 otherwise). */
  readonly scale: number;
  /** What the `probs` log holds: softmax or sigmoid scores over all experts. */
  readonly probs: "softmax" | "sigmoid";
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
    logitBias: c.routing.logitBias,
    scoring: c.routing.scoring,
    selection: { bias: c.routing.selectionBias, groups: c.routing.groups },
    normalisation: c.routing.scoring === "softmax-over-k" || !c.normTopK ? "none" : "sum",
    scale: c.routing.scale,
    probs: c.routing.scoring === "sigmoid" ? "sigmoid" : "softmax",
  };
}

/** A one-line description of a router, for `inspect` and errors: e.g. "sigmoid + selection bias, top-8 of 256 in 4 of 8 groups (top2-sum), renormalised, × 2.5". */
export function describeRouter(r: Router): string {
  const parts = [r.scoring + (r.logitBias ? " + logit bias" : "")];
  if (r.selection.bias) parts[0] += " + selection bias";
  const g = r.selection.groups;
  parts.push(
    `top-${r.topK} of ${r.experts}` +
      (g ? ` in ${g.top} of ${g.count} groups (${g.score})` : ""),
  );
  if (r.normalisation === "sum") parts.push("renormalised");
  if (r.scale !== 1) parts.push(`× ${r.scale}`);
  return parts.join(", ");
}

/** One router evaluation in a pass: which router and weights, on which rows, logged as which MoE layer. */
export interface RouterCall {
  router: Router;
  /** The run state: router logits [T, E] go to `routerLogits`, the decision to `choice`, `choiceWeight` and the logs. */
  state: RunState;
  /** [T, H]: the MoE block's normalised input (post_attention_layernorm of the residual). */
  xn: Act;
  /** This layer's router, or layer l + d's for a lookahead pick. */
  weights: RouterWeights;
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
  const { state: s, weights: w } = call;
  const bias = w.logitBias ? { bias: w.logitBias } : {};
  linear(rec, call.xn, w.weight, { y: s.routerLogits, rows: call.rows, ...bias }, {
    bias: w.logitBias !== undefined,
  }, call.decode);
  recordRouting(rec, call, out);
}

/** Scoring, selection and normalisation of the logits already in the run state's `routerLogits` [T, E]. */
export function recordRouting(rec: Recorder, call: RouterCall, out: RouterOutput): void {
  const { router, state: s } = call;
  const args = {
    logits: s.routerLogits,
    info: s.info,
    tokens: call.rows,
    numExperts: router.experts,
    topK: router.topK,
    numMoe: call.numMoe,
    moeIndex: call.moeIndex,
    scoring: router.scoring,
    ...(call.weights.selectionBias ? { selectionBias: call.weights.selectionBias } : {}),
    groups: router.selection.groups,
    normalise: router.normalisation === "sum",
    scale: router.scale,
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
