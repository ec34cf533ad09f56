/**
 * Paired difference intervals for `moetrace compare` when A and B hold the
 * same documents (two models, or base and instruct, run over one corpus
 * selection): the statistic is θ_B − θ_A of the concatenated per-document
 * vectors [x_A | x_B], and the cluster jackknife (jackknife.ts) deletes
 * document j from both sides at once, stratified by domain as the analysis
 * is. Shared documents make the two estimates positively correlated; this
 * interval counts that, where MOVER (compare_tables.ts) must assume
 * independence and is then too wide.
 *
 * It covers the document statistics whose interval is value ± t·se (shares,
 * repetition, overlap, CoSMoEs H_norm/ExRep/L_norm/BIES, load-balance and
 * router statistics, their means over layers); ΔUniform and MaxVio (their own
 * interval method), co-activation, flow, vocabulary and divergence keep MOVER.
 */
import type { TraceReader } from "../trace/mod.ts";
import type { Accumulator, DomainData } from "./accumulate.ts";
import { type ClusterSet, type Jackknife, jackknife, tInterval } from "./jackknife.ts";
import {
  type Choice,
  DocStatistics,
  type LayerStatistic,
  SHARE_DEVIATIONS,
  type Statistics,
} from "./statistics.ts";
import { ALL } from "./tables.ts";

/** θ_B − θ_A of a vector holding A's sums then B's (each `half` long). */
class PairedDifference implements Statistics {
  readonly size: number;
  #inner: Statistics;
  #half: number;
  #a: Float64Array;
  #b: Float64Array;

  constructor(inner: Statistics, half: number) {
    this.size = inner.size;
    this.#inner = inner;
    this.#half = half;
    this.#a = new Float64Array(inner.size);
    this.#b = new Float64Array(inner.size);
  }

  evaluate(v: ArrayLike<number>, out: Float64Array): void {
    const all = v as Float64Array;
    this.#inner.evaluate(all.subarray(0, this.#half), this.#a);
    this.#inner.evaluate(all.subarray(this.#half, 2 * this.#half), this.#b);
    for (let s = 0; s < this.size; s++) out[s] = this.#b[s]! - this.#a[s]!;
  }
}

/** Why A and B cannot be paired, or null when every document pairs up. */
export function pairingProblem(
  a: { acc: Accumulator; corpus: unknown },
  b: { acc: Accumulator; corpus: unknown },
): string | null {
  if (JSON.stringify(a.corpus) !== JSON.stringify(b.corpus)) return "their corpora differ";
  const [da, db] = [a.acc.dims, b.acc.dims];
  if (da.layers !== db.layers || da.experts !== db.experts || da.topK !== db.topK) {
    return "their models have different MoE layers, experts or top-k";
  }
  if (da.probs !== db.probs) return "only one of them has the router distribution";
  const domainsA = a.acc.domains.filter((d) => d.docs > 0);
  const domainsB = b.acc.domains.filter((d) => d.docs > 0);
  if (domainsA.map((d) => d.name).join("\n") !== domainsB.map((d) => d.name).join("\n")) {
    return "their domains differ";
  }
  const L = a.acc.layout;
  for (const [i, x] of domainsA.entries()) {
    const y = domainsB[i]!;
    if (x.docs !== y.docs) return `domain ${x.name} has ${x.docs} and ${y.docs} documents`;
    for (let d = 0; d < x.docs; d++) {
      const tokensA = x.docVectors[d * L.size + L.tokens]!;
      const tokensB = y.docVectors[d * L.size + L.tokens]!;
      if (x.docIds[d] !== y.docIds[d] || tokensA !== tokensB) {
        return `document ${x.docIds[d]} of ${x.name} is not document ${
          y.docIds[d]
        } of the same length in B`;
      }
    }
  }
  return null;
}

/**
 * Per document, in trace order, its domain, id, length and a 32-bit FNV-1a
 * hash of its token ids: two traces pair only when these lists are equal
 * (the same ids and lengths alone do not make the same documents: a capture
 * numbers its documents from 0, and --max-tokens makes lengths alike).
 */
export async function documentFingerprints(reader: TraceReader): Promise<string[]> {
  const out: string[] = [];
  let key = "";
  let hash = 0x811c9dc5;
  let length = 0;
  const flush = () => {
    if (length > 0) out.push(`${key}\t${length}\t${hash >>> 0}`);
  };
  for await (const batch of reader.batches()) {
    for (let r = 0; r < batch.rows; r++) {
      const rowKey = `${batch.domainNames[batch.domainCodes[r]!]}\t${batch.doc[r]}`;
      if (rowKey !== key) {
        flush();
        key = rowKey;
        hash = 0x811c9dc5;
        length = 0;
      }
      // FNV-1a over the token id's four bytes.
      let t = batch.token[r]!;
      for (let i = 0; i < 4; i++) {
        hash = Math.imul(hash ^ (t & 0xff), 0x01000193);
        t >>>= 8;
      }
      length++;
    }
  }
  flush();
  return out;
}

/** A domain's paired clusters: each document's A vector then its B vector. */
function pairedClusters(x: DomainData, y: DomainData, size: number): ClusterSet {
  const data = new Float64Array(x.docs * 2 * size);
  for (let d = 0; d < x.docs; d++) {
    data.set(x.docVectors.subarray(d * size, (d + 1) * size), 2 * d * size);
    data.set(y.docVectors.subarray(d * size, (d + 1) * size), (2 * d + 1) * size);
  }
  return { count: x.docs, data };
}

function sum(set: ClusterSet, size: number): Float64Array {
  const out = new Float64Array(size);
  for (let c = 0; c < set.count; c++) {
    for (let i = 0; i < size; i++) out[i]! += set.data[c * size + i]!;
  }
  return out;
}

/** Paired jackknives per domain and for `all`, and the slots of the compared rows. */
export class PairedIntervals {
  readonly statistics: DocStatistics;
  readonly #jack = new Map<string, Jackknife>();
  readonly #values = new Map<string, Float64Array>();

  constructor(a: Accumulator, b: Accumulator, options: { maxGroups?: number } = {}) {
    const L = a.layout;
    this.statistics = new DocStatistics(L);
    const difference = new PairedDifference(this.statistics, L.size);
    const domainsA = a.domains.filter((d) => d.docs > 0);
    const domainsB = b.domains.filter((d) => d.docs > 0);
    const sets = domainsA.map((x, i) => pairedClusters(x, domainsB[i]!, L.size));
    const sums = sets.map((s) => sum(s, 2 * L.size));
    const total = new Float64Array(2 * L.size);
    for (const s of sums) for (let i = 0; i < total.length; i++) total[i]! += s[i]!;
    const run = (name: string, strata: ClusterSet[], sample: Float64Array) => {
      const values = new Float64Array(difference.size);
      difference.evaluate(sample, values);
      this.#values.set(name, values);
      this.#jack.set(name, jackknife(strata, sample, difference, options));
    };
    domainsA.forEach((d, i) => run(d.name, [sets[i]!], sums[i]!));
    run(ALL, sets, total);
  }

  /**
   * The paired 95% interval of B − A for a compare row (its key cells and
   * quantity) centred on `difference`, or null for rows this method does not
   * cover (or where the jackknife saw no variation).
   */
  interval(
    table: string,
    row: Record<string, unknown>,
    quantity: string,
    difference: number,
  ): { low: number; high: number } | null {
    const slot = this.#slot(table, row, quantity);
    const jack = this.#jack.get(String(row.domain));
    if (slot === null || !jack) return null;
    const se = jack.se[slot]!;
    if (!(se > 0)) return null;
    const { low, high } = tInterval(difference, se, jack.df[slot]!);
    return Number.isFinite(low) ? { low, high } : null;
  }

  /** The statistic's slot in DocStatistics for a row of a document-statistics table. */
  #slot(table: string, row: Record<string, unknown>, quantity: string): number | null {
    const S = this.statistics;
    const { layers: M, experts: E, topK: k } = S.dims;
    const moeLayer = row.moe_layer === ALL ? null : Number(row.moe_layer);
    if (moeLayer !== null && !(Number.isInteger(moeLayer) && moeLayer >= 0 && moeLayer < M)) {
      return null;
    }
    if (table === "expert_shares" && quantity === "share" && moeLayer !== null) {
      const choice = String(row.choice) as Choice;
      const expert = Number(row.expert);
      if (!(choice in S.shares) || !(expert >= 0 && expert < E)) return null;
      return S.shares[choice] + moeLayer * E + expert;
    }
    if (table === "overlap_distribution" && quantity === "proportion" && moeLayer !== null) {
      const overlap = Number(row.overlap);
      if (!(overlap >= 0 && overlap <= k)) return null;
      return S.overlap + moeLayer * (k + 1) + overlap;
    }
    const layerTables = ["repetition", "cosmoes", "load_balance", "summary"];
    if (layerTables.includes(table) && quantity === "value") {
      const statistic = String(row.statistic) as LayerStatistic;
      if (!(statistic in S.perLayer) || SHARE_DEVIATIONS.has(statistic)) return null;
      return moeLayer === null ? S.layerMean[statistic] : S.perLayer[statistic] + moeLayer;
    }
    return null;
  }
}
