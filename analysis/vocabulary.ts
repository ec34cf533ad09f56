/**
 * vocabulary_specialisation.csv (OLMoE): how much of a token id's
 * occurrences go to its most frequent first-choice expert, against what
 * uniform random routing gives for the same number of occurrences. The
 * per-token-id counts come from the streaming pass (accumulate.ts); they are
 * not kept per document, so there are no bootstrap intervals.
 */
import type { CsvRow } from "../common/csv.ts";
import type { Accumulator, DomainData } from "./accumulate.ts";
import { VocabularyBaseline } from "./baselines.ts";
import { quantile } from "./bootstrap.ts";
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
  const baseline = new VocabularyBaseline(E);
  const perDomain = acc.corpusVocabulary === null;
  const corpus = acc.corpusVocabulary ?? mergeVocabularies(domains);
  const rows: CsvRow[] = [];
  options.totals.forEach((totals, g) => {
    const isAll = g === domains.length;
    if (!isAll && !perDomain) return;
    const vocab = isAll ? corpus : domains[g]!.vocab;
    for (let l = 0; l < M; l++) {
      let ids = 0;
      let specialisation = 0;
      let expected = 0;
      const shares: number[] = [];
      for (const counts of vocab.values()) {
        let n = 0;
        let max = 0;
        for (let e = 0; e < E; e++) {
          const c = counts[l * E + e]!;
          n += c;
          if (c > max) max = c;
        }
        if (n < minCount) continue;
        ids++;
        specialisation += max / n;
        shares.push(max / n);
        expected += baseline.expectedMaxShare(n);
      }
      shares.sort((a, b) => a - b);
      rows.push({
        layer: options.moeLayers[l]!,
        domain: totals.name,
        n_docs: totals.n_docs,
        n_tokens: totals.n_tokens,
        n_token_ids: ids,
        min_count: minCount,
        mean_specialisation: specialisation / ids,
        median_specialisation: quantile(shares, 0.5),
        p90_specialisation: quantile(shares, 0.9),
        baseline: expected / ids,
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
