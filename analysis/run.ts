/**
 * The analysis from trace to tables: one streaming pass (accumulate.ts), point
 * estimates per domain and for the whole corpus, the cluster bootstrap
 * (bootstrap.ts), the permutation tests between domains, and the tidy rows
 * of every output CSV. Nothing is written here (write.ts does that), so tests
 * can look at the rows directly.
 */
import type { CsvRow } from "../common/csv.ts";
import type { Manifest, TraceReader } from "../trace/mod.ts";
import { type AccumulateOptions, Accumulator, type SampleDoc } from "./accumulate.ts";
import {
  benjaminiHochberg,
  type BootstrapResult,
  clusterBootstrap,
  type ClusterSet,
  jensenShannon,
  permutationTest,
  quantile,
} from "./bootstrap.ts";
import {
  bucketBaseline,
  CHOICES,
  coactivationPerDomain,
  COSMOES,
  countStatistics,
  docBaseline,
  evaluateBucket,
  evaluateDoc,
  Family,
  LOAD,
  needsProbs,
  REPETITION,
  SUMMARY_KEYS,
  VocabularyBaseline,
} from "./estimates.ts";
import type { Dims } from "./layout.ts";

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

/** The name of the whole-corpus rows. */
export const ALL = "all";

export interface DomainTotals {
  name: string;
  n_docs: number;
  n_tokens: number;
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

/** Sum of the rows of a cluster set. */
function sumClusters(set: ClusterSet, size: number): Float64Array {
  const out = new Float64Array(size);
  for (let c = 0; c < set.count; c++) {
    for (let i = 0; i < size; i++) out[i]! += set.data[c * size + i]!;
  }
  return out;
}

interface Labelled {
  family: Family;
  layer: number;
  key: number;
  value: number;
}

function describe<L>(
  vector: Float64Array,
  layout: L,
  evaluate: (
    v: Float64Array,
    l: L,
    emit: (f: Family, layer: number, key: number, value: number) => void,
  ) => void,
): Labelled[] {
  const out: Labelled[] = [];
  evaluate(vector, layout, (family, layer, key, value) => out.push({ family, layer, key, value }));
  return out;
}

export async function runAnalysis(
  reader: TraceReader,
  options: AnalysisOptions,
): Promise<AnalysisResult> {
  const started = performance.now();
  const acc = await accumulateTrace(reader, options.accumulate);
  const passSeconds = (performance.now() - started) / 1000;
  const manifest = reader.manifest;
  const dims = acc.dims;
  const { layers: M, experts: E, topK: k } = dims;
  const L = acc.layout;
  const BL = acc.bucketLayout;
  const moeLayers = manifest.model.moe_layers;
  const domains = acc.domains.filter((d) => d.docs > 0);
  const notes: string[] = [];
  if (!dims.probs) {
    notes.push(
      "The trace has no router distribution (capture.probs is false): l_norm, bies, router_entropy, topk_mass and topk_margin are absent.",
    );
  }
  const bootStart = performance.now();
  let bootstrapSeconds = 0;
  let permutationSeconds = 0;
  const timed = <T>(fn: () => T): [T, number] => {
    const start = performance.now();
    const value = fn();
    return [value, (performance.now() - start) / 1000];
  };

  // Per-domain and corpus totals.
  const docSets: ClusterSet[] = domains.map((d) => ({ count: d.docs, data: d.docVectors }));
  const docSums = docSets.map((s) => sumClusters(s, L.size));
  const allDocSum = new Float64Array(L.size);
  for (const s of docSums) for (let i = 0; i < L.size; i++) allDocSum[i]! += s[i]!;
  const totals: DomainTotals[] = domains.map((d, i) => ({
    name: d.name,
    n_docs: d.docs,
    n_tokens: docSums[i]![L.tokens]!,
  }));
  const corpus: DomainTotals = {
    name: ALL,
    n_docs: totals.reduce((n, t) => n + t.n_docs, 0),
    n_tokens: totals.reduce((n, t) => n + t.n_tokens, 0),
  };
  const groups = [...totals, corpus];
  const maxCells = options.maxBootstrapCells ?? 2 ** 25;

  // Document bootstrap.
  const docStats = countStatistics((v, emit) => evaluateDoc(v, L, emit), allDocSum);
  const docResamples = Math.min(
    options.bootstrap,
    Math.max(100, Math.floor(maxCells / (docStats * groups.length))),
  );
  const keepShares = domains.length >= 2 &&
    domains.length * docResamples * M * E <= maxCells;
  const resampledShares = keepShares
    ? domains.map(() => new Float32Array(docResamples * M * E))
    : null;
  let docBoot: BootstrapResult | null = null;
  if (docResamples > 0 && domains.length > 0) {
    [docBoot, bootstrapSeconds] = timed(() =>
      clusterBootstrap(
        docSets,
        L.size,
        docStats,
        (v, out) => {
          let s = 0;
          evaluateDoc(v, L, (_f, _l, _k, value) => out[s++] = value);
        },
        {
          resamples: docResamples,
          seed: options.seed,
          onResample: resampledShares
            ? (d, b, v) => {
              const target = resampledShares[d]!;
              for (let i = 0; i < M * E; i++) target[b * M * E + i] = v[L.any + i]!;
            }
            : undefined,
        },
      )
    );
  }

  // Bucket bootstrap (co-activation, flow information).
  const bucketSets: ClusterSet[] = domains.map((d) => ({
    count: d.usedBuckets,
    data: d.bucketVectors,
  }));
  const bucketSums = bucketSets.map((s) => sumClusters(s, BL.size));
  const allBucketSum = new Float64Array(BL.size);
  for (const s of bucketSums) for (let i = 0; i < BL.size; i++) allBucketSum[i]! += s[i]!;
  const bucketStats = countStatistics((v, emit) => evaluateBucket(v, BL, emit), allBucketSum);
  const perDomainBuckets = coactivationPerDomain(dims);
  const bucketGroups = perDomainBuckets ? groups.length : 1;
  const bucketResamples = Math.min(
    options.bootstrap,
    Math.max(100, Math.floor(maxCells / (Math.max(1, bucketStats) * bucketGroups))),
  );
  let bucketBoot: BootstrapResult | null = null;
  if (bucketResamples > 0 && domains.length > 0 && bucketStats > 0) {
    let seconds: number;
    [bucketBoot, seconds] = timed(() =>
      clusterBootstrap(
        bucketSets,
        BL.size,
        bucketStats,
        (v, out) => {
          let s = 0;
          evaluateBucket(v, BL, (_f, _l, _k, value) => out[s++] = value);
        },
        { resamples: bucketResamples, seed: options.seed + 1, perDomain: perDomainBuckets },
      )
    );
    bootstrapSeconds += seconds;
  }

  // Tables from the document vectors.
  const tables: Record<string, CsvRow[]> = {
    expert_shares: [],
    repetition: [],
    overlap_distribution: [],
    cosmoes: [],
    load_balance: [],
    coactivation: [],
    vocabulary_specialisation: [],
    layer_flow: [],
    flow_information: [],
    domain_divergence: [],
    summary: [],
  };
  const interval = (boot: BootstrapResult | null, g: number, s: number): [number, number] => {
    if (!boot) return [NaN, NaN];
    const iv = g === domains.length ? boot.all : boot.domains[g];
    return iv ? [iv.low[s]!, iv.high[s]!] : [NaN, NaN];
  };
  groups.forEach((group, g) => {
    const sum = g === domains.length ? allDocSum : docSums[g]!;
    const labelled = describe(sum, L, evaluateDoc);
    const baseline = docBaseline(dims, group.n_tokens);
    const common = {
      domain: group.name,
      n_docs: group.n_docs,
      n_tokens: group.n_tokens,
    };
    const nPairs = sum[L.pairs]!;
    const nBoot = docBoot ? docResamples : 0;
    labelled.forEach((stat, s) => {
      const [lo, hi] = interval(docBoot, g, s);
      const layer = moeLayers[stat.layer]!;
      const estimate = { ci_low: lo, ci_high: hi, baseline: baseline(stat.family, stat.key) };
      switch (stat.family) {
        case Family.Share:
          tables.expert_shares!.push({
            layer,
            ...common,
            expert: stat.key % E,
            choice: CHOICES[Math.floor(stat.key / E)],
            share: stat.value,
            ...estimate,
            n_boot: nBoot,
          });
          break;
        case Family.Repetition:
          tables.repetition!.push({
            layer,
            ...common,
            n_pairs: nPairs,
            statistic: REPETITION[stat.key],
            value: stat.value,
            ...estimate,
            n_boot: nBoot,
          });
          break;
        case Family.Overlap:
          tables.overlap_distribution!.push({
            layer,
            ...common,
            n_pairs: nPairs,
            overlap: stat.key,
            proportion: stat.value,
            ...estimate,
            n_boot: nBoot,
          });
          break;
        case Family.Cosmoes:
        case Family.Load:
          if (!dims.probs && needsProbs(stat.family, stat.key)) break;
          (stat.family === Family.Cosmoes ? tables.cosmoes! : tables.load_balance!).push({
            layer,
            ...common,
            n_pairs: nPairs,
            statistic: (stat.family === Family.Cosmoes ? COSMOES : LOAD)[stat.key],
            value: stat.value,
            ...estimate,
            n_boot: nBoot,
          });
          break;
        case Family.Summary: {
          const [family, key, name] = SUMMARY_KEYS[stat.key]!;
          const absent = !dims.probs && needsProbs(family, key);
          tables.summary!.push({
            statistic: name,
            layer: ALL,
            ...common,
            value: absent ? NaN : stat.value,
            ...(absent ? { ci_low: NaN, ci_high: NaN, baseline: NaN } : estimate),
            n_boot: absent ? 0 : nBoot,
            note: absent
              ? "absent: the trace has no router distribution (probs)"
              : "mean over layers",
          });
          break;
        }
      }
    });
  });

  // Tables from the bucket vectors.
  groups.forEach((group, g) => {
    const isAll = g === domains.length;
    if (!isAll && !perDomainBuckets) return;
    const sum = isAll ? allBucketSum : bucketSums[g]!;
    const labelled = describe(sum, BL, evaluateBucket);
    const baseline = bucketBaseline(dims, group.n_tokens);
    const common = { domain: group.name, n_docs: group.n_docs, n_tokens: group.n_tokens };
    labelled.forEach((stat, s) => {
      const [lo, hi] = interval(bucketBoot, g, s);
      const b = baseline(stat.family);
      if (stat.family === Family.Coactivation) {
        if (k < 2) return;
        const i = Math.floor(stat.key / E);
        const j = stat.key % E;
        tables.coactivation!.push({
          layer: moeLayers[stat.layer]!,
          ...common,
          expert_i: i,
          expert_j: j,
          n_i: sum[BL.any + stat.layer * E + i]!,
          n_ij: sum[BL.coact + stat.layer * BL.pairCount + BL.pairIndex[i * E + j]!]!,
          coactivation: stat.value,
          ci_low: lo,
          ci_high: hi,
          baseline: b,
          lift: stat.value / b,
          lift_ci_low: lo / b,
          lift_ci_high: hi / b,
          n_boot: bucketBoot ? bucketResamples : 0,
        });
      } else {
        tables.flow_information!.push({
          layer: moeLayers[stat.layer]!,
          layer_next: moeLayers[stat.layer + 1]!,
          ...common,
          mutual_information: stat.value,
          ci_low: lo,
          ci_high: hi,
          baseline: b,
          n_boot: bucketBoot ? bucketResamples : 0,
        });
      }
    });
    for (let l = 0; l + 1 < M; l++) {
      for (let i = 0; i < E; i++) {
        let row = 0;
        for (let j = 0; j < E; j++) row += sum[BL.flow + (l * E + i) * E + j]!;
        for (let j = 0; j < E; j++) {
          const count = sum[BL.flow + (l * E + i) * E + j]!;
          tables.layer_flow!.push({
            layer: moeLayers[l]!,
            layer_next: moeLayers[l + 1]!,
            ...common,
            expert_from: i,
            expert_to: j,
            count,
            probability: count / row,
            baseline: 1 / E,
          });
        }
      }
    }
  });

  // Vocabulary specialisation.
  const minCount = options.minTokenCount ?? 10;
  const vocabBaseline = new VocabularyBaseline(E);
  const perDomainVocabulary = acc.corpusVocabulary === null;
  let merged = acc.corpusVocabulary;
  if (!merged) {
    merged = new Map<number, Uint32Array>();
    for (const d of domains) {
      for (const [token, counts] of d.vocab) {
        const m = merged.get(token);
        if (m) { for (let i = 0; i < counts.length; i++) m[i]! += counts[i]!; }
        else merged.set(token, Uint32Array.from(counts));
      }
    }
  }
  if (!perDomainVocabulary) {
    notes.push(
      "vocabulary_specialisation.csv holds the whole corpus only: per-domain token-id tables did not fit in memory.",
    );
  }
  if (acc.vocabularyDropped > 0) {
    notes.push(
      `vocabulary_specialisation.csv leaves out ${acc.vocabularyDropped} occurrences of token ids first seen after the token-id tables were full.`,
    );
  }
  groups.forEach((group, g) => {
    if (g < domains.length && !perDomainVocabulary) return;
    const vocab = g === domains.length ? merged : domains[g]!.vocab;
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
        expected += vocabBaseline.expectedMaxShare(n);
      }
      shares.sort((a, b) => a - b);
      tables.vocabulary_specialisation!.push({
        layer: moeLayers[l]!,
        domain: group.name,
        n_docs: group.n_docs,
        n_tokens: group.n_tokens,
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

  // Domain divergence: JSD of top-k expert distributions, permutation test, BH.
  // Permutations per pair: clamp(N, 99, 999), fewer when all pairs together would need more
  // than about 2·10^10 additions (each permutation sums the smaller group's counts).
  const pairCount = (domains.length * (domains.length - 1)) / 2;
  const permutationsFor = (smaller: number): number => {
    const wanted = options.permutations ?? Math.max(99, Math.min(999, options.bootstrap));
    const affordable = Math.floor(2e10 / Math.max(1, pairCount * smaller * M * E));
    return Math.max(Math.min(99, wanted), Math.min(wanted, affordable));
  };
  let permutationsUsed = 0;
  const divergence: CsvRow[] = [];
  for (let a = 0; a < domains.length; a++) {
    for (let b = a + 1; b < domains.length; b++) {
      const da = domains[a]!;
      const db = domains[b]!;
      const P = permutationsFor(Math.min(da.docs, db.docs));
      permutationsUsed = Math.max(permutationsUsed, P);
      const pooled = new Float32Array((da.docs + db.docs) * M * E);
      [da, db].forEach((d, side) => {
        for (let i = 0; i < d.docs; i++) {
          const from = i * L.size + L.any;
          pooled.set(d.docVectors.subarray(from, from + M * E), (side * da.docs + i) * M * E);
        }
      });
      const [test, seconds] = timed(() =>
        permutationTest(
          da.docs,
          db.docs,
          pooled,
          M,
          E,
          { permutations: P, seed: options.seed + 1000 + a * 7919 + b },
        )
      );
      permutationSeconds += seconds;
      for (let l = 0; l < M; l++) {
        let lo = NaN;
        let hi = NaN;
        if (resampledShares) {
          const values = new Float64Array(docResamples);
          for (let r = 0; r < docResamples; r++) {
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
        divergence.push({
          layer: moeLayers[l]!,
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
          n_boot: resampledShares ? docResamples : 0,
        });
      }
    }
  }
  const q = benjaminiHochberg(divergence.map((r) => r.p_value as number));
  divergence.forEach((r, i) => r.q_value = q[i]!);
  tables.domain_divergence = divergence;
  if (domains.length < 2) {
    notes.push("Domain divergence needs at least two domains; domain_divergence.csv has no rows.");
  }
  if (k < 2) notes.push("Co-activation needs top_k ≥ 2; coactivation.csv has no rows.");
  if (!perDomainBuckets) {
    notes.push(
      `With ${E} experts, coactivation.csv and layer_flow.csv hold the whole corpus only (per-domain tables are written for E ≤ 16).`,
    );
  }
  if (docBoot && docResamples < options.bootstrap) {
    notes.push(
      `The document bootstrap used ${docResamples} resamples (memory cap), not ${options.bootstrap}.`,
    );
  }
  if (bucketBoot && bucketResamples < options.bootstrap) {
    notes.push(
      `The bucket bootstrap used ${bucketResamples} resamples (memory cap), not ${options.bootstrap}.`,
    );
  }

  return {
    manifest,
    dims,
    domains: totals,
    totals: corpus,
    tables,
    samples: domains.map((d) => ({ domain: d.name, docs: d.samples })),
    sampleLayers: acc.sampleLayers,
    resamples: {
      documents: docBoot ? docResamples : 0,
      buckets: bucketBoot ? bucketResamples : 0,
      permutations: permutationsUsed,
    },
    buckets: acc.buckets,
    notes,
    timing: {
      pass: passSeconds,
      bootstrap: bootstrapSeconds,
      permutations: permutationSeconds,
      afterPass: (performance.now() - bootStart) / 1000,
    },
  };
}
