/**
 * One-paragraph definitions of every statistic and column the report's
 * tables show, printed beside the table (the analysis folder's README.md has
 * the formulas in full). Notation: S_t the top-k set of token t, f_t its
 * first choice, E routed experts, q_e expert e's share of assignments.
 */
import { escapeHtml } from "./html.ts";

export const STATISTIC_DEFINITIONS: Record<string, string> = {
  first_choice_repeat:
    "Fraction of consecutive-token pairs (within a document) whose first-choice expert is the same, f_t = f_t−1 (Mixtral Table 5). Uniform baseline 1/E.",
  set_overlap:
    "Fraction of consecutive-token pairs whose top-k sets share at least one expert, |S_t ∩ S_t−1| ≥ 1. Uniform baseline 1 − C(E−k,k)/C(E,k) (46.4% for top-2 of 8).",
  h_norm:
    "CoSMoEs H_norm (Eq. 5): the mean fraction of a token's k experts that the previous token did not use. Uniform baseline 1 − k/E; lower means fewer uploads for an offloading cache.",
  ex_rep: "Expert replacement ratio, the mean |S_t \\ S_t−1| / k; the same number as h_norm.",
  l_norm:
    "CoSMoEs L_norm (Eq. 6): the mean L1 change of the router's softmax distribution between consecutive tokens (needs capture --probs). Baseline 0.",
  bies: "CoSMoEs block-wise selection loss (Eq. 7), h_norm × l_norm. Baseline 0.",
  delta_uniform:
    "ΔUniform: the mean relative deviation of the expert shares from 1/E, Σ_e |q_e − 1/E| (shown in percent; 0 = perfectly balanced). Baseline 0.",
  share_entropy:
    "Entropy of the expert shares, −Σ_e q_e log2 q_e, in bits (bias-corrected). log2 E, the uniform baseline, is perfect balance.",
  max_vio:
    "MaxVio: how far the busiest expert's load is above the mean load, (max_e load − mean)/mean. Baseline 0.",
  router_entropy:
    "Mean over tokens of the entropy of the router's distribution, in bits (needs --probs): low means a confident router. Uniform baseline log2 E.",
  topk_mass:
    "Mean over tokens of the probability the router puts on its k chosen experts (needs --probs). Uniform baseline k/E.",
  topk_margin:
    "Mean over tokens of the gap between the k-th and (k+1)-th largest router probabilities (needs --probs): a small margin means the choice was nearly a tie. Baseline 0.",
};

export const COLUMN_DEFINITIONS: Record<string, string> = {
  value: "the estimate (bias-corrected where the plug-in is biased).",
  plug_in: "the formula applied to the pooled counts, as the papers compute it.",
  ci_low: "with ci_high, the 95% interval (document jackknife, t quantiles).",
  baseline:
    "the value under uniform random routing (each token's top-k a uniformly random k-subset).",
  baseline_marginal:
    "the within-document shuffle baseline: the same documents with their tokens shuffled, which keeps every document's expert counts; a value above it is locality, above baseline only is popular experts.",
  p_value: "the test against random stated in README.md; q_value: Benjamini–Hochberg adjusted.",
  n_clusters: "documents (or buckets) the jackknife deleted one at a time.",
};

export const SIMULATION_DEFINITIONS: Record<string, string> = {
  hit_rate:
    "fraction of expert accesses found in the cache (a token at a layer accesses its k experts).",
  ms_per_token:
    "predicted milliseconds per token from the timing model: attention, expert compute and the wait for uploads, over the whole model.",
  loads_per_token: "expert uploads per token (demand misses plus prefetches), over all layers.",
  prefetch_precision:
    "predicted experts that the target layer then chose, over experts predicted (any lookahead).",
  prefetch_recall: "correctly predicted experts over k × the steps a prediction was asked for.",
  stall_ms_per_token: "time the layers waited for expert uploads, per token.",
};

/** A definition list of `terms` (in order, each once) from `definitions`. */
export function definitionList(
  terms: readonly string[],
  definitions: Record<string, string>,
): string {
  const shown = [...new Set(terms)].filter((t) => t !== "");
  if (shown.length === 0) return "";
  return `<dl class="definitions">${
    shown.map((t) =>
      `<dt>${escapeHtml(t)}</dt><dd>${
        escapeHtml(definitions[t] ?? "see the folder's README.md for its formula.")
      }</dd>`
    ).join("")
  }</dl>`;
}
