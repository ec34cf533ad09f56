/**
 * The single streaming pass: reads each batch once and adds every token to
 * its document's vector (DocLayout) and its bucket's vector (BucketLayout),
 * plus first-choice counts per token id (vocabulary specialisation, with the
 * same counts after a within-document shuffle of token ids) and a few sample
 * documents for the token colouring. When a document ends, its shuffle
 * baselines (shuffle.ts) are added to its vector. Nothing here grows with the
 * number of tokens: memory is O(documents × DocLayout.size + domains ×
 * buckets × BucketLayout.size + distinct token ids × M × E).
 *
 * Documents never span batches (trace/schema.ts), and every sum is taken per
 * document in trace order, so the result does not depend on how the trace is
 * sharded.
 */
import { Rng } from "../common/random.ts";
import type { TraceBatch } from "../trace/mod.ts";
import { BucketLayout, type Dims, DocLayout } from "./layout.ts";
import { addShuffleExpectations, ShuffleScratch } from "./shuffle.ts";

export interface AccumulateOptions {
  /** Upper bound on buckets per domain (default 100, and 400 / domains). */
  maxBuckets?: number;
  /** Lower bound on buckets per domain (default 20). */
  minBuckets?: number;
  /** Cells (f64) all bucket tables may use together, before the lower bound (default 2^23). */
  bucketCells?: number;
  /** Sample documents kept per domain for the token colouring (default 2). */
  sampleDocs?: number;
  /** Tokens kept per sample document (default 120). */
  sampleTokens?: number;
  /** Indices on the trace's layer axis whose first choices are kept for samples (default first, middle, last). */
  sampleLayers?: number[];
  /**
   * Cells (u32) the per-token-id tables may use (default 2^26; each id takes
   * 2·M·E: its counts and its shuffled counts). Past it the per-domain tables
   * are merged into one corpus table; past it again, token ids not seen yet
   * are no longer counted (`vocabularyDropped`).
   */
  vocabularyCells?: number;
  /** τ of W = softmax(τ·router logits) in CoSMoEs Eq. 6 (default 1: the router's own distribution). */
  routerTemperature?: number;
  /** What `probs` holds (the manifest's model.router_scores; default softmax). */
  routerScores?: "softmax" | "sigmoid";
}

/** A document kept for the token colouring. */
export interface SampleDoc {
  doc: number;
  pieces: string[];
  /** [sampleLayers.length, tokens] first-choice expert. */
  first: Uint16Array[];
}

/** Everything the pass learnt about one domain. */
export class DomainData {
  readonly name: string;
  readonly layout: DocLayout;
  /** [docs, DocLayout.size] one row per document, in trace order. */
  docVectors: Float32Array;
  docs = 0;
  /** Document ids, in trace order. */
  docIds: number[] = [];
  /** [buckets, BucketLayout.size] integer counts (f64: exact far beyond 2^24, and fast to sum). */
  readonly bucketVectors: Float64Array;
  readonly buckets: number;
  /**
   * token id → [2, M, E] first-choice counts: of the id's own tokens, then of
   * the tokens it lands on when each document's token ids are shuffled.
   */
  readonly vocab = new Map<number, Uint32Array>();
  readonly samples: SampleDoc[] = [];

  constructor(name: string, layout: DocLayout, bucketLayout: BucketLayout, buckets: number) {
    this.name = name;
    this.layout = layout;
    this.docVectors = new Float32Array(16 * layout.size);
    this.buckets = buckets;
    this.bucketVectors = new Float64Array(buckets * bucketLayout.size);
  }

  /** Row `d` of the document vectors. */
  docVector(d: number): Float32Array {
    const n = this.layout.size;
    return this.docVectors.subarray(d * n, (d + 1) * n);
  }

  /** Buckets that hold at least one document. */
  get usedBuckets(): number {
    return Math.min(this.docs, this.buckets);
  }

  appendDoc(id: number, vector: Float64Array): void {
    const n = this.layout.size;
    if ((this.docs + 1) * n > this.docVectors.length) {
      const grown = new Float32Array(this.docVectors.length * 2);
      grown.set(this.docVectors);
      this.docVectors = grown;
    }
    this.docVectors.set(vector, this.docs * n);
    this.docIds.push(id);
    this.docs++;
  }
}

/** Streams batches into per-document and per-bucket sufficient statistics. */
export class Accumulator {
  readonly dims: Dims;
  readonly layout: DocLayout;
  readonly bucketLayout: BucketLayout;
  readonly buckets: number;
  readonly domains: DomainData[] = [];
  readonly sampleLayers: number[];
  #byName = new Map<string, DomainData>();
  #sampleDocs: number;
  #sampleTokens: number;
  /** [M, E] sequence number + 1 of the last row that chose e at layer l. */
  #marks: Float64Array;
  #seq = 0;
  #scratch: Float64Array;
  #top: Float64Array;
  #shuffle: ShuffleScratch;
  #router: RouterScratch;
  #vocabularyCells: number;
  #vocabularyUsed = 0;
  /** token id → [M, E] first-choice counts over all domains, once per-domain tables are given up. */
  corpusVocabulary: Map<number, Uint32Array> | null = null;
  /** Occurrences of token ids left uncounted because the tables were full. */
  vocabularyDropped = 0;

  constructor(dims: Dims, domainNames: readonly string[], options: AccumulateOptions = {}) {
    this.dims = dims;
    this.layout = new DocLayout(dims);
    this.bucketLayout = new BucketLayout(dims);
    // Buckets per domain: at most maxBuckets, at most ~400 over all domains (the bucket
    // bootstrap's cost grows with their number) and within bucketCells of memory, but
    // never fewer than minBuckets.
    const domains = Math.max(1, domainNames.length);
    const maxBuckets = Math.min(options.maxBuckets ?? 100, Math.floor(400 / domains));
    const minBuckets = options.minBuckets ?? 20;
    const cells = options.bucketCells ?? 2 ** 23;
    const fit = Math.floor(cells / (domains * this.bucketLayout.size));
    this.buckets = Math.max(minBuckets, Math.min(maxBuckets, fit));
    this.#sampleDocs = options.sampleDocs ?? 2;
    this.#sampleTokens = options.sampleTokens ?? 120;
    const M = dims.layers;
    this.sampleLayers = options.sampleLayers ??
      [...new Set([0, Math.floor((M - 1) / 2), M - 1])];
    this.#marks = new Float64Array(M * dims.experts);
    this.#scratch = new Float64Array(this.layout.size);
    this.#top = new Float64Array(dims.topK + 1);
    this.#shuffle = new ShuffleScratch(M, dims.experts, dims.topK);
    this.#router = {
      temperature: options.routerTemperature ?? 1,
      sigmoid: options.routerScores === "sigmoid",
      sums: new Float64Array(M),
      previousSums: new Float64Array(M),
    };
    this.#vocabularyCells = options.vocabularyCells ?? 2 ** 26;
    for (const name of domainNames) this.domain(name);
  }

  /** The domain called `name`, created on first sight. */
  domain(name: string): DomainData {
    let data = this.#byName.get(name);
    if (!data) {
      data = new DomainData(name, this.layout, this.bucketLayout, this.buckets);
      this.#byName.set(name, data);
      this.domains.push(data);
    }
    return data;
  }

  /** Bytes of the statistics held (typed arrays of all domains and tables): what grows with the trace, if anything. */
  get stateBytes(): number {
    const width = this.#vocabularyWidth * 4;
    let bytes = this.#marks.byteLength + this.#scratch.byteLength;
    for (const d of this.domains) {
      bytes += d.docVectors.byteLength + d.bucketVectors.byteLength + d.vocab.size * width;
    }
    return bytes + (this.corpusVocabulary?.size ?? 0) * width;
  }

  get tokens(): number {
    return this.domains.reduce((n, d) => {
      let t = 0;
      for (let i = 0; i < d.docs; i++) {
        t += d.docVectors[i * this.layout.size + this.layout.tokens]!;
      }
      return n + t;
    }, 0);
  }

  /** Adds one batch; documents in it are complete (they never span batches). */
  addBatch(batch: TraceBatch): void {
    const codeToDomain = batch.domainNames.map((n) => this.domain(n));
    let start = 0;
    while (start < batch.rows) {
      let end = start + 1;
      while (end < batch.rows && batch.doc[end] === batch.doc[start]) end++;
      this.#addDocument(batch, start, end, codeToDomain[batch.domainCodes[start]!]!);
      start = end;
    }
  }

  /** Cells of one token id's table: its counts and its shuffled counts, [2, M, E]. */
  get #vocabularyWidth(): number {
    return 2 * this.dims.layers * this.dims.experts;
  }

  /** The first-choice table of `token` (per domain, or for the corpus once memory is tight). */
  #vocabularyTable(domain: DomainData, token: number): Uint32Array | null {
    const width = this.#vocabularyWidth;
    const tables = this.corpusVocabulary ?? domain.vocab;
    const found = tables.get(token);
    if (found) return found;
    if (this.#vocabularyUsed + width > this.#vocabularyCells && !this.corpusVocabulary) {
      // Give up per-domain tables: merge them into one corpus table.
      const merged = new Map<number, Uint32Array>();
      for (const d of this.domains) {
        for (const [id, counts] of d.vocab) {
          const m = merged.get(id);
          if (m) { for (let i = 0; i < width; i++) m[i]! += counts[i]!; }
          else merged.set(id, counts);
        }
        d.vocab.clear();
      }
      this.corpusVocabulary = merged;
      this.#vocabularyUsed = merged.size * width;
      return this.#vocabularyTable(domain, token);
    }
    if (this.#vocabularyUsed + width > this.#vocabularyCells) {
      this.vocabularyDropped++;
      return null;
    }
    const table = new Uint32Array(width);
    tables.set(token, table);
    this.#vocabularyUsed += width;
    return table;
  }

  #addDocument(batch: TraceBatch, start: number, end: number, domain: DomainData): void {
    const { layers: M, topK: k } = this.dims;
    const L = this.layout;
    const B = this.bucketLayout;
    const v = this.#scratch;
    v.fill(0);
    const bucket = domain.bucketVectors.subarray(
      (domain.docs % this.buckets) * B.size,
      (domain.docs % this.buckets + 1) * B.size,
    );
    const experts = batch.experts;
    const probs = this.dims.probs ? batch.probs : null;
    const marks = this.#marks;
    const top = this.#top;
    const mk = M * k;
    let sample: SampleDoc | null = null;
    if (domain.samples.length < this.#sampleDocs) {
      const n = Math.min(this.#sampleTokens, end - start);
      sample = {
        doc: batch.doc[start]!,
        pieces: Array.from(
          batch.pieceCodes.subarray(start, start + n),
          (c) => batch.pieceNames[c]!,
        ),
        first: this.sampleLayers.map((l) => {
          const out = new Uint16Array(n);
          for (let t = 0; t < n; t++) out[t] = experts[(start + t) * mk + l * k]!;
          return out;
        }),
      };
      domain.samples.push(sample);
    }
    let vocab: (Uint32Array | null)[] = [];
    const perDomain = this.corpusVocabulary === null;
    const dropped = this.vocabularyDropped;
    for (let r = start; r < end; r++) vocab.push(this.#vocabularyTable(domain, batch.token[r]!));
    if (perDomain && this.corpusVocabulary !== null) {
      // The tables were merged into corpus tables midway: fetch the merged ones.
      vocab = [];
      this.vocabularyDropped = dropped;
      for (let r = start; r < end; r++) vocab.push(this.#vocabularyTable(domain, batch.token[r]!));
    }
    // The bucket's pair counts before this document: the document's own are the difference.
    const before = this.#shuffle.pairsBefore;
    if (before.length > 0) before.set(bucket.subarray(B.coact, B.coact + before.length));
    this.#seq = addExpertRows(
      experts,
      start,
      end,
      this.dims,
      L,
      B,
      v,
      bucket,
      marks,
      this.#seq,
      vocab,
      shuffledTables(vocab, batch.doc[start]!),
    );
    if (probs) {
      for (let r = start; r < end; r++) {
        addRouterRow(probs, r, r > start, this.dims, L, v, top, this.#router);
      }
    }
    const docId = batch.doc[start]!;
    addShuffleExpectations(experts, start, end, L, v, this.#shuffle, docId, bucket, B.coact);
    domain.appendDoc(docId, v);
  }
}

/**
 * The token-id tables of the document's rows after a uniformly random
 * permutation of its token ids (seeded by document id): entry r is the table
 * of the token that lands on row r, which gets row r's first choices in its
 * second half (the shuffled counts).
 */
function shuffledTables(vocab: (Uint32Array | null)[], docId: number): (Uint32Array | null)[] {
  const shuffled = vocab.slice();
  const rng = new Rng((docId * 0x2545f491 + 0x6b43a9b5) >>> 0);
  for (let i = shuffled.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const x = shuffled[i]!;
    shuffled[i] = shuffled[j]!;
    shuffled[j] = x;
  }
  return shuffled;
}

/** The router sums' state: τ, the kind of scores, and each layer's Σ_e u^τ of this row and the last. */
interface RouterScratch {
  temperature: number;
  /** Scores are sigmoids (DeepSeek-V3, GLM-4.5): logits are ln(s/(1 − s)). */
  sigmoid: boolean;
  sums: Float64Array;
  previousSums: Float64Array;
}

/** exp(logit) up to a constant: p for softmax scores, the odds s/(1 − s) for sigmoid ones. */
function logitExp(p: number, sigmoid: boolean): number {
  return sigmoid ? p / Math.max(1e-30, 1 - p) : p;
}

/**
 * Router-distribution sums of one row (all layers), over the scores
 * normalised to sum 1 (a softmax router's already do): entropy (nats), mass
 * of the k largest, the margin p_(k) − p_(k+1); and for a paired row
 * Σ_e |W_t(e) − W_t−1(e)| with W = softmax(τ·logits) = u^τ / Σ u^τ, u =
 * exp(logit) up to a constant (logitExp). `top` is scratch of k + 1.
 */
function addRouterRow(
  probs: Float32Array,
  r: number,
  paired: boolean,
  dims: Dims,
  L: DocLayout,
  v: Float64Array,
  top: Float64Array,
  router: RouterScratch,
): void {
  const { layers: M, experts: E, topK: k } = dims;
  const tau = router.temperature;
  const sigmoid = router.sigmoid;
  const plain = tau === 1 && !sigmoid;
  const sums = router.sums;
  for (let l = 0; l < M; l++) {
    const pb = (r * M + l) * E;
    // Entropy and the k+1 largest scores (top[] kept sorted descending).
    let h = 0;
    let total = 0;
    let sum = 0;
    for (let j = 0; j <= k; j++) top[j] = -1;
    for (let e = 0; e < E; e++) {
      const p = probs[pb + e]!;
      total += p;
      sum += plain ? p : Math.pow(logitExp(p, sigmoid), tau);
      if (p > 0) h -= p * Math.log(p);
      if (p > top[k]!) {
        let i = k;
        while (i > 0 && top[i - 1]! < p) {
          top[i] = top[i - 1]!;
          i--;
        }
        top[i] = p;
      }
    }
    let mass = 0;
    for (let j = 0; j < k; j++) mass += top[j]!;
    // −Σ (p/S) ln(p/S) = (−Σ p ln p)/S + ln S.
    v[L.entropy + l]! += h / total + Math.log(total);
    v[L.topMass + l]! += mass / total;
    v[L.margin + l]! += (k < E ? top[k - 1]! - top[k]! : top[k - 1]!) / total;
    sums[l] = sum;
    if (paired) {
      const qb = pb - M * E;
      const s = sum;
      const q = router.previousSums[l]!;
      let change = 0;
      if (plain) {
        for (let e = 0; e < E; e++) change += Math.abs(probs[pb + e]! / s - probs[qb + e]! / q);
      } else {
        for (let e = 0; e < E; e++) {
          const now = Math.pow(logitExp(probs[pb + e]!, sigmoid), tau) / s;
          const before = Math.pow(logitExp(probs[qb + e]!, sigmoid), tau) / q;
          change += Math.abs(now - before);
        }
      }
      v[L.change + l]! += change;
    }
  }
  router.sums = router.previousSums;
  router.previousSums = sums;
}

/**
 * The hot loop: adds rows start..end of one document to its vector `v` and
 * its bucket's vector, and each row's first choices to its token id's table
 * and (second half) to the table of the id the shuffle put on the row.
 * `marks[l·E + e]` holds (sequence number + 1) of the last row that chose e
 * at layer l, so |S_t ∩ S_t−1| is counted without
 * comparing sets; returns the last sequence number used. Offsets are read
 * into locals once, and no object is allocated per token.
 */
function addExpertRows(
  experts: Uint16Array,
  start: number,
  end: number,
  dims: Dims,
  L: DocLayout,
  B: BucketLayout,
  v: Float64Array,
  bucket: Float64Array,
  marks: Float64Array,
  seq: number,
  vocab: (Uint32Array | null)[],
  shuffled: (Uint32Array | null)[],
): number {
  const { layers: M, experts: E, topK: k } = dims;
  const mk = M * k;
  const kk = k + 1;
  const first = L.first;
  const second = L.second;
  const any = L.any;
  const sameFirst = L.sameFirst;
  const overlap = L.overlap;
  const bAny = B.any;
  const bCoact = B.coact;
  const bFlow = B.flow;
  const pairCount = B.pairCount;
  const pairIndex = B.pairIndex;
  const half = M * E;
  v[L.tokens]! += end - start;
  v[L.pairs]! += end - start - 1;
  bucket[B.tokens]! += end - start;
  for (let r = start; r < end; r++) {
    seq++;
    const paired = r > start;
    const table = vocab[r - start]!;
    const shuffledTable = shuffled[r - start]!;
    let previousFirst = -1;
    for (let l = 0; l < M; l++) {
      const base = r * mk + l * k;
      const le = l * E;
      const e0 = experts[base]!;
      v[first + le + e0]! += 1;
      if (k > 1) v[second + le + experts[base + 1]!]! += 1;
      if (table !== null) table[le + e0]! += 1;
      if (shuffledTable !== null) shuffledTable[half + le + e0]! += 1;
      let shared = 0;
      for (let j = 0; j < k; j++) {
        const e = experts[base + j]!;
        v[any + le + e]! += 1;
        bucket[bAny + le + e]! += 1;
        if (marks[le + e] === seq) shared++;
        marks[le + e] = seq + 1;
        for (let i = 0; i < j; i++) {
          bucket[bCoact + l * pairCount + pairIndex[experts[base + i]! * E + e]!]! += 1;
        }
      }
      if (paired) {
        if (experts[base - mk] === e0) v[sameFirst + l]! += 1;
        v[overlap + l * kk + shared]! += 1;
      }
      if (l > 0) bucket[bFlow + ((l - 1) * E + previousFirst) * E + e0]! += 1;
      previousFirst = e0;
    }
  }
  return seq;
}
