/** The README.md written next to the analysis outputs: every file, column, formula and method. */
import { overlapProbability } from "./baselines.ts";
import type { AnalysisResult } from "./run.ts";
import { SHUFFLE_PAIRS_PER_PAIR } from "./shuffle.ts";

export function readme(result: AnalysisResult): string {
  const { experts: E, topK: k, layers: M, probs } = result.dims;
  const model = result.manifest.model;
  const s = result.settings;
  const pct = (x: number) => (100 * x).toFixed(1) + "%";
  const intervals = s.intervals
    ? `cluster jackknife over ${s.clusters.documents} documents (${s.clusters.buckets} buckets for the bucket statistics) and ${s.permutations} permutations per domain comparison`
    : "none: the analysis ran with --bootstrap 0, so every value is the plug-in and there are no intervals or tests";
  return `# moetrace analysis

Trace: model \`${model.name}\` (${model.family}), M = ${M} MoE layers (model indices
${model.moe_layers.join(", ")}), E = ${E} routed experts, top-k = ${k}; ${result.totals.n_docs}
documents, ${result.totals.n_tokens} tokens, domains: ${
    result.domains.map((d) => `${d.name} (${d.n_docs} docs, ${d.n_tokens} tokens)`).join(", ")
  }. Router distribution (\`probs\`) ${
    probs
      ? `present (router temperature τ = ${s.routerTemperature} in CoSMoEs Eq. 6)`
      : "absent: the statistics marked (probs) are not computed"
  }. Intervals and tests: ${intervals}.

${result.notes.length > 0 ? `## Notes\n\n${result.notes.map((n) => `- ${n}`).join("\n")}\n` : ""}
## Conventions (all CSVs)

- Tidy: one observation per row, snake_case columns, plain decimal numbers, empty cell = not defined.
  Every proportion, share and ratio is a fraction (0.464, not 46.4%); only the HTML report shows
  percent.
- \`layer\`: the MoE layer's index in the model (\`model.moe_layers\`), as in the simulation CSVs;
  \`moe_layer\`: its index among the MoE layers (0 for the first); \`layer_next\`,
  \`moe_layer_next\`: the same two for the next MoE layer. In summary.csv both are \`all\`.
- \`domain\`: a domain of the trace, or \`all\` for the whole corpus. Statistics are computed from
  pooled counts (a ratio of sums over the domain's tokens), not as means of per-document values.
- \`n_docs\`, \`n_tokens\`: documents and tokens behind the row; \`n_pairs\`: consecutive-token pairs
  (tokens − 1 per document; pairs never cross documents).
- \`value\` (or the table's named value column): the estimate. For ratio statistics it is the
  plug-in (the formula applied to the pooled counts, as the papers compute it); for statistics whose
  plug-in is biased at finite size it is a bias-corrected estimate and \`plug_in\` holds the plug-in.
- \`ci_low\`, \`ci_high\`: a 95% interval, made by the method stated for each statistic below. The
  methods rest on the **cluster jackknife**: a document's tokens are not independent, so the unit
  of resampling is the document (co-activation and flow tables are too large to keep per document:
  there documents are dealt in trace order round-robin into at most ${result.buckets} buckets per
  domain and the unit is the bucket). For a row made of G clusters, θ_(j) is the statistic with
  cluster j deleted; the variance is v = (G − 1)/G · Σ_j (θ_(j) − θ̄)², the bias
  b = (G − 1)(θ̄ − θ), and the interval is estimate ± t_{ν, 0.975} · √v with ν = G − 1 degrees of
  freedom (Student's t, not the normal: with 10 documents per domain the difference is what makes
  the interval mean 95%). The \`all\` rows are stratified by domain: each domain's deletions
  reweight the rest of that domain by G_h/(G_h − 1), so the corpus mix stays fixed, the variances
  add over domains and ν is Satterthwaite's (Σ v_h)² / Σ (v_h²/(G_h − 1)). With more than 1000
  clusters in a domain, clusters are dealt round-robin into 1000 groups and groups are deleted. A
  domain of one document has no interval of its own and is held fixed in \`all\`.
- \`n_clusters\`: clusters (documents, or buckets) the row's jackknife deleted one at a time;
  0 without intervals.
- \`baseline\`: the value under **uniform** random, independent routing (each token's top-k an
  independent uniformly random k-subset), the population value, as the papers use it: 1/E for a
  share, ${pct(1 - overlapProbability(E, k, 0))} for set overlap here (Mixtral's 46.4% for top-2 of
  8); for router-distribution statistics, the uniform router's value (W_t = 1/E for every token).
  Values are unbiased or bias-corrected, so no finite-sample version is needed.
- \`baseline_marginal\`: the **marginal-preserving** baseline, what the statistic would be if the
  link between a token and its neighbours were broken while every document kept its own expert
  counts: the expectation over a uniformly random shuffle of the tokens within each document.
  A statistic above \`baseline\` but not above \`baseline_marginal\` comes from popular experts
  (imbalance), not from locality. Exact where stated, else estimated as stated.
- \`p_value\`, \`q_value\`: a test of "different from random?" where the table has one (stated per
  table), instead of comparing an interval with a baseline; q is the Benjamini–Hochberg adjusted p
  within one family (each statistic's rows over all layers and domains, unless stated).

Notation: for token t at a layer, S_t is its top-k set, f_t its first choice, s_t its second;
T tokens, P pairs (t−1, t) within documents; c_first(e), c_second(e), c_any(e) count tokens with
f_t = e, s_t = e, e ∈ S_t; q_e = c_any(e)/(kT) is expert e's share of assignments.

## Files

### expert_shares.csv (Mixtral Fig. 7 and 9; OLMoE)
Columns: layer, moe_layer, domain, expert, choice, share, ci_low, ci_high, baseline, n_docs, n_tokens,
n_clusters.
- \`choice = first\`: c_first(e)/T, baseline 1/E.
- \`choice = second\`: c_second(e)/T, baseline 1/E (absent when k = 1).
- \`choice = top_k\`: c_any(e)/(k·T), the share of all assignments ("either choice"), baseline 1/E.
- \`choice = token_fraction\`: c_any(e)/T, OLMoE's normalisation (fraction of tokens with e in their
  top-k), baseline k/E.
- Method: jackknife t interval around the plug-in, clipped to [0, 1]; a share with no token at all
  gets the one-sided rule-of-three bound [0, 3/n] (n = tokens, or assignments for top_k), since a
  count of 0 has no sampling variation to resample.

### repetition.csv (Mixtral Table 5 and Fig. 10)
Columns: layer, moe_layer, domain, statistic, value, plug_in, ci_low, ci_high, baseline, baseline_marginal,
p_value, q_value, n_docs, n_tokens, n_pairs, n_clusters.
- \`first_choice_repeat\`: #{pairs with f_t = f_t−1}/P, baseline 1/E.
- \`set_overlap\`: #{pairs with |S_t ∩ S_t−1| ≥ 1}/P, baseline 1 − C(E−k,k)/C(E,k) = ${
    pct(1 - overlapProbability(E, k, 0))
  } here (46.4% for E = 8, k = 2).
- Method: ratio of counts; value = plug-in; jackknife t interval (rule of three for a count of 0).
- \`baseline_marginal\`: the within-document shuffle. A shuffle makes each consecutive pair a
  uniformly random pair of distinct tokens of the document, so a document of T tokens expects
  W/T of its pairs to have the property, W the ordered pairs (t, u), t ≠ u, that have it. For
  first_choice_repeat W = Σ_e c_first(e)(c_first(e) − 1), exact. For set_overlap, exact when
  k ≤ 2 (W by inclusion–exclusion over the experts and the distinct sets); for k ≥ 3 estimated from
  ${SHUFFLE_PAIRS_PER_PAIR} random token pairs per consecutive pair of each document (seeded by
  document id; all pairs in short documents).
- \`p_value\`: the two-sided t test (jackknife, ν as above) of value − baseline_marginal = 0, computed
  per document before the ratio, so the shuffle baseline's own noise is in the test: small p means
  locality beyond each document's expert counts.

### overlap_distribution.csv
Columns: layer, moe_layer, domain, overlap, proportion, ci_low, ci_high, baseline, baseline_marginal, n_docs,
n_tokens, n_pairs, n_clusters.
- \`proportion\`: #{pairs with |S_t ∩ S_t−1| = overlap}/P for overlap = 0..k; baseline the
  hypergeometric C(k,j)·C(E−k,k−j)/C(E,k); baseline_marginal the within-document shuffle (as
  set_overlap). Method: jackknife t interval clipped to [0, 1]; rule of three for a count of 0.

### cosmoes.csv (CoSMoEs, Huber et al. 2025, Eq. 4–7)
Columns: as repetition.csv. The paper's equations, for B sequences of T tokens, S_{b,t} the top-K
set of token t of sequence b and R_{b,t} its router logits:
- Eq. 4: H = Σ_b Σ_{t=1}^{T−1} ½ Σ_{e=1}^{E} | [e ∈ S_{b,t+1}] − [e ∈ S_{b,t}] |, the experts that
  change between consecutive tokens (each change swaps one expert out and one in, hence ½).
- Eq. 5: H_norm = H / (B · K · (T − 1)).
- Eq. 6: L = Σ_b Σ_{t=1}^{T−1} Σ_{e=1}^{E} | W_{b,t+1,e} − W_{b,t,e} | with W_{b,t} = softmax(τ · R_{b,t})
  over all E experts; L_norm = L / (B · T).
- Eq. 7: BIES = H_norm · L_norm.

With documents of unequal length, B·(T − 1) is the number of pairs P and B·T the number of tokens,
as the sums over sequences give. The statistics:
- \`h_norm\` = Eq. 5 (K = top_k = ${k}); baseline 1 − k/E (the expected replacements of two uniform
  k-sets, k − k²/E, over k); baseline_marginal: the within-document shuffle (exact for any k: the
  expected shared experts of a random pair is Σ_e c_any(e)(c_any(e) − 1)/(T(T − 1))); p tests
  value = baseline_marginal as in repetition.csv.
- \`ex_rep\` (expert replacement ratio): the mean over pairs of |S_t \\ S_t−1| / k, which is the same
  ratio as h_norm; kept as its own row for continuity.
- \`l_norm\` (probs) = Eq. 6 with W = softmax(τ · logits) = p^τ / Σ_e p^τ, p the router
  distribution stored by \`capture --probs\` (τ = ${s.routerTemperature} here; --router-temperature
  sets it). For a sigmoid router (\`model.router_scores\` = sigmoid: DeepSeek-V3, GLM-4.5) the
  logits are recovered from the stored scores as ln(s/(1 − s)), so W = (s/(1 − s))^τ normalised.
  Without probs the trace cannot give it: it is absent and the note says "needs --probs".
  Baseline 0 (a uniform router's W never changes).
- \`bies\` (probs) = Eq. 7, h_norm · l_norm. Baseline 0.
- \`delta_uniform\` (ΔUniform). **The paper's definition is ambiguous**: it describes ΔUniform as
  the average per-layer delta between the uniform distribution and the realised expert balance and
  reports 9.60% for a balanced model, but gives no formula. Readings it could mean, with q_e the
  top-k assignment shares: (a) the mean relative deviation (1/E) Σ_e |q_e − 1/E| / (1/E) =
  Σ_e |q_e − 1/E|; (b) the total variation distance ½ Σ_e |q_e − 1/E|; (c) the mean absolute
  deviation in share points (1/E) Σ_e |q_e − 1/E|; (d) the largest relative deviation. The CSV's
  \`delta_uniform\` is reading (a), as a fraction (0.096 is 9.6%); (b) is delta_uniform/2 and (c)
  delta_uniform/E (value, plug_in and interval alike, since they are constant multiples); (d) on the
  positive side is \`max_vio\` (load_balance.csv). (a) is the reading under which 9.6% describes a
  balanced model for any E; earlier moetrace versions wrote (c) in percent. Baseline 0.
- Method for h_norm, ex_rep, l_norm, bies: ratio (or product of ratios); plug-in with a jackknife t
  interval. Method for delta_uniform: see "ΔUniform and MaxVio" below; \`p_value\` there is the
  uniformity test.

### load_balance.csv
Columns: as repetition.csv.
- \`share_entropy\`: H(q) = −Σ_e q_e log2 q_e, bits (log2 E = ${
    Math.log2(E).toFixed(3)
  } is perfect balance). The plug-in is biased low by about (E − 1)/(2 n ln 2) for n effective
  assignments (more with document clustering), so value = the jackknife bias-corrected estimate
  (which removes bias of order 1/n, clustering included), plug_in the plug-in, interval value ±
  t · jackknife se (not truncated: the corrected value may pass log2 E by sampling noise). Baseline
  log2 E; p_value: the uniformity test (below).
- \`max_vio\`: MaxVio = (max_e c_any(e) − mean)/mean with mean = kT/E, i.e. E · max_e (q_e − 1/E).
  Method: see "ΔUniform and MaxVio". Baseline 0.
- \`router_entropy\` (probs): mean over tokens of −Σ_e p_t(e) log2 p_t(e), bits; baseline log2 E.
- \`topk_mass\` (probs): mean over tokens of the sum of the k largest probabilities; baseline k/E.
- \`topk_margin\` (probs): mean over tokens of p_(k) − p_(k+1), the gap between the k-th and
  (k+1)-th largest probabilities; baseline 0. Router statistics are means over tokens: plug-in
  with a jackknife t interval. They use each token's scores normalised to sum 1 (a softmax
  router's already do; a sigmoid router's do not).

### ΔUniform and MaxVio
Both are 0 under uniform routing, the edge of their range, where no resampling interval of the
plug-in is consistent (the plug-in |q̂_e − 1/E| is biased up by about √(2/π)·se per expert, and
averaging over layers shrinks the interval but not the bias). Both are functions of the deviations
d_e = q_e − 1/E, so:
- Interval: every q_e gets a jackknife t interval at the Bonferroni level 0.05/m (m = E for a layer,
  M·E for a summary row's mean over layers); a share seen 0 times gets [0, ln(m/0.05)/n]. All of
  them hold with probability ≥ 95%, and the statistic's interval is its smallest and largest value
  over that box: it covers the true value with at least 95% whether routing is uniform or not.
- Value: the statistic of the deviations shrunk by their own sampling variance,
  sign(d̂_e)·√max(0, d̂_e² − se_e²) (d̂² − se² is unbiased for d²); it always lies in the interval.
- \`plug_in\`: the statistic of the raw shares, comparable with the papers' numbers.
- \`p_value\` (the uniformity test, also on share_entropy's rows): min(1, m · min_e p_e), p_e the
  two-sided t test of q_e = 1/E (for a share seen 0 times, the chance that no token picks e,
  (1 − k/E)^T); for shares seen at least once the interval excludes 0 exactly when p < 0.05.

### coactivation.csv (OLMoE)
Columns: layer, moe_layer, domain, expert_i, expert_j, n_i, n_ij, coactivation, ci_low, ci_high, baseline,
baseline_marginal, lift, lift_ci_low, lift_ci_high, lift_marginal, n_docs, n_tokens, n_clusters.
- n_i = tokens with i ∈ S_t; n_ij = tokens with both i, j ∈ S_t (over all pairs of a token's top-k).
- \`coactivation\` = n_ij/n_i (directed: i → j), baseline (k−1)/(E−1); \`lift\` = coactivation/baseline.
- \`baseline_marginal\`: shuffling tokens leaves co-activation unchanged (it is a within-token
  statistic), so its marginal-preserving baseline keeps each document's expert counts instead:
  the token's other k − 1 places are filled in proportion to the document's other experts,
  E[n_ij] = Σ_d c_d(i)(k − 1)c_d(j)/(k·T_d − c_d(i)), over n_i. Uniform routing gives (k−1)/(E−1);
  a popular j raises it. \`lift_marginal\` = coactivation/baseline_marginal: pairing beyond popularity.
- Method: ratio; jackknife over buckets, t interval clipped to [0, 1]; rule of three for n_ij = 0.
  Per-domain rows only when E ≤ 16 (else \`all\` only).

### vocabulary_specialisation.csv (OLMoE)
Columns: layer, moe_layer, domain, n_token_ids, min_count, mean_specialisation, median_specialisation,
p90_specialisation, ci_low, ci_high, baseline, baseline_marginal, n_docs, n_tokens.
- For each token id seen at least \`min_count\` times in the domain: max_e N(id, e)/N(id), the largest
  share of its occurrences whose first choice is one expert. Mean, median and 90th percentile over ids.
- \`baseline\`: the mean over the same ids of E[max_e N_e]/n for N ~ Multinomial(n, 1/E), computed
  exactly (a recursion over experts) for n ≤ 1000, and beyond by the normal approximation
  n/E + √(n/E)·E[max of E standard normals] matched to the exact value at 1000 (error below 1e-4).
- \`baseline_marginal\`: the same mean specialisation after the token ids of each document are
  shuffled (one random permutation per document, seeded by document id, counted during the pass):
  what a token id gets from the documents it appears in, without being that token.
- No intervals (ci empty): the per-token-id tables are not kept per document.

### layer_flow.csv (OLMoE cross-layer flow)
Columns: layer, moe_layer, layer_next, moe_layer_next, domain, expert_from, expert_to, count, probability, baseline, n_docs, n_tokens.
- \`count\`: tokens whose first choice is expert_from at layer and expert_to at layer_next;
  \`probability\` = count / Σ_to count (P(to | from)); baseline 1/E. Point estimates (no intervals).
  Per-domain rows only when E ≤ 16.

### flow_information.csv
Columns: layer, moe_layer, layer_next, moe_layer_next, domain, mutual_information, plug_in, ci_low, ci_high, baseline,
p_value, q_value, n_docs, n_tokens, n_clusters.
- Mutual information (bits) of the layer_flow table, Σ p(i,j) log2 p(i,j)/(p(i)p(j)). The plug-in is
  biased up by about (E−1)²/(2N ln 2) bits (more with clustering) and is never below 0, so
  \`mutual_information\` is the jackknife bias-corrected estimate (over buckets), \`plug_in\` the
  plug-in, the interval value ± t · se (not truncated at 0). Baseline 0 (independent layers).
- \`p_value\`: one-sided t test of mutual_information > 0 (jackknife se, ν as above; conservative at
  0, where the jackknife overstates the variance); q over the whole table.

### domain_divergence.csv
Columns: layer, moe_layer, domain, comparison, domain_a, domain_b, jsd, plug_in, ci_low, ci_high, baseline,
p_value, q_value, n_permutations, n_docs, n_tokens, n_clusters.
- \`comparison = pair\`: every pair of domains; \`domain\` is "a vs b".
- \`comparison = one_vs_rest\` (three or more domains): each domain against all the others pooled
  (\`domain_b\` = rest), which answers "which domain differs most" directly.
- \`jsd\`: Jensen–Shannon divergence (bits) between the two groups' top-k assignment distributions
  at the layer; the plug-in is positive even between two samples of one distribution, so jsd is the
  two-sample jackknife bias-corrected estimate (documents of either group deleted, stratified by
  group), \`plug_in\` the plug-in, interval jsd ± t · se. Baseline 0.
- \`p_value\`: permutation test over document labels: the two groups' documents are pooled and
  split at random into groups of the original sizes (${s.permutations} permutations at most per
  comparison), p = (1 + #{JSD_perm ≥ JSD_obs})/(1 + permutations). \`q_value\`: Benjamini–Hochberg
  across all layers × comparisons of one type.

### summary.csv
Columns: statistic, layer (\`all\`), moe_layer (\`all\`), domain, value, plug_in, ci_low, ci_high, baseline,
baseline_marginal, p_value, q_value, n_docs, n_tokens, n_clusters, note. Each statistic of
repetition.csv, cosmoes.csv and load_balance.csv averaged over the M layers (unweighted mean of
the per-layer values). The mean is itself a statistic of the clusters, so its interval comes from
the same jackknife (not from averaging the layers' bounds), except ΔUniform and MaxVio (the
Bonferroni box over all M·E shares, and the uniformity test over them as p_value). Statistics that
need \`probs\` are listed with empty values and a note when the trace has none.

### Figures
SVG files listed with titles and captions in \`figures.json\` (\`file\`, \`title\`, \`caption\`,
\`section\`), in display order. Every caption says which baseline each line is.

### token_colouring.html
An HTML fragment (inline styles, no scripts): the first tokens of ${
    result.samples[0]?.docs.length ?? 0
  } sample documents per domain, each token coloured by its first-choice expert at the layers shown, with a legend.

### analysis.json
The trace's model and capture facts, totals (n_docs, n_tokens, per-domain), the settings used
(bootstrap flag, seed, interval method, jackknife clusters, buckets, permutations, router
temperature) and notes.

## How well the intervals hold

\`deno task bench coverage\` analyses hundreds of traces routed uniformly at random (two shapes:
E = 8, k = 2 with probs, and E = 16, k = 4 with unequal documents; 10 documents per domain) and
counts, for every statistic above, how often its interval contains the value the null gives on
paper and how often the estimate falls outside its own interval. The targets are ≥ 93% and
≤ 0.5%; the command prints the measured table.
`;
}
