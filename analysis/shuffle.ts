/**
 * The within-document shuffle baselines of the pair statistics, added to a
 * document's vector when its last row has been counted.
 *
 * Shuffling a document's T tokens at random makes each consecutive pair a
 * uniformly random pair of distinct tokens of the document, so the expected
 * number of the T − 1 pairs with a property X is
 *
 *   (T − 1) · W_X / (T(T − 1)) = W_X / T,
 *
 * with W_X the ordered pairs (t, u), t ≠ u, of the document that have X. The
 * shuffle keeps each document's expert counts (its marginal), so a statistic
 * above this baseline shows locality, not just a popular expert.
 *
 * - Same first choice: W = Σ_e c_first(e)(c_first(e) − 1), exact for any k.
 * - |S_t ∩ S_u| = j, exact for k ≤ 2: Σ_e c_any(e)(c_any(e) − 1) counts the
 *   pairs once per shared expert, so with W_2 = Σ_s n_s(n_s − 1) over distinct
 *   sets s (k = 2), W_1 = Σ_e c_any(e)(c_any(e) − 1) − 2·W_2 and
 *   W_0 = T(T − 1) − W_1 − W_2 (k = 1: W_1 = Σ_e c(c − 1), W_0 the rest).
 * - k ≥ 3: the distribution of |S_t ∩ S_u| needs every subset's count, so it
 *   is estimated from SHUFFLE_PAIRS_PER_PAIR · (T − 1) ordered pairs of
 *   distinct tokens drawn at random (all pairs when the document is short),
 *   seeded by document id and layer.
 */
import { Rng } from "../common/random.ts";
import type { DocLayout } from "./layout.ts";

/** Random token pairs drawn per consecutive pair when k ≥ 3. */
export const SHUFFLE_PAIRS_PER_PAIR = 8;

/** Scratch the shuffle baselines reuse from document to document. */
export class ShuffleScratch {
  /**
   * [M, E(E−1)/2] (k = 2) the bucket's pair counts before the document: with
   * k = 2 a token's set is one pair, so the document's count of each set is the
   * bucket's count after it less this.
   */
  readonly pairsBefore: Float64Array;
  /** [E] row stamp of each expert (k ≥ 3 intersections). */
  readonly marks: Int32Array;
  /** [k + 1] ordered pairs by overlap. */
  readonly pairsByOverlap: Float64Array;

  constructor(M: number, E: number, k: number) {
    this.pairsBefore = new Float64Array(k === 2 ? (M * E * (E - 1)) / 2 : 0);
    this.marks = new Int32Array(E).fill(-1);
    this.pairsByOverlap = new Float64Array(k + 1);
  }
}

/**
 * Adds the document's shuffle expectations to `v` (its vector, whose expert
 * counts already hold this document's rows start..end); `bucket` is its
 * bucket's vector after the document (k = 2 reads the document's set counts
 * from it, against `scratch.pairsBefore`).
 */
export function addShuffleExpectations(
  experts: Uint16Array,
  start: number,
  end: number,
  L: DocLayout,
  v: Float64Array,
  scratch: ShuffleScratch,
  docId: number,
  bucket: Float64Array,
  coact: number,
): void {
  const { layers: M, topK: k } = L.dims;
  addShuffleBaselines(
    v,
    L,
    end - start,
    scratch.pairsByOverlap,
    { counts: bucket, at: coact, less: scratch.pairsBefore },
    (l) => sampledOverlaps(experts, start, end, l, M, k, scratch, docId),
  );
}

/**
 * A document's token count of each distinct k = 2 set, [M, E(E−1)/2] from
 * `counts[at]`, less `less` (same shape) when given: the streaming pass reads
 * its bucket after the document less the bucket before it, the counts path
 * the document's own pair table.
 */
export interface DocPairCounts {
  readonly counts: Float64Array;
  readonly at: number;
  readonly less: Float64Array | null;
}

/**
 * The shuffle baselines' arithmetic, shared by the streaming pass and the
 * counts path so the two agree to the bit: adds sameFirst / T and W_j / T per
 * layer to `v` (whose first-choice and any-choice expert counts already hold
 * the document's T tokens). `W` is [k + 1] scratch; k = 2 reads `pairs`; k ≥ 3
 * calls `largeK` to fill W (zeroed) for layer l, or sets W to NaN without it.
 */
export function addShuffleBaselines(
  v: Float64Array,
  L: DocLayout,
  T: number,
  W: Float64Array,
  pairs: DocPairCounts | null,
  largeK: ((l: number, W: Float64Array) => void) | null,
): void {
  const { layers: M, experts: E, topK: k } = L.dims;
  if (T < 2) return;
  const all = T * (T - 1);
  const pairCount = (E * (E - 1)) / 2;
  for (let l = 0; l < M; l++) {
    const le = l * E;
    let sameFirst = 0;
    let sharedExperts = 0;
    for (let e = 0; e < E; e++) {
      const f = v[L.first + le + e]!;
      sameFirst += f * (f - 1);
      const c = v[L.any + le + e]!;
      sharedExperts += c * (c - 1);
    }
    v[L.shuffleSameFirst + l]! += sameFirst / T;
    W.fill(0);
    if (k === 1) {
      W[1] = sharedExperts;
      W[0] = all - sharedExperts;
    } else if (k === 2) {
      const { counts, at, less } = pairs!;
      let W2 = 0;
      for (let p = l * pairCount; p < (l + 1) * pairCount; p++) {
        const n = less ? counts[at + p]! - less[p]! : counts[at + p]!;
        W2 += n * (n - 1);
      }
      W[2] = W2;
      W[1] = sharedExperts - 2 * W2;
      W[0] = all - W[1]! - W2;
    } else if (largeK) {
      largeK(l, W);
    } else {
      W.fill(NaN);
    }
    const at = L.shuffleOverlap + l * (k + 1);
    for (let j = 0; j <= k; j++) v[at + j]! += W[j]! / T;
  }
}

/**
 * Ordered pairs by |S_t ∩ S_u| for k ≥ 3, into scratch.pairsByOverlap: every
 * unordered pair counted twice when there are few, else an unbiased
 * estimate from random ordered pairs scaled to T(T − 1).
 */
function sampledOverlaps(
  experts: Uint16Array,
  start: number,
  end: number,
  l: number,
  M: number,
  k: number,
  scratch: ShuffleScratch,
  docId: number,
): void {
  const T = end - start;
  const W = scratch.pairsByOverlap;
  const marks = scratch.marks;
  const overlap = (t: number, u: number, stamp: number): number => {
    const bt = ((start + t) * M + l) * k;
    const bu = ((start + u) * M + l) * k;
    for (let j = 0; j < k; j++) marks[experts[bt + j]!] = stamp;
    let shared = 0;
    for (let j = 0; j < k; j++) if (marks[experts[bu + j]!] === stamp) shared++;
    return shared;
  };
  let stamp = 0;
  const draws = SHUFFLE_PAIRS_PER_PAIR * (T - 1);
  if ((T * (T - 1)) / 2 <= draws) {
    for (let t = 0; t < T; t++) {
      for (let u = t + 1; u < T; u++) W[overlap(t, u, stamp++)]! += 2;
    }
  } else {
    const rng = new Rng(((docId * 0x9e3779b1) ^ (l * 0x85ebca6b)) >>> 0);
    for (let i = 0; i < draws; i++) {
      const t = rng.int(T);
      let u = rng.int(T - 1);
      if (u >= t) u++;
      W[overlap(t, u, stamp++)]!++;
    }
    const scale = (T * (T - 1)) / draws;
    for (let j = 0; j <= k; j++) W[j]! *= scale;
  }
  marks.fill(-1);
}
