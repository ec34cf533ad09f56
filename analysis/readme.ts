/** The README.md written next to the analysis outputs: every file, column and formula. */
import { overlapProbability } from "./baselines.ts";
import type { AnalysisResult } from "./run.ts";

export function readme(result: AnalysisResult): string {
  const { experts: E, topK: k, layers: M, probs } = result.dims;
  const model = result.manifest.model;
  const r = result.resamples;
  const pct = (x: number) => (100 * x).toFixed(1) + "%";
  return `# moetrace analysis

Trace: model \`${model.name}\` (${model.family}), M = ${M} MoE layers (model indices
${model.moe_layers.join(", ")}), E = ${E} routed experts, top-k = ${k}; ${result.totals.n_docs}
documents, ${result.totals.n_tokens} tokens, domains: ${
    result.domains.map((d) => `${d.name} (${d.n_docs} docs, ${d.n_tokens} tokens)`).join(", ")
  }. Router distribution (\`probs\`) ${
    probs ? "present" : "absent: the statistics marked (probs) are not computed"
  }.

${result.notes.length > 0 ? `## Notes\n\n${result.notes.map((n) => `- ${n}`).join("\n")}\n` : ""}
## Conventions (all CSVs)

- Tidy: one observation per row, snake_case columns, plain decimal numbers, empty cell = not defined.
- \`layer\`: the MoE layer's index in the model (\`model.moe_layers\`); \`layer_next\`: the next MoE layer.
- \`domain\`: a domain of the trace, or \`all\` for the whole corpus. Statistics are computed from
  pooled counts (a ratio of sums over the domain's tokens), not as means of per-document values.
- \`n_docs\`, \`n_tokens\`: documents and tokens behind the row; \`n_pairs\`: consecutive-token pairs
  (tokens − 1 per document; pairs never cross documents).
- \`ci_low\`, \`ci_high\`: 95% percentile interval of a **document-level (cluster) bootstrap**: each
  resample draws a domain's n documents n times with replacement and sums their per-document
  sufficient statistics (counts) with those multiplicities; \`all\` rows sum the domains' resamples
  (stratified by domain). \`n_boot\`: resamples used (${r.documents} for document statistics).
  Co-activation and flow tables are too large to keep per document: documents are dealt in trace
  order round-robin into at most ${result.buckets} buckets per domain (a domain with fewer
  documents has one per bucket) and the bootstrap resamples buckets (clusters of whole documents;
  ${r.buckets} resamples). Seeded by \`--seed\`. Outcomes too rare to be seen (expected count
  below ~10, e.g. large overlaps when E ≫ k) get degenerate intervals such as [0, 0].
- \`baseline\`: the value under uniform random, independent routing (each token's top-k an independent
  uniformly random k-subset), analytic where one exists; for plug-in statistics that are biased at
  finite size (share entropy, MaxVio, ΔUniform, vocabulary specialisation, mutual information)
  the expectation at the row's token count by simulation (for mutual information, its
  first-order bias); for router-probability statistics the uniform router's value.
  Note: for those biased plug-in statistics the bootstrap distribution is shifted by the same bias,
  so compare value with baseline, not the interval with the baseline.

Notation: for token t at a layer, S_t is its top-k set, f_t its first choice, s_t its second;
T tokens, P pairs (t−1, t) within documents; c_first(e), c_second(e), c_any(e) count tokens with
f_t = e, s_t = e, e ∈ S_t.

## Files

### expert_shares.csv (Mixtral Fig. 7 and 9; OLMoE)
Columns: layer, domain, expert, choice, share, ci_low, ci_high, baseline, n_docs, n_tokens, n_boot.
- \`choice = first\`: c_first(e)/T, baseline 1/E.
- \`choice = second\`: c_second(e)/T, baseline 1/E (absent when k = 1).
- \`choice = top_k\`: c_any(e)/(k·T), the share of all assignments ("either choice"), baseline 1/E.
- \`choice = token_fraction\`: c_any(e)/T, OLMoE's normalisation (fraction of tokens with e in their
  top-k), baseline k/E.

### repetition.csv (Mixtral Table 5 and Fig. 10)
Columns: layer, domain, statistic, value, ci_low, ci_high, baseline, n_docs, n_tokens, n_pairs, n_boot.
- \`first_choice_repeat\`: #{pairs with f_t = f_t−1}/P, baseline 1/E.
- \`set_overlap\`: #{pairs with |S_t ∩ S_t−1| ≥ 1}/P, baseline 1 − C(E−k,k)/C(E,k) = ${
    pct(1 - overlapProbability(E, k, 0))
  } here (46.4% for E = 8, k = 2).

### overlap_distribution.csv
Columns: layer, domain, overlap, proportion, ci_low, ci_high, baseline, n_docs, n_tokens, n_pairs, n_boot.
- \`proportion\`: #{pairs with |S_t ∩ S_t−1| = overlap}/P for overlap = 0..k; baseline the
  hypergeometric C(k,j)·C(E−k,k−j)/C(E,k).

### cosmoes.csv (CoSMoEs, Huber et al. 2025)
Columns: layer, domain, statistic, value, ci_low, ci_high, baseline, n_docs, n_tokens, n_pairs, n_boot.
The paper's exact equations were not available to us; these are the definitions implemented:
- \`ex_rep\` (expert replacement ratio): mean over pairs of |S_t \\ S_t−1| / k, the fraction of a
  token's experts not used by the previous token. Baseline 1 − k/E.
- \`h_norm\` (hard expert replacements, normalised; Eq. 4–5 as we read them): mean over pairs of
  |S_t \\ S_t−1| / min(k, E−k), replacements divided by the most that are possible. Baseline
  k(1 − k/E)/min(k, E−k). Equals ex_rep when k ≤ E/2.
- \`l_norm\` (soft selection, probs): mean over pairs of 1 − Σ_{e∈S_t−1} p_t(e), the router
  probability mass of token t that leaves the previous token's set. Baseline 1 − k/E.
- \`bies\` (block-wise expert selection loss, probs; Eq. 6–7 as we read them): h_norm · l_norm.
  Baseline the product of the two baselines.
- \`delta_uniform\` (ΔUniform): 100 · (1/E) Σ_e |c_any(e)/(kT) − 1/E|, the mean absolute difference
  between the realised assignment shares and 1/E, in percent (percentage points).

### load_balance.csv
Columns: as cosmoes.csv.
- \`share_entropy\`: −Σ_e q_e log2 q_e with q_e = c_any(e)/(kT), bits (log2 E = ${
    Math.log2(E).toFixed(3)
  } is perfect balance).
- \`max_vio\`: (max_e c_any(e) − mean)/mean with mean = kT/E.
- \`router_entropy\` (probs): mean over tokens of −Σ_e p_t(e) log2 p_t(e), bits; baseline log2 E.
- \`topk_mass\` (probs): mean over tokens of the sum of the k largest probabilities; baseline k/E.
- \`topk_margin\` (probs): mean over tokens of p_(k) − p_(k+1), the gap between the k-th and
  (k+1)-th largest probabilities; baseline 0.

### coactivation.csv (OLMoE)
Columns: layer, domain, expert_i, expert_j, n_i, n_ij, coactivation, ci_low, ci_high, baseline,
lift, lift_ci_low, lift_ci_high, n_docs, n_tokens, n_boot.
- n_i = tokens with i ∈ S_t; n_ij = tokens with both i, j ∈ S_t (over all pairs of a token's top-k).
- \`coactivation\` = n_ij/n_i (directed: i → j), baseline (k−1)/(E−1); \`lift\` = coactivation/baseline.
- Intervals from the bucket bootstrap. Per-domain rows only when E ≤ 16 (else \`all\` only).

### vocabulary_specialisation.csv (OLMoE)
Columns: layer, domain, n_token_ids, min_count, mean_specialisation, median_specialisation,
p90_specialisation, ci_low, ci_high, baseline, n_docs, n_tokens.
- For each token id seen at least \`min_count\` times in the domain: max_e N(id, e)/N(id), the largest
  share of its occurrences whose first choice is one expert. Mean, median and 90th percentile over ids.
- \`baseline\`: the mean over the same ids of E[max share] for N(id) uniform random first choices
  (simulated). Not bootstrapped (ci empty): the table per token id is not kept per document.

### layer_flow.csv (OLMoE cross-layer flow)
Columns: layer, layer_next, domain, expert_from, expert_to, count, probability, baseline, n_docs, n_tokens.
- \`count\`: tokens whose first choice is expert_from at layer and expert_to at layer_next;
  \`probability\` = count / Σ_to count (P(to | from)); baseline 1/E. Point estimates (no intervals).
  Per-domain rows only when E ≤ 16.

### flow_information.csv
Columns: layer, layer_next, domain, mutual_information, ci_low, ci_high, baseline, n_docs, n_tokens, n_boot.
- Plug-in mutual information (bits) of the layer_flow table: Σ p(i,j) log2 p(i,j)/(p(i)p(j)).
  Baseline: the plug-in bias of independent layers, (E−1)²/(2 N ln 2) (Miller–Madow).

### domain_divergence.csv
Columns: layer, domain, domain_a, domain_b, jsd, ci_low, ci_high, baseline, p_value, q_value,
n_permutations, n_docs, n_tokens, n_boot.
- \`jsd\`: Jensen–Shannon divergence (bits) between the two domains' top-k assignment distributions
  q_e = c_any(e)/(kT) at the layer; \`domain\` is "a vs b".
- \`p_value\`: permutation test over document labels: the two domains' documents are pooled and
  split at random into groups of the original sizes (${r.permutations} permutations at most per pair),
  p = (1 + #{JSD_perm ≥ JSD_obs})/(1 + permutations). \`baseline\`: the mean JSD over permutations
  (what sampling noise alone gives). \`q_value\`: Benjamini–Hochberg across all layers × pairs.
- Intervals: the document bootstrap (each domain resampled within itself).

### summary.csv
Columns: statistic, layer (\`all\`), domain, value, ci_low, ci_high, baseline, n_docs, n_tokens,
n_boot, note. Each statistic of repetition.csv, cosmoes.csv and load_balance.csv averaged over the
M layers (unweighted mean of the per-layer values; intervals from the same bootstrap). Statistics
that need \`probs\` are listed with empty values and a note when the trace has none.

### Figures
SVG files listed with titles and captions in \`figures.json\` (\`file\`, \`title\`, \`caption\`,
\`section\`), in display order.

### token_colouring.html
An HTML fragment (inline styles, no scripts): the first tokens of ${
    result.samples[0]?.docs.length ?? 0
  } sample documents per domain, each token coloured by its first-choice expert at the layers shown, with a legend.

### analysis.json
The trace's model and capture facts, totals (n_docs, n_tokens, per-domain), the settings used
(bootstrap, seed, resamples, buckets, permutations) and notes.
`;
}
