/**
 * The tidy rows of the CSVs made from bootstrapped statistics, one function
 * per table: expert shares, repetition, overlap distribution, CoSMoEs, load
 * balance and summary from the document statistics; co-activation, flow
 * information and layer flow from the bucket statistics. Each reads the
 * statistics it needs by name (statistics.ts); the point estimates and
 * intervals come from run.ts.
 */
import type { CsvRow } from "../common/csv.ts";
import {
  coactivationBaseline,
  flowInformationBaseline,
  layerBaselines,
  overlapProbability,
  shareBaseline,
} from "./baselines.ts";
import type { Intervals } from "./bootstrap.ts";
import {
  type BucketStatistics,
  type DocStatistics,
  LAYER_STATISTICS,
  type LayerTable,
  NEEDS_PROBS,
  SUMMARY_STATISTICS,
} from "./statistics.ts";

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
  /** The point estimate of every statistic, at its slot. */
  values: Float64Array;
  /** Bootstrap percentile bounds at the same slots; null without a bootstrap. */
  intervals: Intervals | null;
  /** Resamples behind the intervals (0 without). */
  resamples: number;
}

/** The estimates of one kind of statistics (document or bucket) for every row group. */
export interface Estimates<S> {
  /** Where each statistic sits in `values` and `intervals`. */
  statistics: S;
  /** The model's index of each MoE layer (`model.moe_layers`): the `layer` column. */
  moeLayers: readonly number[];
  /** The domains whose rows are written, then `all`. */
  domains: DomainEstimates[];
}

/** The interval columns of the statistic at `slot` (NaN without a bootstrap). */
function interval(d: DomainEstimates, slot: number): { ci_low: number; ci_high: number } {
  if (!d.intervals) return { ci_low: NaN, ci_high: NaN };
  return { ci_low: d.intervals.low[slot]!, ci_high: d.intervals.high[slot]! };
}

/** The columns every row of a domain starts with. */
function domainColumns(d: DomainEstimates): { domain: string; n_docs: number; n_tokens: number } {
  return { domain: d.totals.name, n_docs: d.totals.n_docs, n_tokens: d.totals.n_tokens };
}

/** expert_shares.csv: each expert's share per layer and choice. */
export function expertSharesTable(doc: Estimates<DocStatistics>): CsvRow[] {
  const S = doc.statistics;
  const { layers: M, experts: E } = S.dims;
  const rows: CsvRow[] = [];
  for (const d of doc.domains) {
    for (let l = 0; l < M; l++) {
      for (const choice of S.choices) {
        for (let e = 0; e < E; e++) {
          const slot = S.shares[choice] + l * E + e;
          rows.push({
            layer: doc.moeLayers[l]!,
            ...domainColumns(d),
            expert: e,
            choice,
            share: d.values[slot]!,
            ...interval(d, slot),
            baseline: shareBaseline(S.dims, choice),
            n_boot: d.resamples,
          });
        }
      }
    }
  }
  return rows;
}

/** repetition.csv, cosmoes.csv or load_balance.csv: their statistics per layer. */
export function layerStatisticsTable(doc: Estimates<DocStatistics>, table: LayerTable): CsvRow[] {
  const S = doc.statistics;
  const rows: CsvRow[] = [];
  for (const d of doc.domains) {
    const baselines = layerBaselines(S.dims, d.totals.n_tokens);
    for (let l = 0; l < S.dims.layers; l++) {
      for (const statistic of LAYER_STATISTICS[table]) {
        if (!S.dims.probs && NEEDS_PROBS.has(statistic)) continue;
        const slot = S.perLayer[statistic] + l;
        rows.push({
          layer: doc.moeLayers[l]!,
          ...domainColumns(d),
          n_pairs: d.sums[S.layout.pairs]!,
          statistic,
          value: d.values[slot]!,
          ...interval(d, slot),
          baseline: baselines[statistic],
          n_boot: d.resamples,
        });
      }
    }
  }
  return rows;
}

/** overlap_distribution.csv: the proportion of pairs sharing j = 0..k experts, per layer. */
export function overlapDistributionTable(doc: Estimates<DocStatistics>): CsvRow[] {
  const S = doc.statistics;
  const { layers: M, experts: E, topK: k } = S.dims;
  const rows: CsvRow[] = [];
  for (const d of doc.domains) {
    for (let l = 0; l < M; l++) {
      for (let overlap = 0; overlap <= k; overlap++) {
        const slot = S.overlap + l * (k + 1) + overlap;
        rows.push({
          layer: doc.moeLayers[l]!,
          ...domainColumns(d),
          n_pairs: d.sums[S.layout.pairs]!,
          overlap,
          proportion: d.values[slot]!,
          ...interval(d, slot),
          baseline: overlapProbability(E, k, overlap),
          n_boot: d.resamples,
        });
      }
    }
  }
  return rows;
}

/** summary.csv: every per-layer statistic's mean over layers; router statistics noted absent without probs. */
export function summaryTable(doc: Estimates<DocStatistics>): CsvRow[] {
  const S = doc.statistics;
  const rows: CsvRow[] = [];
  for (const d of doc.domains) {
    const baselines = layerBaselines(S.dims, d.totals.n_tokens);
    for (const statistic of SUMMARY_STATISTICS) {
      const slot = S.layerMean[statistic];
      const absent = !S.dims.probs && NEEDS_PROBS.has(statistic);
      rows.push({
        statistic,
        layer: ALL,
        ...domainColumns(d),
        value: absent ? NaN : d.values[slot]!,
        ...(absent
          ? { ci_low: NaN, ci_high: NaN, baseline: NaN }
          : { ...interval(d, slot), baseline: baselines[statistic] }),
        n_boot: absent ? 0 : d.resamples,
        note: absent ? "absent: the trace has no router distribution (probs)" : "mean over layers",
      });
    }
  }
  return rows;
}

/** coactivation.csv: N(i,j)/N(i) and its lift over random routing, per layer and ordered pair. */
export function coactivationTable(bucket: Estimates<BucketStatistics>): CsvRow[] {
  const S = bucket.statistics;
  const B = S.layout;
  const { layers: M, experts: E, topK: k } = S.dims;
  // With one expert per token no pair is ever chosen together.
  if (k < 2) return [];
  const baseline = coactivationBaseline(S.dims);
  const rows: CsvRow[] = [];
  for (const d of bucket.domains) {
    for (let l = 0; l < M; l++) {
      for (let i = 0; i < E; i++) {
        for (let j = 0; j < E; j++) {
          if (i === j) continue;
          const slot = S.coactivationAt(l, i, j);
          const value = d.values[slot]!;
          const { ci_low, ci_high } = interval(d, slot);
          rows.push({
            layer: bucket.moeLayers[l]!,
            ...domainColumns(d),
            expert_i: i,
            expert_j: j,
            n_i: d.sums[B.any + l * E + i]!,
            n_ij: d.sums[B.coact + l * B.pairCount + B.pairIndex[i * E + j]!]!,
            coactivation: value,
            ci_low,
            ci_high,
            baseline,
            lift: value / baseline,
            lift_ci_low: ci_low / baseline,
            lift_ci_high: ci_high / baseline,
            n_boot: d.resamples,
          });
        }
      }
    }
  }
  return rows;
}

/** flow_information.csv: mutual information between consecutive layers' first choices. */
export function flowInformationTable(bucket: Estimates<BucketStatistics>): CsvRow[] {
  const S = bucket.statistics;
  const rows: CsvRow[] = [];
  for (const d of bucket.domains) {
    for (let l = 0; l + 1 < S.dims.layers; l++) {
      const slot = S.flowInformation + l;
      rows.push({
        layer: bucket.moeLayers[l]!,
        layer_next: bucket.moeLayers[l + 1]!,
        ...domainColumns(d),
        mutual_information: d.values[slot]!,
        ...interval(d, slot),
        baseline: flowInformationBaseline(S.dims, d.totals.n_tokens),
        n_boot: d.resamples,
      });
    }
  }
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
            layer_next: bucket.moeLayers[l + 1]!,
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
