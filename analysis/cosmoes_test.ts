/**
 * CoSMoEs Eq. 4–7 recomputed from a trace's rows by a second implementation
 * written here (sets instead of the pass's marks, W as an explicit softmax of
 * τ·ln p instead of p^τ/Σp^τ, sums per sequence as the paper writes them),
 * against the analysis: h_norm, l_norm and bies per layer and domain.
 * `cosmoesReference` also checks a real capture (e.g. tiny-moe with --probs).
 */
import assert from "node:assert/strict";
import { writeSyntheticTrace } from "../trace/synthetic.ts";
import { TraceReader } from "../trace/mod.ts";
import { runAnalysis } from "./run.ts";

/** Per domain name (and "all"), per layer: H_norm, L_norm and BIES by Eq. 4–7. */
export async function cosmoesReference(
  dir: string,
  tau = 1,
): Promise<Map<string, { hNorm: number[]; lNorm: number[]; bies: number[] }>> {
  const reader = await TraceReader.open(dir);
  const { layers: M, experts: E, topK: K } = reader.shape;
  const sums = new Map<string, { H: number[]; L: number[]; pairs: number; tokens: number }>();
  const group = (name: string) => {
    let g = sums.get(name);
    if (!g) {
      g = { H: new Array(M).fill(0), L: new Array(M).fill(0), pairs: 0, tokens: 0 };
      sums.set(name, g);
    }
    return g;
  };
  const softmax = (probs: Float32Array, at: number) => {
    const logits = Array.from(probs.subarray(at, at + E), (p) => tau * Math.log(p));
    const max = Math.max(...logits);
    const exps = logits.map((x) => Math.exp(x - max));
    const total = exps.reduce((a, b) => a + b, 0);
    return exps.map((x) => x / total);
  };
  for await (const batch of reader.batches()) {
    let start = 0;
    while (start < batch.rows) {
      let end = start;
      while (end < batch.rows && batch.doc[end] === batch.doc[start]) end++;
      const T = end - start;
      const groups = [group(batch.domainNames[batch.domainCodes[start]!]!), group("all")];
      for (const g of groups) {
        g.pairs += T - 1;
        g.tokens += T;
      }
      for (let l = 0; l < M; l++) {
        for (let t = start; t + 1 < end; t++) {
          const now = new Set(batch.experts.subarray((t * M + l) * K, (t * M + l + 1) * K));
          const next = new Set(
            batch.experts.subarray(((t + 1) * M + l) * K, ((t + 1) * M + l + 1) * K),
          );
          // Eq. 4: ½ Σ_e |[e ∈ S_t+1] − [e ∈ S_t]|.
          let h = 0;
          for (let e = 0; e < E; e++) h += Math.abs(Number(next.has(e)) - Number(now.has(e))) / 2;
          // Eq. 6: Σ_e |W_t+1,e − W_t,e|, W = softmax(τ·logits), logits = ln p + const.
          const w0 = softmax(batch.probs!, (t * M + l) * E);
          const w1 = softmax(batch.probs!, ((t + 1) * M + l) * E);
          let change = 0;
          for (let e = 0; e < E; e++) change += Math.abs(w1[e]! - w0[e]!);
          for (const g of groups) {
            g.H[l]! += h;
            g.L[l]! += change;
          }
        }
      }
      start = end;
    }
  }
  const out = new Map<string, { hNorm: number[]; lNorm: number[]; bies: number[] }>();
  for (const [name, g] of sums) {
    // Eq. 5: H/(B·K·(T − 1)) with B·(T − 1) the pairs; Eq. 6: L/(B·T), B·T the tokens; Eq. 7.
    const hNorm = g.H.map((h) => h / (K * g.pairs));
    const lNorm = g.L.map((x) => x / g.tokens);
    out.set(name, { hNorm, lNorm, bies: hNorm.map((h, l) => h * lNorm[l]!) });
  }
  return out;
}

/** Compares the analysis's cosmoes.csv rows of the trace in `dir` with the reference. */
export async function checkCosmoes(dir: string, tau = 1): Promise<number> {
  const reference = await cosmoesReference(dir, tau);
  const result = await runAnalysis(await TraceReader.open(dir), {
    bootstrap: 0,
    seed: 0,
    accumulate: { routerTemperature: tau },
  });
  const moe = result.manifest.model.moe_layers;
  let checked = 0;
  for (const row of result.tables.cosmoes!) {
    const expected = reference.get(row.domain as string)!;
    const l = moe.indexOf(row.layer as number);
    const want = row.statistic === "h_norm"
      ? expected.hNorm[l]
      : row.statistic === "l_norm"
      ? expected.lNorm[l]
      : row.statistic === "bies"
      ? expected.bies[l]
      : undefined;
    if (want === undefined) continue;
    assert.ok(
      Math.abs((row.value as number) - want) < 1e-6,
      `${row.statistic} ${row.domain} layer ${row.layer}: ${row.value} vs Eq. ${want}`,
    );
    checked++;
  }
  return checked;
}

Deno.test("CoSMoEs Eq. 4–7 recomputed from the trace's probs match h_norm, l_norm and bies", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-cosmoes-" });
  try {
    await writeSyntheticTrace(dir, {
      numExperts: 8,
      topK: 2,
      numLayers: 3,
      domains: [{ name: "A", docs: 4 }, { name: "B", docs: 3 }],
      tokensPerDoc: 40,
      stickiness: 0.3,
      probs: true,
      seed: 4,
    });
    // Three statistics × 3 layers × (2 domains + all).
    assert.equal(await checkCosmoes(dir), 27);
    assert.equal(await checkCosmoes(dir, 0.5), 27);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
