/**
 * Golden hit/miss counts for every policy on hand-made traces, each derived by
 * hand in the comments (cache contents after each access, most recent or
 * newest first where order matters).
 */
import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert";
import { accessCounts, type AccessTrace, accessTraceOf } from "../access_trace.ts";
import { ExpertCache, policyOptions } from "../expert_cache.ts";
import type { PolicyOptions } from "../policy.ts";
import { createPolicy, type PolicyName, traceFutureUses } from "./mod.ts";
import { Rng } from "../../common/random.ts";

const [A, B, C, D, E] = [0, 1, 2, 3, 4];

/** One layer, top-1: `sequence` is one expert per token. */
function single(sequence: number[]): AccessTrace {
  return accessTraceOf(sequence.map((e) => [[e]]), { experts: 5 });
}

function run(
  name: PolicyName,
  trace: AccessTrace,
  capacity: number,
  extra: Partial<PolicyOptions> = {},
): { hits: number; misses: number } {
  const options = {
    ...policyOptions({
      layers: trace.layers,
      experts: trace.experts,
      topK: trace.topK,
      capacity,
    }),
    future: traceFutureUses(trace),
    counts: accessCounts(trace),
    ...extra,
  };
  const cache = new ExpertCache(createPolicy(name, options), trace);
  const k = trace.topK;
  for (let t = 0; t < trace.tokens; t++) {
    for (let l = 0; l < trace.layers; l++) {
      cache.access(l, trace.chosen, (t * trace.layers + l) * k, k);
    }
  }
  const sum = (a: Float64Array) => a.reduce((x, y) => x + y, 0);
  return { hits: sum(cache.stats.hits), misses: sum(cache.stats.misses) };
}

// Positions:         0  1  2  3  4  5  6  7  8  9  10
const SEQUENCE = single([A, A, A, B, C, D, B, C, E, A, D]);

Deno.test("lru golden: capacity 3", () => {
  // 0 A miss [A] · 1,2 A hit · 3 B miss [B A] · 4 C miss [C B A]
  // 5 D miss, evict A [D C B] · 6 B hit [B D C] · 7 C hit [C B D]
  // 8 E miss, evict D [E C B] · 9 A miss, evict B [A E C] · 10 D miss, evict C
  assertEquals(run("lru", SEQUENCE, 3), { hits: 4, misses: 7 });
});

Deno.test("fifo golden: capacity 3", () => {
  // Queue oldest first. 0 A miss [A] · 1,2 hit · 3 B miss [A B] · 4 C miss [A B C]
  // 5 D miss, evict A [B C D] · 6 B hit · 7 C hit · 8 E miss, evict B [C D E]
  // 9 A miss, evict C [D E A] · 10 D hit
  assertEquals(run("fifo", SEQUENCE, 3), { hits: 5, misses: 6 });
});

Deno.test("lfu golden: capacity 3, ties to the least recent", () => {
  // (count@last) 0 A 1@0 · 1 A 2@1 · 2 A 3@2 · 3 B 1@3 · 4 C 1@4
  // 5 D: B 1@3 vs C 1@4 → evict B [A3 C1 D1] · 6 B: C 1@4 vs D 1@5 → evict C
  // 7 C: D 1@5 vs B 1@6 → evict D · 8 E: B 1@6 vs C 1@7 → evict B [A3 C1 E1]
  // 9 A hit (4) · 10 D: C 1@7 vs E 1@8 → evict C
  assertEquals(run("lfu", SEQUENCE, 3), { hits: 3, misses: 8 });
});

Deno.test("belady golden: capacity 3, farthest next use", () => {
  // Next uses: A 0→1→2→9, B 3→6, C 4→7, D 5→10, E 8.
  // 0 A, 3 B, 4 C miss [A B C] · 5 D miss: A next 9, B 6, C 7 → evict A [B C D]
  // 6 B hit · 7 C hit · 8 E miss: B never, C never, D 10 → evict B or C
  // 9 A miss: evict the other never-used one · 10 D hit.
  // 6 misses: the 5 compulsory ones and A at 9; no policy does better, since
  // at 5 every cached expert is used again before D.
  assertEquals(run("belady", SEQUENCE, 3), { hits: 5, misses: 6 });
});

Deno.test("pinned golden: capacity 3 = 2 pinned + 1 streaming slot", () => {
  // Counts: A 4, B 2, C 2, D 2, E 1 → pinned A and B (B wins the tie as the lower id).
  // 0 A miss (pinned) · 1,2 hit · 3 B miss (pinned) · 4 C miss [slot C]
  // 5 D miss [slot D] · 6 B hit · 7 C miss · 8 E miss · 9 A hit · 10 D miss
  assertEquals(run("pinned", SEQUENCE, 3), { hits: 4, misses: 7 });
});

Deno.test("swap golden: holds only the current selection (k = 1)", () => {
  // Hits only when the expert repeats: positions 1 and 2.
  assertEquals(run("swap", SEQUENCE, 3), { hits: 2, misses: 9 });
});

Deno.test("lrfu golden: the half-life moves it between LRU and LFU", () => {
  // Capacity 2, sequence A A B C A. CRF = Σ 2^(−age / H), age in tokens.
  const trace = single([A, A, B, C, A]);
  // LRU: A miss, A hit, B miss [B A], C miss evict A, A miss → 1 hit.
  assertEquals(run("lru", trace, 2), { hits: 1, misses: 4 });
  // LFU: at C, A has count 2, B 1 → evict B; A hits at 4 → 2 hits.
  assertEquals(run("lfu", trace, 2), { hits: 2, misses: 3 });
  // H = 1: at position 3, A = (1 + 2^-1)·2^-2 = 0.375, B = 2^-1 = 0.5 → evict A: 1 hit.
  assertEquals(run("lrfu", trace, 2, { halfLifeTokens: 1 }), { hits: 1, misses: 4 });
  // H = 8: A = (1 + 2^-1/8)·2^-2/8 = 1.61, B = 2^-1/8 = 0.92 → evict B: 2 hits.
  assertEquals(run("lrfu", trace, 2, { halfLifeTokens: 8 }), { hits: 2, misses: 3 });
});

Deno.test("lrfu golden: capacity 3 with the default half-life of 8 tokens", () => {
  // Values at eviction time (A's CRF 2.758 at position 2):
  // 5 D: A 2.13, B 0.84, C 0.92 → B · 6 B: A 1.95, C 0.84, D 0.92 → C
  // 7 C: A 1.79, D 0.84, B 0.92 → D · 8 E: A 1.64, B 0.84, C 0.92 → B
  // 9 A hit · 10 D: A 2.30, C 0.77, E 0.84 → C. Hits at 1, 2, 9.
  assertEquals(run("lrfu", SEQUENCE, 3), { hits: 3, misses: 8 });
});

// Top-2, one layer of 4 experts: tokens [0,1] [2,3] [0,1].
const GROUPS = accessTraceOf([[[0, 1]], [[2, 3]], [[0, 1]]], { experts: 4 });

Deno.test("the current layer's experts never evict each other", () => {
  // LRU capacity 3: t0 [1 0] · t1: 2 miss [2 1 0], 3 miss evict 0 [3 2 1]
  // t2: 0 miss must evict 2, not the guarded 1 (which LRU order would pick);
  // 1 then hits. Processing the two accesses one by one would give 0 hits.
  assertEquals(run("lru", GROUPS, 3), { hits: 1, misses: 5 });
  // FIFO: same queue (no hits before t2); at t2 the oldest, 1, is guarded, so 2 goes.
  assertEquals(run("fifo", GROUPS, 3), { hits: 1, misses: 5 });
});

Deno.test("random golden: at capacity k every policy is swap", () => {
  // Top-2, capacity 2: tokens [0,1] [1,2] [2,0] [0,1].
  // t0 miss miss · t1: 1 hit, 2 miss evicts the only unguarded (0) · t2: 2 hit, 0 miss
  // evicts 1 · t3: 0 hit, 1 miss. 3 hits, 5 misses whatever the random draws.
  const trace = accessTraceOf([[[0, 1]], [[1, 2]], [[2, 0]], [[0, 1]]], { experts: 4 });
  for (const seed of [0, 1, 2, 3]) {
    assertEquals(run("random", trace, 2, { seed }), { hits: 3, misses: 5 });
  }
  for (const name of ["lru", "fifo", "lfu", "lrfu", "belady", "swap", "pinned"] as const) {
    assertEquals(run(name, trace, 2), { hits: 3, misses: 5 }, name);
  }
});

Deno.test("random golden: evicts each candidate, reproducibly per seed", () => {
  // Capacity 2, top-1: A B C A. At C the victim is A or B; A then hits iff B went.
  const trace = single([A, B, C, A]);
  const outcomes = new Set<number>();
  for (let seed = 0; seed < 20; seed++) {
    const first = run("random", trace, 2, { seed });
    assertEquals(run("random", trace, 2, { seed }), first);
    assertEquals(first.hits + first.misses, 4);
    outcomes.add(first.hits);
  }
  assertEquals([...outcomes].sort(), [0, 1]);
});

Deno.test("a cache smaller than k cannot serve a layer", () => {
  const cache = new ExpertCache(
    createPolicy("lru", policyOptions({ layers: 1, experts: 4, topK: 2, capacity: 1 })),
    { layers: 1, experts: 4 },
  );
  assertThrows(() => cache.access(0, [0, 1], 0, 2), /cannot hold the experts layer 0 needs/);
});

Deno.test("request reports misses, slots and evictions for the engine", () => {
  const cache = new ExpertCache(
    createPolicy("lru", policyOptions({ layers: 2, experts: 4, topK: 2, capacity: 2 })),
    { layers: 2, experts: 4 },
  );
  assertEquals(cache.request(1, [3, 0]), { misses: [3, 0], slots: [0, 1], evicted: [] });
  assertEquals(cache.request(1, [0, 2]), { misses: [2], slots: [0], evicted: [3] });
  assertEquals(cache.request(0, [2, 1]), { misses: [2, 1], slots: [0, 1], evicted: [] });
  assertEquals(cache.has(1, 2) && cache.has(1, 0) && !cache.has(1, 3), true);
  assertEquals(cache.slotsUsed(1), 2);
});

Deno.test("lrfu equals a plain LRFU over a long stream, across weight rebases", () => {
  // One layer of 6 experts, top-1, capacity 3, half-life 1 token (2 positions
  // here, so the weights are rebased every 1024 accesses). The reference
  // sums 2^(−age/H) over each cached key's accesses at every eviction.
  const H = 2;
  const rng = new Rng(12);
  // Skewed picks, so that both frequency and recency matter.
  const sequence = Array.from(
    { length: 6000 },
    () => Math.min(5, Math.floor(-Math.log(1 - rng.next()) * 1.5)),
  );
  const trace = accessTraceOf(sequence.map((e) => [[e]]), { experts: 6 });
  const cache = new ExpertCache(
    createPolicy("lrfu", {
      ...policyOptions({ layers: 1, experts: 6, topK: 1, capacity: 3 }),
      accessesPerToken: H,
      halfLifeTokens: 1,
    }),
    trace,
  );
  const uses = new Map<number, number[]>();
  let referenceMisses = 0;
  sequence.forEach((key, now) => {
    const missed = cache.access(0, trace.chosen, now, 1) === 1;
    let expected = false;
    if (!uses.has(key)) {
      expected = true;
      if (uses.size === 3) {
        let victim = -1;
        let best = Infinity;
        let bestLast = Infinity;
        for (const [candidate, times] of uses) {
          const crf = times.reduce((sum, t) => sum + 2 ** (-(now - t) / H), 0);
          const last = times[times.length - 1]!;
          if (
            crf < best * (1 - 1e-12) || (Math.abs(crf - best) <= 1e-12 * best && last < bestLast)
          ) {
            [victim, best, bestLast] = [candidate, crf, last];
          }
        }
        uses.delete(victim);
      }
      uses.set(key, []);
    }
    uses.get(key)!.push(now);
    if (expected) referenceMisses++;
    assertEquals(missed, expected, `access ${now} (expert ${key})`);
  });
  assertEquals(referenceMisses > 1000, true, `${referenceMisses} misses: evictions are exercised`);
});
