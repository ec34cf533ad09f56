/**
 * The analysis from trace to tables: one streaming pass (accumulate.ts), the
 * statistics of each domain and of the whole corpus (statistics.ts) with
 * their cluster bootstrap intervals (bootstrap.ts), then one function per
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
import { type BootstrapResult, clusterBootstrap, type ClusterSet } from "./bootstrap.ts";
import { domainDivergenceTable } from "./divergence.ts";
import type { Dims } from "./layout.ts";
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
  /** Bootstrap resamples N (0: point estimates only, no intervals). */
  bootstrap: number;
  /** Seed of the bootstrap and the permutations. */
  seed: number;
  /** Permutations per domain pair (default clamp(N, 99, 999), fewer if the pair is very large). */
  permutations?: number;
  /** Token ids need at least this many occurrences for vocabulary specialisation (default 10). */
  minTokenCount?: number;
  /** Passed to the accumulator (buckets, samples). */
  accumulate?: AccumulateOptions;
  /** Bootstrap matrices (statistics × resamples × row groups, f64: 8 bytes each) may hold this many cells (default 2^25, 256 MiB). */
  maxBootstrapCells?: number;
}

export interface AnalysisResult {
  manifest: Manifest;
  dims: Dims;
  domains: DomainTotals[];
  totals: DomainTotals;
  /** CSV file name (without .csv) → rows. */
  tables: Record<string, CsvRow[]>;
  samples: { domain: string; docs: SampleDoc[] }[];
  /** Indices on the layer axis of the samples' first choices. */
  sampleLayers: number[];
  /** Resamples actually used by the document and bucket bootstraps, permutations per pair. */
  resamples: { documents: number; buckets: number; permutations: number };
  buckets: number;
  notes: string[];
  /**
   * Seconds: the streaming pass; the document and bucket bootstraps; the
   * permutation tests; everything after the pass (bootstraps, permutations, tables).
   */
  timing: { pass: number; bootstrap: number; permutations: number; afterPass: number };
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
  const acc = new Accumulator(dims, reader.manifest.capture.domains, options);
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
  const afterPass = performance.now();
  const manifest = reader.manifest;
  const moeLayers = manifest.model.moe_layers;
  const domains = acc.domains.filter((d) => d.docs > 0);
  const settings: BootstrapSettings = {
    bootstrap: options.bootstrap,
    seed: options.seed,
    maxCells: options.maxBootstrapCells ?? 2 ** 25,
    moeLayers,
  };
  const documents = documentEstimates(acc, domains, settings);
  const { totals, corpus } = documents;
  const buckets = bucketEstimates(acc, domains, { ...settings, totals: [...totals, corpus] });
  const divergence = domainDivergenceTable(acc.layout, {
    domains,
    totals,
    moeLayers,
    resampledShares: documents.resampledShares,
    resamples: documents.resamples,
    permutations: options.permutations,
    bootstrap: options.bootstrap,
    seed: options.seed,
  });
  const doc = documents.estimates;
  const bucket = buckets.estimates;
  const tables: Record<string, CsvRow[]> = {
    expert_shares: expertSharesTable(doc),
    repetition: layerStatisticsTable(doc, "repetition"),
    overlap_distribution: overlapDistributionTable(doc),
    cosmoes: layerStatisticsTable(doc, "cosmoes"),
    load_balance: layerStatisticsTable(doc, "load_balance"),
    coactivation: coactivationTable(bucket),
    vocabulary_specialisation: vocabularySpecialisationTable(acc, {
      domains,
      totals: [...totals, corpus],
      moeLayers,
      minCount: options.minTokenCount ?? 10,
    }),
    layer_flow: layerFlowTable(bucket),
    flow_information: flowInformationTable(bucket),
    domain_divergence: divergence.rows,
    summary: summaryTable(doc),
  };
  const resamples = {
    documents: documents.resamples,
    buckets: buckets.resamples,
    permutations: divergence.permutations,
  };
  return {
    manifest,
    dims: acc.dims,
    domains: totals,
    totals: corpus,
    tables,
    samples: domains.map((d) => ({ domain: d.name, docs: d.samples })),
    sampleLayers: acc.sampleLayers,
    resamples,
    buckets: acc.buckets,
    notes: analysisNotes(acc, { domains: domains.length, resamples, bootstrap: options.bootstrap }),
    timing: {
      pass: passSeconds,
      bootstrap: documents.seconds + buckets.seconds,
      permutations: divergence.seconds,
      afterPass: (performance.now() - afterPass) / 1000,
    },
  };
}

interface BootstrapSettings {
  /** Resamples wanted (N). */
  bootstrap: number;
  seed: number;
  /** Cells (f64) the bootstrap matrices of one kind of statistics may hold. */
  maxCells: number;
  moeLayers: readonly number[];
}

/** Statistics of some kind, bootstrapped, for the rows of each domain and `all`. */
interface Bootstrapped<S> {
  estimates: Estimates<S>;
  /** Resamples the bootstrap drew: N or fewer (memory cap); 0 where it did not run. */
  resamples: number;
  /** Seconds it took. */
  seconds: number;
}

interface DocumentEstimates extends Bootstrapped<DocStatistics> {
  /** The domains' totals. */
  totals: DomainTotals[];
  /** The whole corpus's totals (`all`). */
  corpus: DomainTotals;
  /** Per domain, [resamples, M, E] top-k counts of each resample; null where not kept. */
  resampledShares: Float32Array[] | null;
}

/**
 * The document statistics: the domains' and the corpus's totals and
 * estimates, and each domain's top-k counts per resample, which the domain
 * divergence intervals take from the same bootstrap.
 */
function documentEstimates(
  acc: Accumulator,
  domains: readonly DomainData[],
  settings: BootstrapSettings,
): DocumentEstimates {
  const { layers: M, experts: E } = acc.dims;
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
  // Resamples: N, fewer where the matrices of the domains and all would pass the cap.
  const groups = domains.length + 1;
  const resamples = Math.min(
    settings.bootstrap,
    Math.max(100, Math.floor(settings.maxCells / (statistics.size * groups))),
  );
  // The divergence intervals need every resample's [M, E] top-k counts per domain; kept
  // only where there is a pair of domains and they fit in the same memory cap.
  const keepShares = resamples > 0 && domains.length >= 2 &&
    domains.length * resamples * M * E <= settings.maxCells;
  const resampledShares = keepShares
    ? domains.map(() => new Float32Array(resamples * M * E))
    : null;
  let boot: BootstrapResult | null = null;
  const start = performance.now();
  if (resamples > 0 && domains.length > 0) {
    boot = clusterBootstrap(
      sets,
      L.size,
      statistics.size,
      (v, out) => statistics.evaluate(v, out),
      {
        resamples,
        seed: settings.seed,
        onResample: resampledShares
          ? (d, b, v) => {
            const target = resampledShares[d]!;
            for (let i = 0; i < M * E; i++) target[b * M * E + i] = v[L.any + i]!;
          }
          : undefined,
      },
    );
  }
  const seconds = boot ? (performance.now() - start) / 1000 : 0;
  return {
    estimates: {
      statistics,
      moeLayers: settings.moeLayers,
      domains: estimateDomains(
        statistics,
        [...totals, corpus],
        [...sums, addUp(sums, L.size)],
        boot,
      ),
    },
    resamples: boot ? resamples : 0,
    seconds,
    totals,
    corpus,
    resampledShares,
  };
}

/**
 * The bucket statistics (co-activation, flow information), per domain only
 * when E ≤ 16 (their tables grow with E²), always for `all`.
 */
function bucketEstimates(
  acc: Accumulator,
  domains: readonly DomainData[],
  settings: BootstrapSettings & { totals: DomainTotals[] },
): Bootstrapped<BucketStatistics> {
  const B = acc.bucketLayout;
  const statistics = new BucketStatistics(B);
  const sets: ClusterSet[] = domains.map((d) => ({ count: d.usedBuckets, data: d.bucketVectors }));
  const sums = sets.map((s) => sumClusters(s, B.size));
  const perDomain = coactivationPerDomain(acc.dims);
  // Resamples: N, fewer where the matrices of the groups written would pass the cap.
  const groups = perDomain ? domains.length + 1 : 1;
  const resamples = Math.min(
    settings.bootstrap,
    Math.max(100, Math.floor(settings.maxCells / (Math.max(1, statistics.size) * groups))),
  );
  let boot: BootstrapResult | null = null;
  const start = performance.now();
  if (resamples > 0 && domains.length > 0 && statistics.size > 0) {
    boot = clusterBootstrap(
      sets,
      B.size,
      statistics.size,
      (v, out) => statistics.evaluate(v, out),
      { resamples, seed: settings.seed + 1, perDomain },
    );
  }
  const seconds = boot ? (performance.now() - start) / 1000 : 0;
  const all = estimateDomains(statistics, settings.totals, [...sums, addUp(sums, B.size)], boot);
  return {
    estimates: {
      statistics,
      moeLayers: settings.moeLayers,
      // Without per-domain rows, only `all` (the last) is written.
      domains: perDomain ? all : all.slice(-1),
    },
    resamples: boot ? resamples : 0,
    seconds,
  };
}

/**
 * Point estimates and intervals of the domains and then `all`: `totals` and
 * `sums` hold one entry each, in that order, as the bootstrap's domains do.
 */
function estimateDomains(
  statistics: Statistics,
  totals: readonly DomainTotals[],
  sums: readonly Float64Array[],
  boot: BootstrapResult | null,
): DomainEstimates[] {
  const corpus = totals.length - 1;
  return totals.map((t, g) => {
    const values = new Float64Array(statistics.size);
    statistics.evaluate(sums[g]!, values);
    return {
      totals: t,
      sums: sums[g]!,
      values,
      intervals: (g === corpus ? boot?.all : boot?.domains[g]) ?? null,
      resamples: boot ? boot.resamples : 0,
    };
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

/** What the reader of the outputs should know: absent statistics, reduced tables, capped resamples. */
function analysisNotes(
  acc: Accumulator,
  facts: { domains: number; resamples: AnalysisResult["resamples"]; bootstrap: number },
): string[] {
  const { experts: E, topK: k, probs } = acc.dims;
  const { documents, buckets } = facts.resamples;
  const notes: string[] = [];
  if (!probs) {
    notes.push(
      "The trace has no router distribution (capture.probs is false): l_norm, bies, router_entropy, topk_mass and topk_margin are absent.",
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
  if (facts.domains < 2) {
    notes.push("Domain divergence needs at least two domains; domain_divergence.csv has no rows.");
  }
  if (k < 2) notes.push("Co-activation needs top_k ≥ 2; coactivation.csv has no rows.");
  if (!coactivationPerDomain(acc.dims)) {
    notes.push(
      `With ${E} experts, coactivation.csv and layer_flow.csv hold the whole corpus only (per-domain tables are written for E ≤ 16).`,
    );
  }
  if (documents > 0 && documents < facts.bootstrap) {
    notes.push(
      `The document bootstrap used ${documents} resamples (memory cap), not ${facts.bootstrap}.`,
    );
  }
  if (buckets > 0 && buckets < facts.bootstrap) {
    notes.push(
      `The bucket bootstrap used ${buckets} resamples (memory cap), not ${facts.bootstrap}.`,
    );
  }
  return notes;
}
