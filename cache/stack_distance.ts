/**
 * LRU miss-ratio curves for every capacity from one pass (Mattson et al.
 * 1970): LRU is a stack policy, so an access hits in a cache of capacity c iff
 * its stack distance (1 + the number of distinct keys of its partition used
 * since its previous use) is at most c.
 *
 * With the expert cache's rule that a layer's k experts never evict each
 * other, the k accesses of one router decision all take their distance from
 * the stack as it was before the decision, and then move to the top in order
 * (first choice first, so the last one ends on top). `expert_cache.ts` with
 * LRU gives the same cache contents at every capacity ≥ k; the tests check
 * the equality.
 *
 * A layer's partition (a handful of experts) is scanned directly: the
 * distance is 1 + the number of its keys used since the previous use. Large
 * partitions (a global budget) count with a Fenwick tree over the
 * partition's own clock instead; when that clock runs out of room the live
 * marks are renumbered in order.
 */
import type { AccessTrace } from "./access_trace.ts";
import type { Budget } from "./expert_cache.ts";
import type { StepCosts } from "./costs.ts";
import { OracleShadow } from "./oracle_shadow.ts";
import type { TimingModel } from "./timing.ts";

export interface StackDistances {
  /** Keys per partition: the largest finite distance. */
  maxDistance: number;
  /** [M × (maxDistance + 1)]: count of accesses of layer l at distance d (index 0 unused). */
  histogram: Float64Array;
  /** [M] first accesses (infinite distance: a miss at every capacity). */
  cold: Float64Array;
  /** [M] accesses per layer. */
  accesses: Float64Array;
}

/**
 * Oracle-prefetch timings for LRU at some capacities (per-layer budget only),
 * computed in the same pass from each step's misses (see OracleShadow).
 */
export interface StackOracle {
  capacities: number[];
  /** One list of costs per capacity. */
  costs: StepCosts[][];
}

/** Partitions up to this many keys are scanned rather than counted with a tree. */
const SCAN_UP_TO = 32;

export function lruStackDistances(
  trace: AccessTrace,
  budget: Budget,
  oracle?: StackOracle,
  options: {
    /** Force the Fenwick tree (tests compare both ways). */
    tree?: boolean;
    /** Tokens [from, to) only, from an empty stack (default the whole trace): a chunk of stack_parallel.ts. */
    from?: number;
    to?: number;
    /** Record each key's first access (`firsts`) and the final recency (`last`) for merging chunks. */
    firsts?: boolean;
  } = {},
): StackDistances & { oracleTimings: TimingModel[][]; chunk?: StackChunk } {
  const { layers: M, experts: E, topK: k, chosen } = trace;
  const from = options.from ?? 0;
  const T = options.to ?? trace.tokens;
  const record = options.firsts === true;
  // [first accesses] key, and how many distinct keys of its partition came before its step.
  const firstKey: number[] = [];
  const firstBefore: number[] = [];
  const keys = M * E;
  const P = budget === "global" ? keys : E;
  const partitions = keys / P;
  const W = Math.max(4 * P, 64, 4 * k);
  const tree = new Int32Array(partitions * (W + 1));
  const clock = new Int32Array(partitions);
  const marked = new Int32Array(partitions);
  const last = new Int32Array(keys).fill(-1);
  const width = P + 1;
  const histogram = new Float64Array(M * width);
  const cold = new Float64Array(M);
  const accesses = new Float64Array(M);
  const depths = new Int32Array(k);
  const scan = P <= SCAN_UP_TO && options.tree !== true;
  // With a scan, `last` holds each partition's clock, which never wraps.
  const clockLimit = scan ? 0x7fffffff : W;
  if (oracle && oracle.capacities.length > 0 && budget !== "per-layer") {
    throw new RangeError("oracle timings from stack distances need a per-layer budget.");
  }
  const shadows = (oracle?.capacities ?? []).map((_, i) =>
    new OracleShadow(oracle!.costs[i]!, { layers: M, topK: k })
  );
  const shadowCapacities = oracle?.capacities ?? [];

  const add = (p: number, i: number, v: number) => {
    const base = p * (W + 1);
    for (let x = i + 1; x <= W; x += x & -x) tree[base + x]! += v;
  };
  // Marks at times ≤ i.
  const prefix = (p: number, i: number) => {
    const base = p * (W + 1);
    let s = 0;
    for (let x = i + 1; x > 0; x -= x & -x) s += tree[base + x]!;
    return s;
  };
  // [partitions × W] the key used at each time of the partition's clock (tree mode).
  const keyAt = scan ? new Int32Array(0) : new Int32Array(partitions * W);
  // Renumbers the live marks 0..n−1 in time order and rebuilds the tree in
  // O(W): no sort and no log factor (it runs every W − P accesses; the sort
  // and per-mark adds it replaces took a third of a global-budget pass).
  const compact = (p: number) => {
    const times = p * W;
    let n = 0;
    for (let time = 0; time < clock[p]!; time++) {
      const key = keyAt[times + time]!;
      if (last[key] !== time) continue;
      keyAt[times + n] = key;
      last[key] = n++;
    }
    const base = p * (W + 1);
    tree.fill(0, base, base + W + 1);
    for (let x = 1; x <= n; x++) tree[base + x] = 1;
    for (let x = 1; x <= W; x++) {
      const parent = x + (x & -x);
      if (parent <= W) tree[base + parent]! += tree[base + x]!;
    }
    clock[p] = n;
  };

  for (let t = from; t < T; t++) {
    for (let l = 0; l < M; l++) {
      const offset = (t * M + l) * k;
      const base = l * E;
      const p = (base / P) | 0;
      if (clock[p]! + k > clockLimit) compact(p);
      for (let j = 0; j < k; j++) {
        const key = base + chosen[offset + j]!;
        const previous = last[key]!;
        if (previous < 0) {
          depths[j] = 0;
          if (record) {
            firstKey.push(key);
            firstBefore.push(marked[p]!);
          }
        } else if (scan) {
          // Keys used after `previous`, counted without a branch (the sign
          // bit of previous − last): which keys qualify is unpredictable.
          let since = 0;
          for (let x = p * P; x < (p + 1) * P; x++) since += (previous - last[x]!) >>> 31;
          depths[j] = 1 + since;
        } else depths[j] = 1 + marked[p]! - prefix(p, previous);
      }
      for (let j = 0; j < k; j++) {
        const key = base + chosen[offset + j]!;
        const now = clock[p]!++;
        const previous = last[key]!;
        if (previous < 0) marked[p]!++;
        if (!scan) {
          if (previous >= 0) add(p, previous, -1);
          add(p, now, 1);
          keyAt[p * W + now] = key;
        }
        last[key] = now;
        const d = depths[j]!;
        if (d === 0) cold[l]!++;
        else histogram[l * width + d]!++;
      }
      accesses[l]! += k;
      for (let s = 0; s < shadows.length; s++) {
        const c = shadowCapacities[s]!;
        let n = 0;
        for (let j = 0; j < k; j++) {
          const d = depths[j]!;
          if (d === 0 || d > c) n++;
        }
        shadows[s]!.push(n);
      }
    }
  }
  for (const shadow of shadows) shadow.finish();
  return {
    maxDistance: P,
    histogram,
    cold,
    accesses,
    oracleTimings: shadows.map((shadow) => shadow.timings),
    ...(record
      ? {
        chunk: {
          firstKey: Int32Array.from(firstKey),
          firstBefore: Int32Array.from(firstBefore),
          last,
        },
      }
      : {}),
  };
}

/**
 * What merging a chunk's pass needs besides its histogram (stack_parallel.ts):
 * its accesses that were first uses within the chunk, counted there as cold.
 */
export interface StackChunk {
  /** Keys in order of their first access in the chunk. */
  firstKey: Int32Array;
  /** For each, the distinct keys of its partition accessed in the chunk before its step. */
  firstBefore: Int32Array;
  /** [keys] each key's last access on the chunk's clock (order within a partition), −1 if none. */
  last: Int32Array;
}

/** Hits of layer l's accesses in an LRU cache of capacity c (per partition). */
export function lruHits(sd: StackDistances, layer: number, capacity: number): number {
  const width = sd.maxDistance + 1;
  let hits = 0;
  for (let d = 1; d <= Math.min(capacity, sd.maxDistance); d++) {
    hits += sd.histogram[layer * width + d]!;
  }
  return hits;
}
