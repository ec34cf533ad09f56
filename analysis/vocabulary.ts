/**
 * vocabulary_specialisation.csv (OLMoE): how much of a token id's
 * occurrences go to its most frequent first-choice expert, against what
 * uniform random routing gives for the same number of occurrences (exact,
 * max_share.ts) and against the same trace with each document's token ids
 * shuffled (`baseline_marginal`: the counts the pass kept for one random
 * permutation per document, so every document keeps its experts). The
 * per-token-id counts come from the streaming pass (accumulate.ts); they are
 * not kept per document, so there are no intervals.
 */
import type { CsvRow } from "../common/csv.ts";
import type { Accumulator, DomainData } from "./accumulate.ts";
import { MaxShareBaseline } from "./max_share.ts";
import { quantile } from "./permutation.ts";
import type { DomainTotals } from "./tables.ts";

export interface VocabularyOptions {
  /** The domains with documents, in the order of `totals`. */
  domains: readonly DomainData[];
  /** The domains' totals, then the corpus's (`all`). */
  totals: readonly DomainTotals[];
  /** The model's index of each MoE layer (`model.moe_layers`). */
  moeLayers: readonly number[];
  /** Token ids need at least this many occurrences to count. */
  minCount: number;
}

/**
 * The table's rows: per domain and for `all`, or for `all` only when the pass
 * gave up its per-domain tables (`acc.corpusVocabulary`) to save memory.
 */
export function vocabularySpecialisationTable(
  acc: Accumulator,
  options: VocabularyOptions,
): CsvRow[] {
  const { layers: M, experts: E } = acc.dims;
  const { domains, minCount } = options;
  const baseline = new MaxShareBaseline(E);
  const perDomain = acc.corpusVocabulary === null;
  const corpus = acc.corpusVocabulary ?? mergeVocabularies(domains);
  // Every id's occurrence count is the sum of its layer-0 counts: the exact baseline is
  // computed once, for all counts up to the largest.
  let largest = 0;
  for (const vocab of [corpus, ...(perDomain ? domains.map((d) => d.vocab) : [])]) {
    for (const counts of vocab.values()) {
      let n = 0;
      for (let e = 0; e < E; e++) n += counts[e]!;
      largest = Math.max(largest, n);
    }
  }
  baseline.prepare(largest);
  const rows: CsvRow[] = [];
  options.totals.forEach((totals, g) => {
    const isAll = g === domains.length;
    if (!isAll && !perDomain) return;
    const vocab = isAll ? corpus : domains[g]!.vocab;
    for (let l = 0; l < M; l++) {
      let ids = 0;
      let specialisation = 0;
      let expected = 0;
      let shuffled = 0;
      const shares: number[] = [];
      const half = M * E;
      for (const counts of vocab.values()) {
        let n = 0;
        let max = 0;
        let shuffledMax = 0;
        for (let e = 0; e < E; e++) {
          const c = counts[l * E + e]!;
          n += c;
          if (c > max) max = c;
          shuffledMax = Math.max(shuffledMax, counts[half + l * E + e]!);
        }
        if (n < minCount) continue;
        ids++;
        specialisation += max / n;
        shuffled += shuffledMax / n;
        shares.push(max / n);
        expected += baseline.expectedMaxShare(n);
      }
      shares.sort((a, b) => a - b);
      rows.push({
        layer: options.moeLayers[l]!,
        moe_layer: l,
        domain: totals.name,
        n_docs: totals.n_docs,
        n_tokens: totals.n_tokens,
        n_token_ids: ids,
        min_count: minCount,
        mean_specialisation: specialisation / ids,
        median_specialisation: quantile(shares, 0.5),
        p90_specialisation: quantile(shares, 0.9),
        baseline: expected / ids,
        baseline_marginal: shuffled / ids,
        ci_low: NaN,
        ci_high: NaN,
      });
    }
  });
  return rows;
}

/** The domains' per-token-id counts added up, token ids in order of first sight. */
function mergeVocabularies(domains: readonly DomainData[]): Map<number, Uint32Array> {
  const merged = new Map<number, Uint32Array>();
  for (const d of domains) {
    for (const [token, counts] of d.vocab) {
      const m = merged.get(token);
      if (m) { for (let i = 0; i < counts.length; i++) m[i]! += counts[i]!; }
      else merged.set(token, Uint32Array.from(counts));
    }
  }
  return merged;
}
