/**
 * The tidy rows of the CSVs made from the document and bucket statistics,
 * one function per table: expert shares, repetition, overlap distribution,
 * CoSMoEs, load balance and summary from the document statistics;
 * co-activation, flow information and layer flow from the bucket
 * statistics. Each reads the statistics it needs by name (statistics.ts);
 * point estimates and jackknife errors come from run.ts.
 *
 * How a row's value and interval are made depends on the statistic:
 * - ratio statistics (shares, repetition, overlaps, replacements, router
 *   means, co-activation): the plug-in value, ± t_{ν, 0.975} · jackknife se,
 *   clipped to [0, 1] for proportions; a proportion seen 0 (or n of n) times
 *   gets the rule of three, [0, 3/n];
 * - biased plug-in statistics (share entropy, mutual information): the
 *   jackknife bias-corrected value ± t · se, the plug-in in `plug_in`;
 * - ΔUniform and MaxVio: uniformity.ts.
 */
import type { CsvRow } from "../common/csv.ts";
import {
  coactivationBaseline,
  layerBaselines,
  overlapProbability,
  shareBaseline,
} from "./baselines.ts";
import { benjaminiHochberg } from "./permutation.ts";
import { type Jackknife, tInterval } from "./jackknife.ts";
import {
  BIAS_CORRECTED,
  type BucketStatistics,
  type DocStatistics,
  LAYER_STATISTICS,
  type LayerStatistic,
  type LayerTable,
  MARGINAL_STATISTICS,
  type MarginalStatistic,
  NEEDS_PROBS,
  SHARE_DEVIATIONS,
  SUMMARY_STATISTICS,
} from "./statistics.ts";
import { tTwoSided, tUpper } from "./student_t.ts";
import { shareDeviations } from "./uniformity.ts";

/** The name of the whole-corpus rows (`domain` column). */
export const ALL = "all";

/** A domain of the trace, or the whole corpus (`all`): the counts every row carries. */
export interface DomainTotals {
  name: string;
  n_docs: number;
  n_tokens: number;
}

/** What the rows of one domain (or of `all`) are made from. */
export interface DomainEstimates {
  totals: DomainTotals;
  /** The sufficient statistics summed over the domain's clusters (layout.ts). */
  sums: Float64Array;
  /** The plug-in value of every statistic, at its slot. */
  values: Float64Array;
  /** Jackknife over the row's clusters (stratified by domain for `all`); null without intervals. */
  jack: Jackknife | null;
}

/** The estimates of one kind of statistics (document or bucket) for every row group. */
export interface Estimates<S> {
  /** Where each statistic sits in `values` and the jackknife's arrays. */
  statistics: S;
  /** The model's index of each MoE layer (`model.moe_layers`): the `layer` column. */
  moeLayers: readonly number[];
  /** The domains whose rows are written, then `all`. */
  domains: DomainEstimates[];
}

/** Value and interval of the statistic at `slot`. */
export interface Estimate {
  value: number;
  ci_low: number;
  ci_high: number;
}

/**
 * The value and 95% interval at `slot`: the plug-in (or, with `corrected`,
 * the bias-corrected value) ± t · se; for a proportion of `n` trials the
 * interval is clipped to [0, 1] and a count of 0 or n gets the rule of three.
 */
export function estimate(
  d: DomainEstimates,
  slot: number,
  options: { corrected?: boolean; proportionOf?: number } = {},
): Estimate {
  const plugIn = d.values[slot]!;
  if (!d.jack) return { value: plugIn, ci_low: NaN, ci_high: NaN };
  const se = d.jack.se[slot]!;
  const value = options.corrected ? d.jack.corrected[slot]! : plugIn;
  const n = options.proportionOf;
  if (n !== undefined && se === 0 && n > 0) {
    if (value === 0) return { value, ci_low: 0, ci_high: Math.min(1, 3 / n) };
    if (value === 1) return { value, ci_low: Math.max(0, 1 - 3 / n), ci_high: 1 };
  }
  const { low, high } = tInterval(value, se, d.jack.df[slot]!);
  if (n === undefined) return { value, ci_low: low, ci_high: high };
  return { value, ci_low: Math.max(0, low), ci_high: Math.min(1, high) };
}

/** Two-sided p-value of the t test that the statistic at `slot` is 0 (its excess over a baseline). */
function zeroTest(d: DomainEstimates, slot: number): number {
  if (!d.jack) return NaN;
  const x = d.values[slot]!;
  const se = d.jack.se[slot]!;
  if (se === 0) return x === 0 ? 1 : 0;
  return tTwoSided(x / se, d.jack.df[slot]!);
}

/** The columns every row of a domain starts with. */
function domainColumns(d: DomainEstimates): { domain: string; n_docs: number; n_tokens: number } {
  return { domain: d.totals.name, n_docs: d.totals.n_docs, n_tokens: d.totals.n_tokens };
}

/** Clusters the row's jackknife deleted (0 without intervals). */
function clusters(d: DomainEstimates): number {
  return d.jack ? d.jack.groups : 0;
}

/** Benjamini–Hochberg q-values within each statistic's rows (all layers and domains). */
function addQValues(rows: CsvRow[]): void {
  const key = "statistic";
  const families = new Map<unknown, CsvRow[]>();
  for (const r of rows) {
    if (!Number.isFinite(r.p_value as number)) continue;
    const list = families.get(r[key]) ?? [];
    list.push(r);
    families.set(r[key], list);
  }
  for (const list of families.values()) {
    const q = benjaminiHochberg(list.map((r) => r.p_value as number));
    list.forEach((r, i) => r.q_value = q[i]!);
  }
}

/** expert_shares.csv: each expert's share per layer and choice. */
export function expertSharesTable(doc: Estimates<DocStatistics>): CsvRow[] {
  const S = doc.statistics;
  const { layers: M, experts: E, topK: k } = S.dims;
  const rows: CsvRow[] = [];
  for (const d of doc.domains) {
    const T = d.totals.n_tokens;
    for (let l = 0; l < M; l++) {
      for (const choice of S.choices) {
        // Trials behind a share: tokens, or assignments for top_k.
        const trials = choice === "top_k" ? k * T : T;
        for (let e = 0; e < E; e++) {
          const slot = S.shares[choice] + l * E + e;
          const { value, ci_low, ci_high } = estimate(d, slot, { proportionOf: trials });
          rows.push({
            layer: doc.moeLayers[l]!,
            moe_layer: l,
            ...domainColumns(d),
            expert: e,
            choice,
            share: value,
            ci_low,
            ci_high,
            baseline: shareBaseline(S.dims, choice),
            n_clusters: clusters(d),
          });
        }
      }
    }
  }
  return rows;
}

/** Proportion statistics and the trials behind them (pairs). */
const PROPORTIONS: ReadonlySet<LayerStatistic> = new Set<LayerStatistic>([
  "first_choice_repeat",
  "set_overlap",
]);

/** The row of one per-layer statistic (`layer` an index on the layer axis, or "mean" over layers). */
function layerRow(
  S: DocStatistics,
  d: DomainEstimates,
  statistic: LayerStatistic,
  layer: number | "mean",
  baselines: Record<LayerStatistic, number>,
): CsvRow {
  const { layers: M } = S.dims;
  const slot = layer === "mean" ? S.layerMean[statistic] : S.perLayer[statistic] + layer;
  const P = d.sums[S.layout.pairs]!;
  let e: Estimate;
  let plugIn = d.values[slot]!;
  let pValue = NaN;
  if (SHARE_DEVIATIONS.has(statistic)) {
    const layers = layer === "mean" ? Array.from({ length: M }, (_, l) => l) : [layer];
    const dev = shareDeviations(S, d.values, d.jack, d.totals.n_tokens, layers)[
      statistic as "delta_uniform" | "max_vio"
    ];
    e = { value: dev.value, ci_low: dev.low, ci_high: dev.high };
    plugIn = dev.plugIn;
    pValue = dev.pValue;
  } else {
    e = estimate(d, slot, {
      corrected: BIAS_CORRECTED.has(statistic),
      ...(PROPORTIONS.has(statistic) && layer !== "mean" ? { proportionOf: P } : {}),
    });
  }
  if (statistic === "share_entropy") {
    // Entropy differs from log2 E exactly when the shares differ from 1/E: the uniformity test.
    const layers = layer === "mean" ? Array.from({ length: M }, (_, l) => l) : [layer];
    pValue = shareDeviations(S, d.values, d.jack, d.totals.n_tokens, layers).delta_uniform.pValue;
  }
  const marginal = (MARGINAL_STATISTICS as readonly string[]).includes(statistic)
    ? statistic as MarginalStatistic
    : null;
  let baselineMarginal = NaN;
  if (marginal) {
    baselineMarginal = d.values[
      layer === "mean" ? S.marginalMean[marginal] : S.marginal[marginal] + layer
    ]!;
    if (layer !== "mean") pValue = zeroTest(d, S.excess[marginal] + layer);
  }
  return {
    ...e,
    plug_in: plugIn,
    baseline: baselines[statistic],
    baseline_marginal: baselineMarginal,
    p_value: pValue,
    q_value: NaN,
    n_pairs: P,
    n_clusters: clusters(d),
  };
}

/** repetition.csv, cosmoes.csv or load_balance.csv: their statistics per layer. */
export function layerStatisticsTable(doc: Estimates<DocStatistics>, table: LayerTable): CsvRow[] {
  const S = doc.statistics;
  const baselines = layerBaselines(S.dims);
  const rows: CsvRow[] = [];
  for (const d of doc.domains) {
    for (let l = 0; l < S.dims.layers; l++) {
      for (const statistic of LAYER_STATISTICS[table]) {
        if (!S.dims.probs && NEEDS_PROBS.has(statistic)) continue;
        const { value, ...rest } = layerRow(S, d, statistic, l, baselines);
        rows.push({
          layer: doc.moeLayers[l]!,
          moe_layer: l,
          ...domainColumns(d),
          statistic,
          value,
          ...rest,
        });
      }
    }
  }
  addQValues(rows);
  return rows;
}

/** overlap_distribution.csv: the proportion of pairs sharing j = 0..k experts, per layer. */
export function overlapDistributionTable(doc: Estimates<DocStatistics>): CsvRow[] {
  const S = doc.statistics;
  const { layers: M, experts: E, topK: k } = S.dims;
  const rows: CsvRow[] = [];
  for (const d of doc.domains) {
    const P = d.sums[S.layout.pairs]!;
    for (let l = 0; l < M; l++) {
      for (let overlap = 0; overlap <= k; overlap++) {
        const slot = S.overlap + l * (k + 1) + overlap;
        const { value, ci_low, ci_high } = estimate(d, slot, { proportionOf: P });
        rows.push({
          layer: doc.moeLayers[l]!,
          moe_layer: l,
          ...domainColumns(d),
          n_pairs: P,
          overlap,
          proportion: value,
          ci_low,
          ci_high,
          baseline: overlapProbability(E, k, overlap),
          baseline_marginal: d.values[S.overlapMarginal + l * (k + 1) + overlap]!,
          n_clusters: clusters(d),
        });
      }
    }
  }
  return rows;
}

/** summary.csv: every per-layer statistic's mean over layers; router statistics noted absent without probs. */
export function summaryTable(doc: Estimates<DocStatistics>): CsvRow[] {
  const S = doc.statistics;
  const baselines = layerBaselines(S.dims);
  const rows: CsvRow[] = [];
  for (const d of doc.domains) {
    for (const statistic of SUMMARY_STATISTICS) {
      const absent = !S.dims.probs && NEEDS_PROBS.has(statistic);
      const row = layerRow(S, d, statistic, "mean", baselines);
      rows.push({
        statistic,
        layer: ALL,
        moe_layer: ALL,
        ...domainColumns(d),
        value: absent ? NaN : row.value,
        plug_in: absent ? NaN : row.plug_in,
        ci_low: absent ? NaN : row.ci_low,
        ci_high: absent ? NaN : row.ci_high,
        baseline: absent ? NaN : row.baseline,
        baseline_marginal: row.baseline_marginal,
        p_value: absent ? NaN : row.p_value,
        q_value: NaN,
        n_clusters: absent ? 0 : row.n_clusters,
        note: absent
          ? "absent: needs --probs (the trace has no router distribution)"
          : "mean over layers",
      });
    }
  }
  addQValues(rows);
  return rows;
}

/**
 * coactivation.csv: N(i,j)/N(i) per layer and ordered pair, its lift over
 * uniform routing and over the popularity-adjusted baseline (`marginal`, per
 * row group: the domains then `all`, [M, E, E]).
 */
export function coactivationTable(
  bucket: Estimates<BucketStatistics>,
  marginal: readonly Float64Array[],
): CsvRow[] {
  const S = bucket.statistics;
  const B = S.layout;
  const { layers: M, experts: E, topK: k } = S.dims;
  // With one expert per token no pair is ever chosen together.
  if (k < 2) return [];
  const baseline = coactivationBaseline(S.dims);
  const rows: CsvRow[] = [];
  bucket.domains.forEach((d, g) => {
    for (let l = 0; l < M; l++) {
      for (let i = 0; i < E; i++) {
        const ni = d.sums[B.any + l * E + i]!;
        for (let j = 0; j < E; j++) {
          if (i === j) continue;
          const slot = S.coactivationAt(l, i, j);
          const { value, ci_low, ci_high } = estimate(d, slot, { proportionOf: ni });
          const popular = marginal[g]![(l * E + i) * E + j]!;
          rows.push({
            layer: bucket.moeLayers[l]!,
            moe_layer: l,
            ...domainColumns(d),
            expert_i: i,
            expert_j: j,
            n_i: ni,
            n_ij: d.sums[B.coact + l * B.pairCount + B.pairIndex[i * E + j]!]!,
            coactivation: value,
            ci_low,
            ci_high,
            baseline,
            baseline_marginal: popular,
            lift: value / baseline,
            lift_ci_low: ci_low / baseline,
            lift_ci_high: ci_high / baseline,
            lift_marginal: value / popular,
            n_clusters: clusters(d),
          });
        }
      }
    }
  });
  return rows;
}

/** flow_information.csv: mutual information between consecutive layers' first choices. */
export function flowInformationTable(bucket: Estimates<BucketStatistics>): CsvRow[] {
  const S = bucket.statistics;
  const rows: CsvRow[] = [];
  for (const d of bucket.domains) {
    for (let l = 0; l + 1 < S.dims.layers; l++) {
      const slot = S.flowInformation + l;
      const { value, ci_low, ci_high } = estimate(d, slot, { corrected: true });
      const se = d.jack ? d.jack.se[slot]! : NaN;
      // One-sided: is there more dependence than independent layers would show?
      const p = !d.jack ? NaN : se > 0 ? tUpper(value / se, d.jack.df[slot]!) : value > 0 ? 0 : 1;
      rows.push({
        layer: bucket.moeLayers[l]!,
        moe_layer: l,
        layer_next: bucket.moeLayers[l + 1]!,
        moe_layer_next: l + 1,
        ...domainColumns(d),
        mutual_information: value,
        plug_in: d.values[slot]!,
        ci_low,
        ci_high,
        baseline: 0,
        p_value: p,
        q_value: NaN,
        n_clusters: clusters(d),
      });
    }
  }
  // One family for the whole table (every layer pair and domain).
  const q = benjaminiHochberg(rows.map((r) => r.p_value as number).filter(Number.isFinite));
  let i = 0;
  for (const r of rows) if (Number.isFinite(r.p_value as number)) r.q_value = q[i++]!;
  return rows;
}

/** layer_flow.csv: first-choice transition counts and P(to | from) between consecutive layers. */
export function layerFlowTable(bucket: Estimates<BucketStatistics>): CsvRow[] {
  const B = bucket.statistics.layout;
  const { layers: M, experts: E } = B.dims;
  const rows: CsvRow[] = [];
  for (const d of bucket.domains) {
    for (let l = 0; l + 1 < M; l++) {
      for (let i = 0; i < E; i++) {
        let fromI = 0;
        for (let j = 0; j < E; j++) fromI += d.sums[B.flow + (l * E + i) * E + j]!;
        for (let j = 0; j < E; j++) {
          const count = d.sums[B.flow + (l * E + i) * E + j]!;
          rows.push({
            layer: bucket.moeLayers[l]!,
            moe_layer: l,
            layer_next: bucket.moeLayers[l + 1]!,
            moe_layer_next: l + 1,
            ...domainColumns(d),
            expert_from: i,
            expert_to: j,
            count,
            probability: count / fromI,
            baseline: 1 / E,
          });
        }
      }
    }
  }
  return rows;
}
