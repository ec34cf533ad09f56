/**
 * The analysis from trace to tables: one streaming pass (accumulate.ts), the
 * statistics of each domain and of the whole corpus (statistics.ts) with
 * their cluster jackknife errors (jackknife.ts), then one function per
 * output table (tables.ts, vocabulary.ts, divergence.ts) and the notes that
 * explain what a table leaves out. Nothing is written here (write.ts does
 * that), so tests can look at the rows directly.
 */
import type { CsvRow } from "../common/csv.ts";
import type { Manifest, TraceReader } from "../trace/mod.ts";
import {
  type AccumulateOptions,
  Accumulator,
  type DomainData,
  type SampleDoc,
} from "./accumulate.ts";
import { coactivationMarginal } from "./baselines.ts";
import { domainDivergenceTable } from "./divergence.ts";
import { type ClusterSet, jackknife } from "./jackknife.ts";
import type { Dims } from "./layout.ts";
import { SHUFFLE_PAIRS_PER_PAIR } from "./shuffle.ts";
import {
  BucketStatistics,
  coactivationPerDomain,
  DocStatistics,
  type Statistics,
} from "./statistics.ts";
import {
  ALL,
  coactivationTable,
  type DomainEstimates,
  type DomainTotals,
  type Estimates,
  expertSharesTable,
  flowInformationTable,
  layerFlowTable,
  layerStatisticsTable,
  overlapDistributionTable,
  summaryTable,
} from "./tables.ts";
import { vocabularySpecialisationTable } from "./vocabulary.ts";

export interface AnalysisOptions {
  /**
   * The --bootstrap flag: 0 gives point estimates only (plug-in values, no
   * intervals or tests); N > 0 gives jackknife intervals and tests, with
   * clamp(N, 99, 999) permutations per domain comparison.
   */
  bootstrap: number;
  /** Seed of the permutations. */
  seed: number;
  /** Permutations per domain comparison (default clamp(N, 99, 999), fewer if the comparison is very large). */
  permutations?: number;
  /** Token ids need at least this many occurrences for vocabulary specialisation (default 10). */
  minTokenCount?: number;
  /** Passed to the accumulator (buckets, samples, router temperature). */
  accumulate?: AccumulateOptions;
  /** Jackknife groups per domain at most (default 1000): more documents are deleted in groups. */
  maxJackknifeGroups?: number;
}

export interface AnalysisResult {
  manifest: Manifest;
  /** The streaming pass's sums (per-document vectors), for paired comparisons (compare_paired.ts). */
  accumulator: Accumulator;
  dims: Dims;
  domains: DomainTotals[];
  totals: DomainTotals;
  /** CSV file name (without .csv) → rows. */
  tables: Record<string, CsvRow[]>;
  samples: { domain: string; docs: SampleDoc[] }[];
  /** Indices on the layer axis of the samples' first choices. */
  sampleLayers: number[];
  /**
   * Whether there are intervals and tests; the jackknife's clusters (documents,
   * and buckets for the bucket statistics) over all domains; permutations per
   * domain comparison; τ of CoSMoEs Eq. 6.
   */
  settings: {
    intervals: boolean;
    clusters: { documents: number; buckets: number };
    permutations: number;
    routerTemperature: number;
  };
  buckets: number;
  /**
   * One line per kind of statistic left out because the trace holds
   * placeholders for a column the log did not record (also in `notes`).
   */
  skipped: string[];
  notes: string[];
  /**
   * Seconds: the streaming pass; the document and bucket jackknives; the
   * permutation tests; everything after the pass (jackknives, permutations, tables).
   */
  timing: { pass: number; jackknife: number; permutations: number; afterPass: number };
}

/** Runs the streaming pass only (exposed for the benchmark). */
export async function accumulateTrace(
  reader: TraceReader,
  options: AccumulateOptions = {},
): Promise<Accumulator> {
  const shape = reader.shape;
  const dims: Dims = {
    layers: shape.layers,
    experts: shape.experts,
    topK: shape.topK,
    probs: shape.probs,
  };
  const routerScores = reader.manifest.model.router_scores;
  const acc = new Accumulator(dims, reader.manifest.capture.domains, {
    ...(routerScores ? { routerScores } : {}),
    ...options,
  });
  for await (const batch of reader.batches()) acc.addBatch(batch);
  return acc;
}

export async function runAnalysis(
  reader: TraceReader,
  options: AnalysisOptions,
): Promise<AnalysisResult> {
  const started = performance.now();
  const acc = await accumulateTrace(reader, options.accumulate);
  const passSeconds = (performance.now() - started) / 1000;
  return analyseAccumulator(acc, reader.manifest, options, passSeconds);
}

/**
 * What the counts of an analysis came from when not from the streaming pass
 * (`analyze --from-counts`, from_counts.ts): whether the per-token-id tables
 * and sample documents exist, and the lines saying what is left out (they
 * replace the notes on router sums and on k ≥ 3 sampling).
 */
export interface CountsInput {
  tokens: boolean;
  notes: string[];
}

/** The statistics and tables of an accumulator filled by the streaming pass or from count tables. */
export function analyseAccumulator(
  acc: Accumulator,
  manifest: Manifest,
  options: AnalysisOptions,
  passSeconds: number,
  input?: CountsInput,
): AnalysisResult {
  const afterPass = performance.now();
  const moeLayers = manifest.model.moe_layers;
  const domains = acc.domains.filter((d) => d.docs > 0);
  const settings: IntervalSettings = {
    intervals: options.bootstrap > 0,
    maxGroups: options.maxJackknifeGroups ?? 1000,
    moeLayers,
  };
  const documents = documentEstimates(acc, domains, settings);
  const { totals, corpus } = documents;
  const buckets = bucketEstimates(acc, domains, { ...settings, totals: [...totals, corpus] });
  const divergence = domainDivergenceTable(acc.layout, {
    domains,
    totals,
    moeLayers,
    intervals: settings.intervals,
    permutations: options.permutations,
    bootstrap: options.bootstrap,
    seed: options.seed,
  });
  const doc = documents.estimates;
  const bucket = buckets.estimates;
  const recorded = recordedColumns(manifest);
  if (input && !input.tokens) recorded.tokens = false;
  if (input) recorded.skipped.push(...input.notes);
  const tables: Record<string, CsvRow[]> = {
    expert_shares: expertSharesTable(doc),
    repetition: layerStatisticsTable(doc, "repetition"),
    overlap_distribution: overlapDistributionTable(doc),
    cosmoes: layerStatisticsTable(doc, "cosmoes"),
    load_balance: layerStatisticsTable(doc, "load_balance"),
    coactivation: coactivationTable(bucket, buckets.marginal),
    // Placeholder token ids (all 0) would make every token one id: no table rather than a false one.
    vocabulary_specialisation: recorded.tokens
      ? vocabularySpecialisationTable(acc, {
        domains,
        totals: [...totals, corpus],
        moeLayers,
        minCount: options.minTokenCount ?? 10,
      })
      : [],
    layer_flow: layerFlowTable(bucket),
    flow_information: flowInformationTable(bucket),
    domain_divergence: divergence.rows,
    summary: summaryTable(doc),
  };
  const resultSettings = {
    intervals: settings.intervals,
    clusters: { documents: documents.groups, buckets: buckets.groups },
    permutations: divergence.permutations,
    routerTemperature: options.accumulate?.routerTemperature ?? 1,
  };
  return {
    manifest,
    accumulator: acc,
    dims: acc.dims,
    domains: totals,
    totals: corpus,
    tables,
    samples: recorded.tokens ? domains.map((d) => ({ domain: d.name, docs: d.samples })) : [],
    sampleLayers: acc.sampleLayers,
    settings: resultSettings,
    buckets: acc.buckets,
    skipped: recorded.skipped,
    notes: [
      ...recorded.skipped,
      ...analysisNotes(acc, {
        domains,
        intervals: settings.intervals,
        pooledCoactivation: !buckets.marginalPerDocument,
        fromCounts: input !== undefined,
      }),
    ],
    timing: {
      pass: passSeconds,
      jackknife: documents.seconds + buckets.seconds,
      permutations: divergence.seconds,
      afterPass: (performance.now() - afterPass) / 1000,
    },
  };
}

interface IntervalSettings {
  /** Whether to run the jackknife (--bootstrap > 0). */
  intervals: boolean;
  /** Jackknife groups per domain at most. */
  maxGroups: number;
  moeLayers: readonly number[];
}

/** Statistics of some kind with their jackknives, for the rows of each domain and `all`. */
interface Jackknifed<S> {
  estimates: Estimates<S>;
  /** Clusters (or groups) the `all` row's jackknife deleted; 0 without intervals. */
  groups: number;
  /** Seconds the jackknives took. */
  seconds: number;
}

interface DocumentEstimates extends Jackknifed<DocStatistics> {
  /** The domains' totals. */
  totals: DomainTotals[];
  /** The whole corpus's totals (`all`). */
  corpus: DomainTotals;
}

/** The document statistics of every domain and `all`, with their jackknives over documents. */
function documentEstimates(
  acc: Accumulator,
  domains: readonly DomainData[],
  settings: IntervalSettings,
): DocumentEstimates {
  const L = acc.layout;
  const statistics = new DocStatistics(L);
  const sets: ClusterSet[] = domains.map((d) => ({ count: d.docs, data: d.docVectors }));
  const sums = sets.map((s) => sumClusters(s, L.size));
  const totals: DomainTotals[] = domains.map((d, i) => ({
    name: d.name,
    n_docs: d.docs,
    n_tokens: sums[i]![L.tokens]!,
  }));
  const corpus: DomainTotals = {
    name: ALL,
    n_docs: totals.reduce((n, t) => n + t.n_docs, 0),
    n_tokens: totals.reduce((n, t) => n + t.n_tokens, 0),
  };
  const start = performance.now();
  const rows = estimateRows(statistics, sets, [...totals, corpus], sums, settings, true);
  return {
    estimates: { statistics, moeLayers: settings.moeLayers, domains: rows },
    groups: rows.at(-1)!.jack?.groups ?? 0,
    seconds: (performance.now() - start) / 1000,
    totals,
    corpus,
  };
}

interface BucketEstimates extends Jackknifed<BucketStatistics> {
  /** Per row written (domains, then `all`): the popularity-adjusted co-activation, [M, E, E]. */
  marginal: Float64Array[];
  /** Whether that baseline kept each document's own shares (false: pooled, over budget). */
  marginalPerDocument: boolean;
}

/**
 * The bucket statistics (co-activation, flow information), per domain only
 * when E ≤ 16 (their tables grow with E²), always for `all`; the jackknife
 * deletes buckets of whole documents.
 */
function bucketEstimates(
  acc: Accumulator,
  domains: readonly DomainData[],
  settings: IntervalSettings & { totals: DomainTotals[] },
): BucketEstimates {
  const B = acc.bucketLayout;
  const statistics = new BucketStatistics(B);
  const sets: ClusterSet[] = domains.map((d) => ({ count: d.usedBuckets, data: d.bucketVectors }));
  const sums = sets.map((s) => sumClusters(s, B.size));
  const perDomain = coactivationPerDomain(acc.dims);
  const start = performance.now();
  const rows = estimateRows(statistics, sets, settings.totals, sums, settings, perDomain);
  const seconds = (performance.now() - start) / 1000;
  const docSets = domains.map((d) => ({ count: d.docs, data: d.docVectors }));
  const marginals = [
    ...(perDomain ? docSets.map((set) => coactivationMarginal(acc.layout, [set])) : []),
    coactivationMarginal(acc.layout, docSets),
  ];
  return {
    estimates: {
      statistics,
      moeLayers: settings.moeLayers,
      // Without per-domain rows, only `all` (the last) is written.
      domains: perDomain ? rows : rows.slice(-1),
    },
    groups: rows.at(-1)!.jack?.groups ?? 0,
    seconds,
    marginal: marginals.map((m) => m.values),
    marginalPerDocument: marginals.every((m) => m.perDocument),
  };
}

/**
 * Point estimates and jackknives of the domains (when `perDomain`) and then
 * `all`, stratified by domain: `totals` and `sums` hold one entry per domain,
 * then the corpus's.
 */
function estimateRows(
  statistics: Statistics,
  sets: readonly ClusterSet[],
  totals: readonly DomainTotals[],
  sums: readonly Float64Array[],
  settings: IntervalSettings,
  perDomain: boolean,
): DomainEstimates[] {
  const size = sums[0]?.length ?? 0;
  const all = addUp(sums, size);
  const options = { maxGroups: settings.maxGroups };
  return totals.map((t, g) => {
    const isAll = g === totals.length - 1;
    const sample = isAll ? all : sums[g]!;
    const values = new Float64Array(statistics.size);
    statistics.evaluate(sample, values);
    const wanted = settings.intervals && (isAll || perDomain);
    const jack = wanted ? jackknife(isAll ? sets : [sets[g]!], sample, statistics, options) : null;
    return { totals: t, sums: sample, values, jack };
  });
}

/** Sum of the rows of a cluster set. */
function sumClusters(set: ClusterSet, size: number): Float64Array {
  const out = new Float64Array(size);
  for (let c = 0; c < set.count; c++) {
    for (let i = 0; i < size; i++) out[i]! += set.data[c * size + i]!;
  }
  return out;
}

/** Element-wise sum of vectors of length `size`. */
function addUp(vectors: readonly Float64Array[], size: number): Float64Array {
  const out = new Float64Array(size);
  for (const v of vectors) for (let i = 0; i < size; i++) out[i]! += v[i]!;
  return out;
}

/**
 * Which columns hold what the log recorded (capture.tokens_recorded and
 * capture.weights_recorded; absent means recorded), and one line for each
 * that does not, saying what the analysis leaves out because of it.
 */
export function recordedColumns(
  manifest: Manifest,
): { tokens: boolean; weights: boolean; skipped: string[] } {
  const tokens = manifest.capture.tokens_recorded !== false;
  const weights = manifest.capture.weights_recorded !== false;
  const skipped: string[] = [];
  if (!tokens) {
    skipped.push(
      "The trace records no token ids (capture.tokens_recorded is false; its token column holds placeholders): token statistics are skipped, vocabulary_specialisation.csv has no rows and token_colouring.html shows no documents.",
    );
  }
  if (!weights) {
    skipped.push(
      "The trace records no gate weights (capture.weights_recorded is false; its weights column holds placeholders): no statistic of this analysis reads weights (router statistics come from probs), so none is skipped and no placeholder enters a table.",
    );
  }
  return { tokens, weights, skipped };
}

/** What the reader of the outputs should know: absent statistics, reduced tables, approximations. */
function analysisNotes(
  acc: Accumulator,
  facts: {
    domains: readonly DomainData[];
    intervals: boolean;
    pooledCoactivation: boolean;
    /** Counts read by --from-counts: its own lines say what they lack (router sums, k ≥ 3 sampling). */
    fromCounts: boolean;
  },
): string[] {
  const { experts: E, topK: k, probs } = acc.dims;
  const notes: string[] = [];
  if (!probs && !facts.fromCounts) {
    notes.push(
      "The trace has no router distribution (capture.probs is false): l_norm, bies, router_entropy, topk_mass and topk_margin are absent (CoSMoEs Eq. 6 needs --probs at capture).",
    );
  }
  if (acc.corpusVocabulary !== null) {
    notes.push(
      "vocabulary_specialisation.csv holds the whole corpus only: per-domain token-id tables did not fit in memory.",
    );
  }
  if (acc.vocabularyDropped > 0) {
    notes.push(
      `vocabulary_specialisation.csv leaves out ${acc.vocabularyDropped} occurrences of token ids first seen after the token-id tables were full.`,
    );
  }
  if (facts.domains.length < 2) {
    notes.push("Domain divergence needs at least two domains; domain_divergence.csv has no rows.");
  }
  if (k < 2) notes.push("Co-activation needs top_k ≥ 2; coactivation.csv has no rows.");
  if (!coactivationPerDomain(acc.dims)) {
    notes.push(
      `With ${E} experts, coactivation.csv and layer_flow.csv hold the whole corpus only (per-domain tables are written for E ≤ 16).`,
    );
  }
  if (k >= 3 && !facts.fromCounts) {
    notes.push(
      `With top_k = ${k}, the within-document shuffle baselines of set_overlap and overlap_distribution are estimated from ${SHUFFLE_PAIRS_PER_PAIR} random token pairs per consecutive pair of each document (exact for k ≤ 2 and for first_choice_repeat, h_norm and ex_rep).`,
    );
  }
  if (facts.pooledCoactivation) {
    notes.push(
      "The popularity-adjusted co-activation baseline pools each row's documents (per-document shares would cost more than 2·10^8 products).",
    );
  }
  const single = facts.domains.filter((d) => d.docs === 1).map((d) => d.name);
  if (facts.intervals && single.length > 0) {
    notes.push(
      `Domains with a single document (${
        single.join(", ")
      }) have no intervals of their own and are held fixed in the intervals of all.`,
    );
  }
  return notes;
}
