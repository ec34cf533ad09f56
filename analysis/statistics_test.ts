/**
 * Every statistic has a slot of its own in the statistics vector, and every
 * formula is checked against a trace of five tokens worked out on paper.
 *
 * E = 4 experts, k = 2, M = 2 MoE layers (model layers 1 and 3), probs stored.
 * Router distribution of every token: 0.4 to its first choice, 0.3 to its
 * second, then 0.2 and 0.1 to the two others in increasing expert order.
 *
 *   doc 0 (domain A), tokens 5 6 5      doc 1 (domain B), tokens 5 7
 *   layer 1: (0,1) (0,2) (3,2)          layer 1: (1,0) (2,3)
 *   layer 3: (1,2) (2,1) (2,3)          layer 3: (3,0) (0,3)
 */
import assert from "node:assert/strict";
import { TraceReader, TraceWriter } from "../trace/mod.ts";
import { runAnalysis } from "./run.ts";
import { BucketLayout, type Dims, DocLayout } from "./layout.ts";
import { BucketStatistics, DocStatistics } from "./statistics.ts";
import { ALL } from "./tables.ts";
import type { CsvRow } from "../common/csv.ts";

const E = 4;
const K = 2;
const M = 2;

/** [T, M, k] experts → [T, M, E] probabilities by the rule above. */
function probsFor(experts: number[][][]): Float32Array {
  const out = new Float32Array(experts.length * M * E);
  experts.forEach((layers, t) =>
    layers.forEach((chosen, l) => {
      const base = (t * M + l) * E;
      out[base + chosen[0]!] = 0.4;
      out[base + chosen[1]!] = 0.3;
      const rest = [0, 1, 2, 3].filter((e) => !chosen.includes(e));
      out[base + rest[0]!] = 0.2;
      out[base + rest[1]!] = 0.1;
    })
  );
  return out;
}

async function handTrace(dir: string, routerScores?: "sigmoid"): Promise<void> {
  const writer = await TraceWriter.open(dir, {
    model: {
      ...(routerScores ? { router_scores: routerScores } : {}),
      name: "hand",
      family: "synthetic",
      num_layers: 4,
      moe_layers: [1, 3],
      num_experts: E,
      top_k: K,
      num_shared_experts: 0,
      hidden_size: 8,
      expert_params: 10,
      dtype: "float32",
    },
    capture: {
      corpus: "hand",
      domains: ["A", "B"],
      mode: "teacher-forced",
      lookahead: 0,
      probs: true,
      seed: 0,
      tool_version: "test",
    },
  });
  const docs: [number, string, number[], number[][][]][] = [
    [0, "A", [5, 6, 5], [[[0, 1], [1, 2]], [[0, 2], [2, 1]], [[3, 2], [2, 3]]]],
    [1, "B", [5, 7], [[[1, 0], [3, 0]], [[2, 3], [0, 3]]]],
  ];
  for (const [doc, domain, tokens, experts] of docs) {
    await writer.add({
      doc,
      domain,
      tokens: Uint32Array.from(tokens),
      pieces: tokens.map((t) => `t${t}`),
      experts: Uint16Array.from(experts.flat(2)),
      weights: new Float32Array(tokens.length * M * K).fill(0.5),
      probs: probsFor(experts),
    });
  }
  await writer.close();
}

function find(rows: CsvRow[], where: CsvRow): CsvRow {
  const hit = rows.filter((r) => Object.entries(where).every(([k, v]) => r[k] === v));
  assert.equal(hit.length, 1, `one row for ${JSON.stringify(where)}, got ${hit.length}`);
  return hit[0]!;
}

function near(actual: unknown, expected: number, what: string): void {
  assert.ok(
    typeof actual === "number" && Math.abs(actual - expected) < 1e-6,
    `${what}: got ${actual}, expected ${expected}`,
  );
}

/** A Float64Array that counts the writes to each index. */
function countingWrites(size: number): { out: Float64Array; writes: Int32Array } {
  const writes = new Int32Array(size);
  const out = new Proxy(new Float64Array(size), {
    set(target, key, value) {
      if (typeof key === "string" && /^\d+$/.test(key)) writes[Number(key)]!++;
      return Reflect.set(target, key, value);
    },
  });
  return { out, writes };
}

/** Every shape the slots depend on: k = 1 (no second choice), probs or not, one layer. */
const SHAPES: Dims[] = [
  { layers: 3, experts: 6, topK: 2, probs: true },
  { layers: 2, experts: 5, topK: 1, probs: false },
  { layers: 1, experts: 8, topK: 3, probs: true },
];

Deno.test("statistics: evaluate writes every slot of the vector exactly once", () => {
  for (const dims of SHAPES) {
    const doc = new DocStatistics(new DocLayout(dims));
    const docSums = Float64Array.from({ length: doc.layout.size }, (_, i) => 1 + (i % 7));
    const docOut = countingWrites(doc.size);
    doc.evaluate(docSums, docOut.out);
    assert.deepEqual([...docOut.writes], Array(doc.size).fill(1), JSON.stringify(dims));
    const bucket = new BucketStatistics(new BucketLayout(dims));
    const bucketSums = Float64Array.from({ length: bucket.layout.size }, (_, i) => 1 + (i % 5));
    const bucketOut = countingWrites(bucket.size);
    bucket.evaluate(bucketSums, bucketOut.out);
    assert.deepEqual([...bucketOut.writes], Array(bucket.size).fill(1), JSON.stringify(dims));
  }
});

Deno.test("statistics: coactivationAt finds the slot evaluate gives each ordered pair", () => {
  const dims: Dims = { layers: 2, experts: 5, topK: 2, probs: false };
  const S = new BucketStatistics(new BucketLayout(dims));
  const B = S.layout;
  // Distinct counts, so a pair read from another pair's slot shows.
  const sums = Float64Array.from({ length: B.size }, (_, i) => 1 + i);
  const out = new Float64Array(S.size);
  S.evaluate(sums, out);
  for (let l = 0; l < 2; l++) {
    for (let i = 0; i < 5; i++) {
      for (let j = 0; j < 5; j++) {
        if (i === j) continue;
        const nij = sums[B.coact + l * B.pairCount + B.pairIndex[i * 5 + j]!]!;
        const ni = sums[B.any + l * 5 + i]!;
        assert.equal(out[S.coactivationAt(l, i, j)], nij / ni, `layer ${l}, ${i} → ${j}`);
      }
    }
  }
});

Deno.test("every statistic matches its value worked out on paper", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await handTrace(dir);
    const result = await runAnalysis(await TraceReader.open(dir), {
      bootstrap: 0,
      seed: 0,
      minTokenCount: 2,
    });
    const t = result.tables;
    const share = (layer: number, domain: string, choice: string, expert: number) =>
      find(t.expert_shares!, { layer, domain, choice, expert }).share;

    // Shares, domain A, layer 1: first choices 0 0 3 → [2/3, 0, 0, 1/3];
    // second 1 2 2 → [0, 1/3, 2/3, 0]; top-k counts [2, 1, 2, 1] of kT = 6.
    near(share(1, "A", "first", 0), 2 / 3, "first share e0");
    near(share(1, "A", "first", 3), 1 / 3, "first share e3");
    near(share(1, "A", "second", 2), 2 / 3, "second share e2");
    near(share(1, "A", "top_k", 0), 2 / 6, "top-k share e0");
    near(share(1, "A", "top_k", 1), 1 / 6, "top-k share e1");
    near(share(1, "A", "token_fraction", 2), 2 / 3, "token fraction e2");
    // All, layer 1: first choices 0 0 3 1 2 → [0.4, 0.2, 0.2, 0.2].
    near(share(1, ALL, "first", 0), 0.4, "all first share e0");
    near(share(1, ALL, "first", 2), 0.2, "all first share e2");
    assert.equal(
      find(t.expert_shares!, { layer: 1, domain: ALL, choice: "first", expert: 0 }).baseline,
      0.25,
    );
    assert.equal(
      find(t.expert_shares!, { layer: 1, domain: ALL, choice: "token_fraction", expert: 0 })
        .baseline,
      0.5,
    );

    // Repetition, A layer 1: pairs (0,1)→(0,2): same first, overlap {0};
    // (0,2)→(3,2): different first, overlap {2}. → 1/2 and 2/2.
    const rep = (layer: number, domain: string, statistic: string) =>
      find(t.repetition!, { layer, domain, statistic });
    near(rep(1, "A", "first_choice_repeat").value, 1 / 2, "A first repeat l1");
    near(rep(1, "A", "set_overlap").value, 1, "A set overlap l1");
    // A layer 3: (1,2)→(2,1) overlap 2, first differs; (2,1)→(2,3) overlap 1, first same.
    near(rep(3, "A", "first_choice_repeat").value, 1 / 2, "A first repeat l3");
    // All layer 1 adds doc 1's pair (1,0)→(2,3): overlap 0, first differs → 1/3 and 2/3.
    near(rep(1, ALL, "first_choice_repeat").value, 1 / 3, "all first repeat l1");
    near(rep(1, ALL, "set_overlap").value, 2 / 3, "all set overlap l1");
    assert.equal(rep(1, ALL, "set_overlap").n_pairs, 3);
    near(rep(1, ALL, "set_overlap").baseline as number, 1 - 1 / 6, "1 − C(2,2)/C(4,2)");

    // Overlap distribution, A layer 3: overlaps 2 and 1 → [0, 1/2, 1/2]; all layer 1: [1/3, 2/3, 0].
    const ov = (layer: number, domain: string, overlap: number) =>
      find(t.overlap_distribution!, { layer, domain, overlap }).proportion;
    near(ov(3, "A", 0), 0, "A l3 overlap 0");
    near(ov(3, "A", 1), 0.5, "A l3 overlap 1");
    near(ov(3, "A", 2), 0.5, "A l3 overlap 2");
    near(ov(1, ALL, 0), 1 / 3, "all l1 overlap 0");
    near(
      find(t.overlap_distribution!, { layer: 1, domain: ALL, overlap: 2 }).baseline as number,
      1 / 6,
      "C(2,2)C(2,0)/C(4,2)",
    );

    // CoSMoEs on doc 0 (domain A, B = 1 sequence of T = 3 tokens), layer 1: sets {0,1} {0,2}
    // {3,2}; W_t by the rule above: [.4,.3,.2,.1], [.4,.2,.3,.1], [.2,.1,.3,.4].
    // Eq. 4: H = ½ Σ_t Σ_e |[e ∈ S_t+1] − [e ∈ S_t]| = ½(2 + 2) = 2.
    // Eq. 5: H_norm = H / (B·K·(T − 1)) = 2 / (1·2·2) = 0.5 (ex_rep is the same ratio).
    // Eq. 6: L = Σ_t Σ_e |W_t+1 − W_t| = (0 + .1 + .1 + 0) + (.2 + .1 + 0 + .3) = 0.8,
    //        L_norm = L / (B·T) = 0.8/3.
    // Eq. 7: BIES = H_norm · L_norm = 0.4/3.
    // ΔUniform (mean relative deviation): shares [1/3,1/6,1/3,1/6], Σ_e |q_e − 1/4| = 4/12.
    const cos = (layer: number, domain: string, statistic: string) =>
      find(t.cosmoes!, { layer, domain, statistic }).value;
    near(cos(1, "A", "ex_rep"), 0.5, "ex_rep");
    near(cos(1, "A", "h_norm"), 0.5, "h_norm");
    near(cos(1, "A", "l_norm"), 0.8 / 3, "l_norm");
    near(cos(1, "A", "bies"), 0.4 / 3, "bies");
    near(cos(1, "A", "delta_uniform"), 1 / 3, "delta_uniform");
    // A layer 3: sets {1,2} {2,1} {2,3}: H = 0 + 1 → H_norm 1/4; W [.2,.4,.3,.1],
    // [.2,.3,.4,.1], [.2,.1,.4,.3] → L = .2 + .4 → L_norm .2; BIES .05; top-k counts
    // [0,2,3,1] → |−1/4| + |1/12| + |1/4| + |−1/12| = 2/3.
    near(cos(3, "A", "ex_rep"), 0.25, "ex_rep l3");
    near(cos(3, "A", "h_norm"), 0.25, "h_norm l3");
    near(cos(3, "A", "l_norm"), 0.2, "l_norm l3");
    near(cos(3, "A", "bies"), 0.05, "bies l3");
    near(cos(3, "A", "delta_uniform"), 2 / 3, "delta_uniform l3");
    // All, layer 1: doc 1 adds H = 2 and W [.3,.4,.2,.1] → [.2,.1,.4,.3], L = .8:
    // H_norm = 4/(2·3) = 2/3 (pairs of both sequences), L_norm = 1.6/5 (tokens of both).
    near(cos(1, ALL, "ex_rep"), 2 / 3, "all ex_rep");
    near(cos(1, ALL, "h_norm"), 2 / 3, "all h_norm");
    near(cos(1, ALL, "l_norm"), 1.6 / 5, "all l_norm");
    near(cos(1, ALL, "bies"), (2 / 3) * (1.6 / 5), "all bies");

    // Within-document shuffle baselines, A layer 1. First choices 0 0 3: of the 3! orders,
    // 003 and 300 have one repeat and 030 none → 2/3 expected repeats over 2 pairs = 1/3.
    // Sets {0,1} {0,2} {2,3}: a random pair of distinct tokens shares 1 expert with
    // probability 2/3 and none with 1/3, so the 2 consecutive pairs share ≥ 1 in 2/3 of
    // cases, and replace (2·1/3 + 1·2/3)/2 = 2/3 of their experts.
    const marginal = (statistic: string) =>
      find(t.repetition!.concat(t.cosmoes!), { layer: 1, domain: "A", statistic })
        .baseline_marginal;
    near(marginal("first_choice_repeat"), 1 / 3, "shuffled repeat");
    near(marginal("set_overlap"), 2 / 3, "shuffled overlap ≥ 1");
    near(marginal("ex_rep"), 2 / 3, "shuffled ex_rep");
    near(marginal("h_norm"), 2 / 3, "shuffled h_norm");
    const ovm = (overlap: number) =>
      find(t.overlap_distribution!, { layer: 1, domain: "A", overlap }).baseline_marginal;
    near(ovm(0), 1 / 3, "shuffled overlap 0");
    near(ovm(1), 2 / 3, "shuffled overlap 1");
    near(ovm(2), 0, "shuffled overlap 2");

    // Load balance, A layer 1: shares [1/3,1/6,1/3,1/6] → entropy (2/3)log2 3 + (1/3)log2 6;
    // max_vio (2 − 1.5)/1.5; router entropy H(.4,.3,.2,.1); top-k mass .7; margin .3 − .2.
    const load = (layer: number, domain: string, statistic: string) =>
      find(t.load_balance!, { layer, domain, statistic }).value;
    near(load(1, "A", "share_entropy"), (2 / 3) * Math.log2(3) + (1 / 3) * Math.log2(6), "entropy");
    near(load(1, "A", "max_vio"), 1 / 3, "max_vio");
    near(load(3, "A", "max_vio"), 1, "max_vio l3 (3 − 1.5)/1.5");
    const h = -[0.4, 0.3, 0.2, 0.1].reduce((s, p) => s + p * Math.log2(p), 0);
    near(load(1, ALL, "router_entropy"), h, "router entropy");
    near(load(1, ALL, "topk_mass"), 0.7, "top-k mass");
    near(load(1, ALL, "topk_margin"), 0.1, "top-k margin");

    // Co-activation, all layer 1: sets {0,1} {0,2} {3,2} {1,0} {2,3}.
    // N(0) = 3, N(0,1) = 2, N(0,2) = 1, N(0,3) = 0; N(2) = 3, N(2,3) = 2.
    const co = (expert_i: number, expert_j: number) =>
      find(t.coactivation!, { layer: 1, domain: ALL, expert_i, expert_j });
    near(co(0, 1).coactivation, 2 / 3, "N(0,1)/N(0)");
    near(co(0, 2).coactivation, 1 / 3, "N(0,2)/N(0)");
    near(co(0, 3).coactivation, 0, "N(0,3)/N(0)");
    near(co(2, 3).coactivation, 2 / 3, "N(2,3)/N(2)");
    near(co(0, 1).baseline as number, 1 / 3, "(k−1)/(E−1)");
    near(co(0, 1).lift as number, 2, "lift");
    // Popularity-adjusted: doc 0 has c = [2,1,2,1] of kT = 6, doc 1 c = [1,1,1,1] of 4;
    // Σ_d c_d(0)(k − 1)c_d(1)/(kT_d − c_d(0)) = 2·1/4 + 1·1/3 = 5/6, over N(0) = 3.
    near(co(0, 1).baseline_marginal as number, 5 / 18, "popularity-adjusted");
    near(co(0, 1).lift_marginal as number, (2 / 3) / (5 / 18), "lift over it");
    assert.equal(co(0, 1).n_ij, 2);
    assert.equal(co(0, 1).n_i, 3);

    // Flow, all, layer 1 → 3 first choices: 0→1, 0→2, 3→2 (doc 0), 1→3, 2→0 (doc 1).
    // MI = 0.2·[2 log2 2.5 + log2 1.25 + 2 log2 5] bits.
    near(
      find(t.flow_information!, { layer: 1, domain: ALL }).mutual_information,
      0.2 * (2 * Math.log2(2.5) + Math.log2(1.25) + 2 * Math.log2(5)),
      "mutual information",
    );
    near(
      find(t.layer_flow!, { layer: 1, domain: ALL, expert_from: 0, expert_to: 1 }).probability,
      0.5,
      "P(1 | 0)",
    );
    assert.equal(
      find(t.layer_flow!, { layer: 1, domain: ALL, expert_from: 3, expert_to: 2 }).count,
      1,
    );

    // Vocabulary (min count 2): token 5 in A at layer 1 goes to 0 and 3 → 1/2;
    // in all (three times: 0, 3, 1) → 1/3. Token 6 and 7 are seen once and skipped.
    const voc = (layer: number, domain: string) =>
      find(t.vocabulary_specialisation!, { layer, domain });
    near(voc(1, "A").mean_specialisation, 1 / 2, "A vocab");
    // Uniform baseline for n = 2 of E = 4: both alike with probability 1/4, so
    // E[max] = 2·1/4 + 1·3/4 = 1.25 and the share 0.625.
    near(voc(1, "A").baseline, 0.625, "exact baseline");
    assert.equal(voc(1, "A").n_token_ids, 1);
    near(voc(3, ALL).mean_specialisation, 1 / 3, "all vocab l3: 1, 2, 3");

    // JSD, layer 1: p = [1/3,1/6,1/3,1/6] (A), q = [1/4]·4 (B), m = [7,5,7,5]/24.
    const p = [1 / 3, 1 / 6, 1 / 3, 1 / 6];
    const m = [7 / 24, 5 / 24, 7 / 24, 5 / 24];
    const jsd = 0.5 * p.reduce((s, x, i) => s + x * Math.log2(x / m[i]!), 0) +
      0.5 * m.reduce((s, mi) => s + 0.25 * Math.log2(0.25 / mi), 0);
    near(jsd, 0.020721, "paper value of the JSD"); // 0.5·(0.021121 + 0.020321)
    const div = find(t.domain_divergence!, { layer: 1, domain_a: "A", domain_b: "B" });
    near(div.jsd, jsd, "jsd (the plug-in: --bootstrap 0 gives point estimates only)");
    near(div.plug_in, jsd, "plug-in jsd");
    assert.ok(Number.isNaN(div.p_value), "no tests at --bootstrap 0");
    assert.equal(div.comparison, "pair");
    // With tests: one document each, so every permutation is the split itself or its
    // mirror → p = 1; a single document has no jackknife, so no interval.
    const tested = await runAnalysis(await TraceReader.open(dir), { bootstrap: 10, seed: 0 });
    const withTest = find(tested.tables.domain_divergence!, { layer: 1, domain_a: "A" });
    assert.equal(withTest.p_value, 1);
    assert.ok(Number.isNaN(withTest.ci_low));

    // Totals.
    assert.deepEqual(result.domains, [
      { name: "A", n_docs: 1, n_tokens: 3 },
      { name: "B", n_docs: 1, n_tokens: 2 },
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("l_norm follows W = softmax(τ·logits) of CoSMoEs Eq. 6 at --router-temperature 2", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await handTrace(dir);
    const result = await runAnalysis(await TraceReader.open(dir), {
      bootstrap: 0,
      seed: 0,
      accumulate: { routerTemperature: 2 },
    });
    // softmax(2·logits) = p²/Σp². Doc 0, layer 1: [.16,.09,.04,.01]/.3, [.16,.04,.09,.01]/.3,
    // [.04,.01,.09,.16]/.3 → L = (.05 + .05)/.3 + (.12 + .03 + 0 + .15)/.3 = 4/3 over T = 3.
    const row = find(result.tables.cosmoes!, { layer: 1, domain: "A", statistic: "l_norm" });
    near(row.value, 4 / 9, "l_norm at τ = 2");
    const bies = find(result.tables.cosmoes!, { layer: 1, domain: "A", statistic: "bies" });
    near(bies.value, 0.5 * (4 / 9), "bies at τ = 2");
    assert.equal(result.settings.routerTemperature, 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a sigmoid router's scores: Eq. 6 uses the logits ln(s/(1 − s)), router statistics the normalised scores", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await handTrace(dir, "sigmoid");
    const result = await runAnalysis(await TraceReader.open(dir), { bootstrap: 0, seed: 0 });
    // Independently: softmax of the logits is the odds normalised.
    const w = (scores: number[]) => {
      const odds = scores.map((x) => Math.fround(x) / (1 - Math.fround(x)));
      const total = odds.reduce((a, b) => a + b, 0);
      return odds.map((o) => o / total);
    };
    const l1 = [w([0.4, 0.3, 0.2, 0.1]), w([0.4, 0.2, 0.3, 0.1]), w([0.2, 0.1, 0.3, 0.4])];
    let L = 0;
    for (let t = 1; t < 3; t++) {
      for (let e = 0; e < 4; e++) L += Math.abs(l1[t]![e]! - l1[t - 1]![e]!);
    }
    near(
      find(result.tables.cosmoes!, { layer: 1, domain: "A", statistic: "l_norm" }).value,
      L / 3,
      "l_norm",
    );
    // The scores sum to 1 here, so the normalised entropy is H(.4, .3, .2, .1).
    const h = -[0.4, 0.3, 0.2, 0.1].reduce((acc, p) => acc + p * Math.log2(p), 0);
    near(
      find(result.tables.load_balance!, { layer: 1, domain: ALL, statistic: "router_entropy" })
        .value,
      h,
      "entropy",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
