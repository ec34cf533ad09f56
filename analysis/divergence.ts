/**
 * domain_divergence.csv: per layer and pair of domains, the Jensen–Shannon
 * divergence of their top-k expert distributions, a permutation test over
 * document labels, Benjamini–Hochberg q-values across all rows, and
 * intervals from the document bootstrap's resampled shares.
 */
import type { CsvRow } from "../common/csv.ts";
import type { DomainData } from "./accumulate.ts";
import { benjaminiHochberg, jensenShannon, permutationTest, quantile } from "./bootstrap.ts";
import type { DocLayout } from "./layout.ts";
import type { DomainTotals } from "./tables.ts";

export interface DivergenceOptions {
  /** The domains with documents, in the order of `totals`. */
  domains: readonly DomainData[];
  totals: readonly DomainTotals[];
  /** The model's index of each MoE layer (`model.moe_layers`). */
  moeLayers: readonly number[];
  /**
   * Per domain, [resamples, M, E] top-k counts of each document-bootstrap
   * resample (the same resamples for every pair); null: no intervals.
   */
  resampledShares: readonly Float32Array[] | null;
  /** Resamples in `resampledShares`. */
  resamples: number;
  /** Permutations per pair wanted: by default clamp(bootstrap, 99, 999). */
  permutations: number | undefined;
  bootstrap: number;
  seed: number;
}

export interface Divergence {
  rows: CsvRow[];
  /** The most permutations any pair got. */
  permutations: number;
  /** Seconds spent in the permutation tests. */
  seconds: number;
}

export function domainDivergenceTable(layout: DocLayout, options: DivergenceOptions): Divergence {
  const { layers: M, experts: E } = layout.dims;
  const { domains, totals, resampledShares, resamples } = options;
  // Permutations per pair: clamp(N, 99, 999), fewer when all pairs together would need more
  // than about 2·10^10 additions (each permutation sums the smaller group's counts).
  const pairCount = (domains.length * (domains.length - 1)) / 2;
  const permutationsFor = (smaller: number): number => {
    const wanted = options.permutations ?? Math.max(99, Math.min(999, options.bootstrap));
    const affordable = Math.floor(2e10 / Math.max(1, pairCount * smaller * M * E));
    return Math.max(Math.min(99, wanted), Math.min(wanted, affordable));
  };
  let permutationsUsed = 0;
  let seconds = 0;
  const rows: CsvRow[] = [];
  for (let a = 0; a < domains.length; a++) {
    for (let b = a + 1; b < domains.length; b++) {
      const da = domains[a]!;
      const db = domains[b]!;
      const P = permutationsFor(Math.min(da.docs, db.docs));
      permutationsUsed = Math.max(permutationsUsed, P);
      // Each document's [M, E] top-k counts, domain a's documents first.
      const pooled = new Float32Array((da.docs + db.docs) * M * E);
      [da, db].forEach((d, side) => {
        for (let i = 0; i < d.docs; i++) {
          const from = i * layout.size + layout.any;
          pooled.set(d.docVectors.subarray(from, from + M * E), (side * da.docs + i) * M * E);
        }
      });
      const start = performance.now();
      const test = permutationTest(
        da.docs,
        db.docs,
        pooled,
        M,
        E,
        { permutations: P, seed: options.seed + 1000 + a * 7919 + b },
      );
      seconds += (performance.now() - start) / 1000;
      for (let l = 0; l < M; l++) {
        let lo = NaN;
        let hi = NaN;
        if (resampledShares) {
          const values = new Float64Array(resamples);
          for (let r = 0; r < resamples; r++) {
            values[r] = jensenShannon(
              resampledShares[a]!,
              resampledShares[b]!,
              r * M * E + l * E,
              E,
            );
          }
          values.sort();
          lo = quantile(values, 0.025);
          hi = quantile(values, 0.975);
        }
        rows.push({
          layer: options.moeLayers[l]!,
          domain: `${da.name} vs ${db.name}`,
          domain_a: da.name,
          domain_b: db.name,
          n_docs: da.docs + db.docs,
          n_tokens: totals[a]!.n_tokens + totals[b]!.n_tokens,
          jsd: test.observed[l]!,
          ci_low: lo,
          ci_high: hi,
          baseline: test.nullMean[l]!,
          p_value: test.pValue[l]!,
          q_value: NaN,
          n_permutations: P,
          n_boot: resampledShares ? resamples : 0,
        });
      }
    }
  }
  const q = benjaminiHochberg(rows.map((r) => r.p_value as number));
  rows.forEach((r, i) => r.q_value = q[i]!);
  return { rows, permutations: permutationsUsed, seconds };
}
