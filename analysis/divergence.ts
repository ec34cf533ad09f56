/**
 * domain_divergence.csv: per layer, the Jensen–Shannon divergence between
 * the top-k expert distributions of two groups of documents, for every pair
 * of domains (`comparison` = pair) and for each domain against all the
 * others pooled (`comparison` = one_vs_rest), which answers "which domain
 * differs most" directly.
 *
 * The plug-in JSD is biased upwards by sampling noise (it is positive even
 * between two samples of one distribution), so `jsd` is the two-sample
 * jackknife bias-corrected estimate (documents of either group deleted one at
 * a time, stratified by group) with a t interval, `plug_in` the plug-in, and
 * the question "do the groups differ?" is answered by a permutation test
 * over document labels with Benjamini–Hochberg q-values (one family per
 * comparison type).
 */
import type { CsvRow } from "../common/csv.ts";
import type { DomainData } from "./accumulate.ts";
import { type ClusterSet, jackknife, tInterval } from "./jackknife.ts";
import type { DocLayout } from "./layout.ts";
import { benjaminiHochberg, jensenShannon, permutationTest } from "./permutation.ts";
import type { Statistics } from "./statistics.ts";
import type { DomainTotals } from "./tables.ts";

export interface DivergenceOptions {
  /** The domains with documents, in the order of `totals`. */
  domains: readonly DomainData[];
  totals: readonly DomainTotals[];
  /** The model's index of each MoE layer (`model.moe_layers`). */
  moeLayers: readonly number[];
  /** Intervals and tests wanted (false: point estimates only, as for --bootstrap 0). */
  intervals: boolean;
  /** Permutations per comparison wanted: by default clamp(bootstrap, 99, 999). */
  permutations: number | undefined;
  bootstrap: number;
  seed: number;
}

export interface Divergence {
  rows: CsvRow[];
  /** The most permutations any comparison got. */
  permutations: number;
  /** Seconds spent in the permutation tests. */
  seconds: number;
}

/** The name of the pooled other domains in one-vs-rest rows (`domain_b`). */
export const REST = "rest";

/** JSD per layer of a vector [group A's M·E top-k counts, group B's]. */
class JsdStatistics implements Statistics {
  readonly size: number;
  readonly #M: number;
  readonly #E: number;
  constructor(M: number, E: number) {
    this.#M = M;
    this.#E = E;
    this.size = M;
  }
  evaluate(v: ArrayLike<number>, out: Float64Array): void {
    const ME = this.#M * this.#E;
    for (let l = 0; l < this.#M; l++) {
      out[l] = jensenShannon(v, subarray(v, ME), l * this.#E, this.#E);
    }
  }
}

/** A view of `v` from `from` (typed arrays share memory; other array-likes are copied). */
function subarray(v: ArrayLike<number>, from: number): ArrayLike<number> {
  if (v instanceof Float64Array || v instanceof Float32Array) return v.subarray(from);
  return Array.from(v).slice(from);
}

export function domainDivergenceTable(layout: DocLayout, options: DivergenceOptions): Divergence {
  const { layers: M, experts: E } = layout.dims;
  const { domains, totals } = options;
  const ME = M * E;
  const D = domains.length;
  const comparisons: { a: number[]; b: number[]; kind: "pair" | "one_vs_rest" }[] = [];
  for (let a = 0; a < D; a++) {
    for (let b = a + 1; b < D; b++) comparisons.push({ a: [a], b: [b], kind: "pair" });
  }
  // One against the rest only says more than the pair when there are three or more domains.
  if (D >= 3) {
    for (let a = 0; a < D; a++) {
      comparisons.push({
        a: [a],
        b: domains.map((_, i) => i).filter((i) => i !== a),
        kind: "one_vs_rest",
      });
    }
  }
  // Permutations per comparison: clamp(N, 99, 999), fewer when all together would need more
  // than about 2·10^10 additions (each permutation sums the smaller group's counts).
  const permutationsFor = (smaller: number): number => {
    const wanted = options.permutations ?? Math.max(99, Math.min(999, options.bootstrap));
    const affordable = Math.floor(2e10 / Math.max(1, comparisons.length * smaller * ME));
    return Math.max(Math.min(99, wanted), Math.min(wanted, affordable));
  };
  const statistics = new JsdStatistics(M, E);
  let permutationsUsed = 0;
  let seconds = 0;
  const rows: CsvRow[] = [];
  comparisons.forEach(({ a, b, kind }, c) => {
    const groupA = a.map((i) => domains[i]!);
    const groupB = b.map((i) => domains[i]!);
    const docsA = groupA.reduce((n, d) => n + d.docs, 0);
    const docsB = groupB.reduce((n, d) => n + d.docs, 0);
    // Each document's [M, E] top-k counts, placed in its group's half of a 2·M·E vector.
    const padded = (group: DomainData[], side: number): ClusterSet => {
      const count = group.reduce((n, d) => n + d.docs, 0);
      const data = new Float32Array(count * 2 * ME);
      let row = 0;
      for (const d of group) {
        for (let i = 0; i < d.docs; i++) {
          const from = i * layout.size + layout.any;
          data.set(d.docVectors.subarray(from, from + ME), (row++ * 2 + side) * ME);
        }
      }
      return { count, data };
    };
    const setA = padded(groupA, 0);
    const setB = padded(groupB, 1);
    const total = new Float64Array(2 * ME);
    for (const set of [setA, setB]) {
      for (let r = 0; r < set.count; r++) {
        for (let i = 0; i < 2 * ME; i++) total[i]! += set.data[r * 2 * ME + i]!;
      }
    }
    // The same clusters stratified by group: the two-sample jackknife.
    const jack = options.intervals ? jackknife([setA, setB], total, statistics) : null;
    const plugIn = new Float64Array(M);
    statistics.evaluate(total, plugIn);
    let pValues: ArrayLike<number> = new Float64Array(M).fill(NaN);
    let P = 0;
    if (options.intervals) {
      P = permutationsFor(Math.min(docsA, docsB));
      permutationsUsed = Math.max(permutationsUsed, P);
      const pooled = new Float32Array((docsA + docsB) * ME);
      [setA, setB].forEach((set, side) => {
        for (let r = 0; r < set.count; r++) {
          const at = (r * 2 + side) * ME;
          pooled.set(set.data.subarray(at, at + ME), (side * docsA + r) * ME);
        }
      });
      const start = performance.now();
      const test = permutationTest(docsA, docsB, pooled, M, E, {
        permutations: P,
        seed: options.seed + 1000 + c * 7919,
      });
      seconds += (performance.now() - start) / 1000;
      pValues = test.pValue;
    }
    const nameA = groupA.map((d) => d.name).join("+");
    const nameB = kind === "pair" ? groupB[0]!.name : REST;
    const tokens = (ids: number[]) => ids.reduce((n, i) => n + totals[i]!.n_tokens, 0);
    for (let l = 0; l < M; l++) {
      const value = jack ? jack.corrected[l]! : plugIn[l]!;
      const ci = jack ? tInterval(value, jack.se[l]!, jack.df[l]!) : { low: NaN, high: NaN };
      rows.push({
        layer: options.moeLayers[l]!,
        moe_layer: l,
        domain: `${nameA} vs ${nameB}`,
        comparison: kind,
        domain_a: nameA,
        domain_b: nameB,
        n_docs: docsA + docsB,
        n_tokens: tokens(a) + tokens(b),
        jsd: value,
        plug_in: plugIn[l]!,
        ci_low: ci.low,
        ci_high: ci.high,
        baseline: 0,
        p_value: pValues[l]!,
        q_value: NaN,
        n_permutations: P,
        n_clusters: jack ? jack.groups : 0,
      });
    }
  });
  for (const kind of ["pair", "one_vs_rest"]) {
    const family = rows.filter((r) => r.comparison === kind && Number.isFinite(r.p_value));
    const q = benjaminiHochberg(family.map((r) => r.p_value as number));
    family.forEach((r, i) => r.q_value = q[i]!);
  }
  return { rows, permutations: permutationsUsed, seconds };
}
