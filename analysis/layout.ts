/**
 * Where each sufficient statistic lives in the per-cluster vectors that the
 * streaming pass fills and the bootstrap resamples.
 *
 * Two kinds of cluster:
 * - a document (`DocLayout`): small per-document sums (counts per layer ×
 *   expert × rank, repetition and overlap counts, router-probability sums);
 * - a bucket of documents (`BucketLayout`): the large tables (co-activation
 *   pairs per layer, first-choice flow between consecutive layers). Documents
 *   are dealt round-robin into a fixed number of buckets per domain, in trace
 *   order, so a bucket is a cluster of whole documents and memory does not
 *   grow with the trace.
 *
 * Every quantity is a sum over tokens (or consecutive-token pairs) of the
 * cluster, so the sufficient statistics of a resample are the
 * multiplicity-weighted sums of its clusters' vectors.
 */

/** The trace's shape as the analysis sees it. */
export interface Dims {
  /** M: MoE layers, in `moe_layers` order. */
  layers: number;
  /** E: routed experts per layer. */
  experts: number;
  /** k: experts chosen per token. */
  topK: number;
  /** Whether the router distribution is in the trace. */
  probs: boolean;
}

/** Offsets into a document vector. `[M, E]` blocks are indexed `l * E + e`. */
export class DocLayout {
  readonly dims: Dims;
  /** [M, E] tokens whose first choice is e. */
  readonly first: number;
  /** [M, E] tokens whose second choice is e (all zero when k = 1). */
  readonly second: number;
  /** [M, E] tokens with e anywhere in their top-k. */
  readonly any: number;
  /** Tokens of the cluster. */
  readonly tokens: number;
  /** Consecutive-token pairs (tokens − 1 per document). */
  readonly pairs: number;
  /** [M] pairs whose first choice is the same. */
  readonly sameFirst: number;
  /** [M, k+1] pairs by |S_t ∩ S_t−1| = 0..k. */
  readonly overlap: number;
  /** [M] Σ_t router entropy in nats (probs only). */
  readonly entropy: number;
  /** [M] Σ_t probability mass of the k largest probabilities (probs only). */
  readonly topMass: number;
  /** [M] Σ_t (p_(k) − p_(k+1)), the margin at the top-k boundary (probs only). */
  readonly margin: number;
  /**
   * [M] Σ_pairs Σ_e |W_t(e) − W_t−1(e)| with W = softmax(τ·router logits) over
   * all experts: CoSMoEs Eq. 6's L (probs only).
   */
  readonly change: number;
  /** [M] expected pairs with the same first choice if the document's tokens were shuffled (shuffle.ts). */
  readonly shuffleSameFirst: number;
  /** [M, k+1] expected pairs with |S_t ∩ S_t−1| = j if the document's tokens were shuffled. */
  readonly shuffleOverlap: number;
  /** Length of the vector. */
  readonly size: number;

  constructor(dims: Dims) {
    this.dims = dims;
    const { layers: M, experts: E, topK: k } = dims;
    let o = 0;
    const take = (n: number) => {
      const at = o;
      o += n;
      return at;
    };
    this.first = take(M * E);
    this.second = take(M * E);
    this.any = take(M * E);
    this.tokens = take(1);
    this.pairs = take(1);
    this.sameFirst = take(M);
    this.overlap = take(M * (k + 1));
    const p = dims.probs ? M : 0;
    this.entropy = take(p);
    this.topMass = take(p);
    this.margin = take(p);
    this.change = take(p);
    this.shuffleSameFirst = take(M);
    this.shuffleOverlap = take(M * (k + 1));
    this.size = o;
  }
}

/** Offsets into a bucket vector (integer counts only). */
export class BucketLayout {
  readonly dims: Dims;
  /** Unordered expert pairs i < j per layer: E(E−1)/2. */
  readonly pairCount: number;
  /** [E·E] index of the pair (i, j) in a layer's pair block, or −1 on the diagonal. */
  readonly pairIndex: Int32Array;
  /** [M, pairs] tokens whose top-k holds both i and j. */
  readonly coact: number;
  /** [M, E] tokens with e in their top-k (N(i) of the co-activation ratio). */
  readonly any: number;
  /** [M−1, E, E] tokens whose first choice is i at layer l and j at layer l+1. */
  readonly flow: number;
  /** Tokens of the bucket. */
  readonly tokens: number;
  readonly size: number;

  constructor(dims: Dims) {
    this.dims = dims;
    const { layers: M, experts: E } = dims;
    this.pairCount = (E * (E - 1)) / 2;
    this.pairIndex = new Int32Array(E * E).fill(-1);
    let p = 0;
    for (let i = 0; i < E; i++) {
      for (let j = i + 1; j < E; j++) {
        this.pairIndex[i * E + j] = p;
        this.pairIndex[j * E + i] = p;
        p++;
      }
    }
    this.coact = 0;
    this.any = M * this.pairCount;
    this.flow = this.any + M * E;
    this.tokens = this.flow + (M - 1) * E * E;
    this.size = this.tokens + 1;
  }
}
