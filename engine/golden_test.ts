/**
 * Every fixture checkpoint against its Hugging Face golden file
 * (fixtures/README.md "Golden outputs"): top-k ids equal except where the
 * reference's k-th and (k+1)-th probabilities are within 1e-4; weights and
 * probabilities within 1e-4; logits within 1e-3 relative; 32 greedy tokens
 * identical; and the decode loop's router log equal to a teacher-forced
 * capture of the same tokens. A fixture model directory without its
 * checkpoint or golden file fails, naming it.
 */
import assert from "node:assert/strict";
import {
  checkRouting,
  checkSpecShape,
  FIXTURE_MODELS,
  fixtureModels,
  goldenF32,
  goldenI32,
  readGolden,
} from "./golden.ts";
import { loadModel } from "./model.ts";

Deno.env.set("XDG_RUNTIME_DIR", Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp");

for (const name of fixtureModels()) {
  Deno.test(`golden: ${name}`, async () => {
    const g = await readGolden(name);
    const model = await loadModel(`${FIXTURE_MODELS}${name}`, { maxBatchTokens: 512 });
    try {
      const { moe_layers, top_k: k, num_experts: E } = model.facts;
      const shape = { moeLayers: moe_layers.length, topK: k, experts: E };
      const prompts = [0, 1, 2].map((p) => Uint32Array.from(goldenI32(g, `p${p}.ids`)));
      const D = 2;
      // All three prompts in one batched call: packing must not mix sequences.
      const logs = await model.route(prompts, { probs: true, lookahead: D });
      const total = { pairs: 0, nearTies: 0, maxWeightError: 0, maxProbError: 0, maxLogitError: 0 };
      for (let p = 0; p < 3; p++) {
        const log = logs[p]!;
        const a = checkRouting(g, p, { ...log, probs: log.probs! }, shape);
        total.pairs += a.pairs;
        total.nearTies += a.nearTies;
        total.maxWeightError = Math.max(total.maxWeightError, a.maxWeightError);
        total.maxProbError = Math.max(total.maxProbError, a.maxProbError);
        // spec: 65535 exactly where layer l+d has no MoE block, else k distinct experts.
        checkSpecShape(log.spec!, model.facts, D);
        // final logits
        const ref = goldenF32(g, `p${p}.logits`);
        const got = await model.logits(prompts[p]!);
        assert.equal(got.length, ref.length);
        for (let i = 0; i < ref.length; i++) {
          total.maxLogitError = Math.max(total.maxLogitError, Math.abs(got[i]! - ref[i]!));
          const tol = 1e-3 * Math.max(1, Math.abs(ref[i]!));
          if (!(Math.abs(got[i]! - ref[i]!) <= tol)) {
            assert.fail(`logit ${i} of prompt ${p}: ${got[i]} vs ${ref[i]}`);
          }
        }
        // greedy generation with the decode loop on the GPU
        const T = prompts[p]!.length;
        const greedy = goldenI32(g, `p${p}.greedy`);
        const gen = await model.generate(prompts[p]!, {
          maxNewTokens: greedy.length,
          temperature: 0,
          seed: 0,
          probs: true,
          lookahead: D,
        });
        assert.equal(gen.promptLength, T);
        assert.deepEqual(Array.from(gen.tokens.subarray(T)), Array.from(greedy));
        // teacher-forced capture of the same tokens gives the same router log
        const [forced] = await model.route([gen.tokens], { probs: true, lookahead: D });
        assert.deepEqual(Array.from(gen.log.experts), Array.from(forced!.experts));
        assert.deepEqual(Array.from(gen.log.spec!), Array.from(forced!.spec!));
        for (let i = 0; i < forced!.weights.length; i++) {
          assert.ok(Math.abs(gen.log.weights[i]! - forced!.weights[i]!) <= 1e-5);
        }
      }
      console.log(
        `${name}: top-k equal on ${
          total.pairs - total.nearTies
        }/${total.pairs} (token, layer) pairs ` +
          `(${total.nearTies} near-ties skipped); max |weight error| ${
            total.maxWeightError.toExponential(1)
          }, |prob error| ${total.maxProbError.toExponential(1)}, |logit error| ${
            total.maxLogitError.toExponential(1)
          }; 3 × 32 greedy tokens identical; decode logs equal teacher-forced`,
      );
    } finally {
      model.destroy();
    }
  });
}
