/**
 * The coverage study: traces routed uniformly at random (the null), analysed,
 * and every interval checked against the statistic's true value under the
 * null, worked out on paper:
 *
 * - expert shares: 1/E (first, second, top_k), k/E (token_fraction);
 * - first_choice_repeat: 1/E (the next token's first choice is independent);
 * - overlap of consecutive sets: hypergeometric, P(j) = C(k,j)C(E−k,k−j)/C(E,k);
 *   set_overlap = 1 − P(0);
 * - h_norm = ex_rep = E[k − |S_t ∩ S_t−1|]/k = 1 − k/E;
 * - ΔUniform, MaxVio: 0 (every share is exactly 1/E);
 * - share entropy: log2 E;
 * - co-activation N(i,j)/N(i): (k − 1)/(E − 1);
 * - mutual information between layers, Jensen–Shannon divergence between
 *   domains (pairs and one against the rest): 0;
 * - router statistics, when the trace has probs: each token-layer's W is a
 *   uniformly random permutation of one of two fixed vectors a, b (chosen with
 *   probability 1/2; the chosen experts get the largest entries, in order), so
 *   E Σ_e |W_t(e) − W_t−1(e)| = (1/E) · ¼ Σ_{x,y ∈ {a,b}} Σ_{i,j} |x_i − y_j|
 *   and l_norm = that · P/T (Eq. 6 divides by tokens, not pairs); bies =
 *   (1 − k/E) · l_norm; router entropy, top-k mass and margin are the means
 *   of the two vectors' values;
 * - locality (value − within-document shuffle baseline): 0, so its p-values
 *   are uniform and about 5% fall below 0.05, as for the uniformity test, the
 *   mutual information test and the divergence permutation test.
 *
 * A summary row's truth is the mean of its per-layer truths.
 */
import type { CsvRow } from "../common/csv.ts";
import { Rng } from "../common/random.ts";
import { TraceWriter } from "../trace/mod.ts";
import { overlapProbability } from "./baselines.ts";
import type { AnalysisResult } from "./run.ts";

/** A shape of null trace. */
export interface NullShape {
  name: string;
  experts: number;
  topK: number;
  layers: number;
  domains: number;
  docsPerDomain: number;
  /** Tokens per document: fixed, or drawn uniformly from [min, max]. */
  tokens: number | { min: number; max: number };
  /** Store router distributions (the two-vector construction above). */
  probs: boolean;
}

/** The two router distributions of the null traces with probs: sorted, largest first, as float32. */
export function nullRouterVectors(E: number): [Float32Array, Float32Array] {
  const make = (rate: number) => {
    const raw = Array.from({ length: E }, (_, i) => Math.exp(-rate * i));
    const sum = raw.reduce((a, b) => a + b, 0);
    return Float32Array.from(raw, (x) => x / sum);
  };
  return [make(0.4), make(1.1)];
}

/** Writes one null trace of `shape` to `dir`. */
export async function writeNullTrace(dir: string, shape: NullShape, seed: number): Promise<void> {
  const { experts: E, topK: k, layers: M } = shape;
  const names = Array.from({ length: shape.domains }, (_, i) => `D${i}`);
  const writer = await TraceWriter.open(dir, {
    model: {
      name: `null-${shape.name}`,
      family: "synthetic",
      num_layers: M,
      moe_layers: Array.from({ length: M }, (_, i) => i),
      num_experts: E,
      top_k: k,
      num_shared_experts: 0,
      hidden_size: 8,
      expert_params: 10,
      dtype: "float32",
    },
    capture: {
      corpus: "null",
      domains: names,
      mode: "teacher-forced",
      lookahead: 0,
      probs: shape.probs,
      seed,
      tool_version: "coverage",
    },
  });
  const rng = new Rng(seed);
  const vectors = nullRouterVectors(E);
  const order = Uint16Array.from({ length: E }, (_, i) => i);
  let id = 0;
  for (let d = 0; d < shape.docsPerDomain; d++) {
    for (const domain of names) {
      const T = typeof shape.tokens === "number"
        ? shape.tokens
        : shape.tokens.min + rng.int(shape.tokens.max - shape.tokens.min + 1);
      const experts = new Uint16Array(T * M * k);
      const probs = shape.probs ? new Float32Array(T * M * E) : undefined;
      for (let r = 0; r < T * M; r++) {
        // A uniformly random permutation of the experts: its first k are the top-k in order.
        for (let j = E - 1; j > 0; j--) {
          const pick = rng.int(j + 1);
          const x = order[j]!;
          order[j] = order[pick]!;
          order[pick] = x;
        }
        for (let j = 0; j < k; j++) experts[r * k + j] = order[j]!;
        if (probs) {
          const v = vectors[rng.int(2)]!;
          for (let j = 0; j < E; j++) probs[r * E + order[j]!] = v[j]!;
        }
      }
      const tokens = Uint32Array.from({ length: T }, () => rng.int(500));
      await writer.add({
        doc: id++,
        domain,
        tokens,
        pieces: Array.from(tokens, (x) => `t${x}`),
        experts,
        weights: new Float32Array(T * M * k).fill(1 / k),
        ...(probs ? { probs } : {}),
      });
    }
  }
  await writer.close();
}

/** Per-token router facts of the two-vector construction, in float64 from the float32 values. */
function routerTruth(E: number, k: number): {
  change: number;
  entropy: number;
  mass: number;
  margin: number;
} {
  const [a, b] = nullRouterVectors(E).map((v) => {
    const sum = v.reduce((s, x) => s + x, 0);
    return { raw: Array.from(v), normal: Array.from(v, (x) => x / sum) };
  });
  let change = 0;
  for (const x of [a!, b!]) {
    for (const y of [a!, b!]) {
      for (const xi of x.normal) for (const yj of y.normal) change += Math.abs(xi - yj) / 4;
    }
  }
  const mean = (f: (v: number[]) => number) => (f(a!.raw) + f(b!.raw)) / 2;
  return {
    change: change / E,
    entropy: mean((v) => -v.reduce((s, p) => s + p * Math.log2(p), 0)),
    mass: mean((v) => v.slice(0, k).reduce((s, p) => s + p, 0)),
    margin: mean((v) => v[k - 1]! - (k < E ? v[k]! : 0)),
  };
}

/** The null value of a per-layer statistic in a row with `pairs` pairs and `tokens` tokens. */
export function nullLayerValue(
  statistic: string,
  shape: NullShape,
  pairs: number,
  tokens: number,
): number {
  const { experts: E, topK: k } = shape;
  const router = shape.probs ? routerTruth(E, k) : null;
  switch (statistic) {
    case "first_choice_repeat":
      return 1 / E;
    case "set_overlap":
      return 1 - overlapProbability(E, k, 0);
    case "h_norm":
    case "ex_rep":
      return 1 - k / E;
    case "delta_uniform":
    case "max_vio":
      return 0;
    case "share_entropy":
      return Math.log2(E);
    case "l_norm":
      return router ? (router.change * pairs) / tokens : NaN;
    case "bies":
      return router ? (1 - k / E) * (router.change * pairs) / tokens : NaN;
    case "router_entropy":
      return router?.entropy ?? NaN;
    case "topk_mass":
      return router?.mass ?? NaN;
    case "topk_margin":
      return router?.margin ?? NaN;
  }
  throw new Error(`No null value for ${statistic}.`);
}

/** Tallies of one family of cells. */
export interface Tally {
  cells: number;
  covered: number;
  /** Cells whose point estimate lies outside its own interval. */
  outside: number;
  /** Cells with no interval (counted neither way). */
  missing: number;
}

/** Tallies of tests at the null: how many p-values fell below 0.05. */
export interface TestTally {
  tests: number;
  rejected: number;
}

export interface CoverageTallies {
  intervals: Map<string, Tally>;
  tests: Map<string, TestTally>;
}

export function emptyTallies(): CoverageTallies {
  return { intervals: new Map(), tests: new Map() };
}

function tally(
  t: CoverageTallies,
  family: string,
  value: unknown,
  lo: unknown,
  hi: unknown,
  truth: number,
): void {
  const entry = t.intervals.get(family) ?? { cells: 0, covered: 0, outside: 0, missing: 0 };
  t.intervals.set(family, entry);
  const v = value as number;
  const low = lo as number;
  const high = hi as number;
  if (!Number.isFinite(low) || !Number.isFinite(high) || !Number.isFinite(v)) {
    entry.missing++;
    return;
  }
  entry.cells++;
  const slack = 1e-12 * Math.max(1, Math.abs(v), Math.abs(truth));
  if (low - slack <= truth && truth <= high + slack) entry.covered++;
  if (v < low - slack || v > high + slack) entry.outside++;
}

function test(t: CoverageTallies, family: string, p: unknown): void {
  if (!Number.isFinite(p as number)) return;
  const entry = t.tests.get(family) ?? { tests: 0, rejected: 0 };
  t.tests.set(family, entry);
  entry.tests++;
  if ((p as number) < 0.05) entry.rejected++;
}

/** Adds every interval and test of one analysed null trace to the tallies. */
export function tallyNullTrace(
  t: CoverageTallies,
  result: AnalysisResult,
  shape: NullShape,
): void {
  const { experts: E, topK: k } = shape;
  const tables = result.tables;
  const share = (r: CsvRow) => (r.choice === "token_fraction" ? k / E : 1 / E);
  for (const r of tables.expert_shares!) {
    tally(t, "expert_shares", r.share, r.ci_low, r.ci_high, share(r));
  }
  for (const name of ["repetition", "cosmoes", "load_balance"]) {
    for (const r of tables[name]!) {
      const truth = nullLayerValue(
        r.statistic as string,
        shape,
        r.n_pairs as number,
        r.n_tokens as number,
      );
      tally(t, r.statistic as string, r.value, r.ci_low, r.ci_high, truth);
    }
  }
  for (const r of tables.repetition!) test(t, `locality: ${r.statistic}`, r.p_value);
  for (const r of tables.cosmoes!) {
    if (r.statistic === "delta_uniform") test(t, "uniformity", r.p_value);
  }
  for (const r of tables.overlap_distribution!) {
    tally(
      t,
      "overlap_distribution",
      r.proportion,
      r.ci_low,
      r.ci_high,
      overlapProbability(E, k, r.overlap as number),
    );
  }
  for (const r of tables.coactivation!) {
    tally(t, "coactivation", r.coactivation, r.ci_low, r.ci_high, (k - 1) / (E - 1));
  }
  for (const r of tables.flow_information!) {
    tally(t, "mutual_information", r.mutual_information, r.ci_low, r.ci_high, 0);
    test(t, "mutual_information", r.p_value);
  }
  for (const r of tables.domain_divergence!) {
    tally(t, `jsd ${r.comparison}`, r.jsd, r.ci_low, r.ci_high, 0);
    test(t, `jsd ${r.comparison}`, r.p_value);
  }
  const pairsOf = new Map<string, { pairs: number; tokens: number }>();
  for (const r of tables.repetition!) {
    pairsOf.set(r.domain as string, { pairs: r.n_pairs as number, tokens: r.n_tokens as number });
  }
  for (const r of tables.summary!) {
    if (Number.isNaN(r.value)) continue;
    const facts = pairsOf.get(r.domain as string)!;
    const truth = nullLayerValue(r.statistic as string, shape, facts.pairs, facts.tokens);
    tally(t, `summary ${r.statistic}`, r.value, r.ci_low, r.ci_high, truth);
  }
}
