/**
 * Offloaded decoding (offload.ts) on a random tiny-moe-shaped checkpoint,
 * both kernel paths: the tokens and router logs equal `generate`'s, and the
 * uploads equal the simulator's replay (cache/replay.ts) of the same routing
 * with the same policy and capacity: demand uploads = misses, prefetch
 * uploads = prefetch_issued, summed over prompt (phase 0) and generated
 * (phase 1) rows of every document, for LRU at k, k + 2 and E, with and
 * without speculative prefetch.
 */
import assert from "node:assert/strict";
import { loadModel } from "./model.ts";
import { createOffloader } from "./offload.ts";
import { writeRandomMixtral } from "./random_checkpoint.ts";
import type { AccessTrace } from "../cache/access_trace.ts";
import { replay } from "../cache/replay.ts";
import { createPolicy } from "../cache/policies/mod.ts";
import { policyOptions } from "../cache/expert_cache.ts";
import { SpeculativePrefetcher } from "../cache/prefetch/speculative.ts";

Deno.env.set("XDG_RUNTIME_DIR", Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp");

function sum(a: Float64Array): number {
  return a.reduce((x, y) => x + y, 0);
}

for (const textures of [true, false]) {
  Deno.test(`offloaded generate equals generate; uploads equal simulated misses (textures ${textures})`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "moetrace-offload-test-" });
    try {
      // hidden 128, FFN 192: the texture path when asked; 3 MoE layers of 8 experts, top-2
      await writeRandomMixtral(dir, {
        hidden: 128,
        ffn: 192,
        layers: 3,
        heads: 4,
        kvHeads: 2,
        vocab: 512,
      });
      const model = await loadModel(dir, { maxBatchTokens: 128, textures, keepHostExperts: true });
      try {
        const prompts = [[5, 17, 300, 42], [9, 200, 11]].map((p) => Uint32Array.from(p));
        const options = { maxNewTokens: 20, temperature: 0, seed: 3, probs: false, lookahead: 0 };
        const base = [];
        for (const p of prompts) base.push(await model.generate(p, options));
        const E = 8, k = 2, M = 3;
        // every capacity on the texture path; the storage path (same host code) at k + 2 only
        for (const capacity of textures ? [k, k + 2, E] : [k + 2]) {
          for (const prefetch of ["none", "speculative"] as const) {
            const off = createOffloader(model, { policy: "lru", capacity, prefetch });
            const chosen: number[] = [], spec: number[] = [];
            let misses = 0, prefetched = 0;
            try {
              for (let i = 0; i < prompts.length; i++) {
                const r = await off.generate(prompts[i]!, options);
                assert.deepEqual(r.tokens, base[i]!.tokens, `tokens, capacity ${capacity}`);
                assert.deepEqual(r.log.experts, base[i]!.log.experts);
                assert.deepEqual(r.log.weights, base[i]!.log.weights);
                assert.equal(r.measures.length, r.tokens.length);
                for (const m of r.measures) {
                  misses += m.misses;
                  prefetched += m.prefetched;
                  assert.equal(Number.isNaN(m.ms), m.phase === 0);
                }
                chosen.push(...r.log.experts);
                if (r.log.spec) spec.push(...r.log.spec);
              }
            } finally {
              off.destroy();
            }
            const T = chosen.length / (M * k);
            const trace: AccessTrace = {
              tokens: T,
              layers: M,
              experts: E,
              topK: k,
              chosen: Uint16Array.from(chosen),
              lookahead: prefetch === "speculative" ? 1 : 0,
              spec: prefetch === "speculative" ? Uint16Array.from(spec) : null,
              doc: new Uint32Array(T),
            };
            const sim = replay(trace, {
              policy: createPolicy(
                "lru",
                policyOptions({ layers: M, experts: E, topK: k, capacity, seed: 0 }),
              ),
              budget: "per-layer",
              prefetcher: prefetch === "speculative" ? new SpeculativePrefetcher(trace, 1) : null,
              costs: [],
            });
            const label = `capacity ${capacity}, prefetch ${prefetch}`;
            assert.equal(misses, sum(sim.stats.misses), `misses, ${label}`);
            assert.equal(prefetched, sum(sim.stats.prefetchIssued), `prefetches, ${label}`);
            if (capacity === E) assert.ok(misses + prefetched <= M * E, label);
          }
        }
      } finally {
        model.destroy();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}
