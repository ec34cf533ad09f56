/**
 * Every fixture checkpoint against its Hugging Face golden file
 * (fixtures/README.md "Golden outputs"): top-k ids equal except where the
 * reference's k-th and (k+1)-th probabilities are within 1e-4; weights and
 * probabilities within 1e-4; logits within 1e-3 relative; 32 greedy tokens
 * identical; and the decode loop's router log equal to a teacher-forced
 * capture of the same tokens. Directories without a golden file (tiny-moe
 * while it trains) are skipped with a message, and included once it exists.
 */
import assert from "node:assert/strict";
import { loadModel } from "./model.ts";
import type { RouterLog } from "./router_log.ts";
import { readAll } from "./safetensors.ts";

Deno.env.set("XDG_RUNTIME_DIR", Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp");
const MODELS = new URL("../fixtures/models/", import.meta.url).pathname;

function goldenDirs(): string[] {
  const dirs: string[] = [];
  for (const entry of Deno.readDirSync(MODELS)) {
    if (!entry.isDirectory) continue;
    try {
      Deno.statSync(`${MODELS}${entry.name}/golden.safetensors`);
      Deno.statSync(`${MODELS}${entry.name}/model.safetensors`);
      dirs.push(entry.name);
    } catch {
      console.log(`golden_test: skipping ${entry.name} (no golden.safetensors or model yet)`);
    }
  }
  return dirs.sort();
}

type Golden = Map<string, { dtype: string; shape: readonly number[]; bytes: Uint8Array }>;

function f32(g: Golden, name: string): Float32Array {
  const t = g.get(name)!;
  return new Float32Array(t.bytes.slice().buffer);
}
function i32(g: Golden, name: string): Int32Array {
  const t = g.get(name)!;
  return new Int32Array(t.bytes.slice().buffer);
}

/** Compares one prompt's router log ([T, M, k] layout) with the golden ([M, T, k] layout). */
function checkRouting(g: Golden, p: number, log: RouterLog, M: number, k: number, E: number): void {
  const ids = i32(g, `p${p}.topk_ids`), weights = f32(g, `p${p}.topk_weights`);
  const probs = f32(g, `p${p}.probs`);
  const T = ids.length / (M * k);
  assert.equal(log.experts.length, T * M * k);
  for (let m = 0; m < M; m++) {
    for (let t = 0; t < T; t++) {
      const ref = probs.subarray((m * T + t) * E, (m * T + t + 1) * E);
      const sorted = [...ref].sort((a, b) => b - a);
      const tie = k < E && sorted[k - 1]! - sorted[k]! < 1e-4;
      for (let j = 0; j < k; j++) {
        const got = log.experts[(t * M + m) * k + j]!, want = ids[(m * T + t) * k + j]!;
        if (!tie) assert.equal(got, want, `prompt ${p} layer ${m} token ${t} choice ${j}`);
        const gw = log.weights[(t * M + m) * k + j]!, ww = weights[(m * T + t) * k + j]!;
        if (!tie) {
          assert.ok(
            Math.abs(gw - ww) <= 1e-4,
            `weight ${gw} vs ${ww} at prompt ${p} layer ${m} token ${t}`,
          );
        }
      }
      for (let e = 0; e < E; e++) {
        const gp = log.probs![(t * M + m) * E + e]!;
        assert.ok(
          Math.abs(gp - ref[e]!) <= 1e-4,
          `prob ${gp} vs ${ref[e]} at prompt ${p} layer ${m} token ${t} expert ${e}`,
        );
      }
    }
  }
}

for (const name of goldenDirs()) {
  Deno.test(`golden: ${name}`, async () => {
    const dir = `${MODELS}${name}`;
    const g: Golden = await readAll(`${dir}/golden.safetensors`);
    const model = await loadModel(dir, { maxBatchTokens: 512 });
    try {
      const { moe_layers, top_k: k, num_experts: E, num_layers } = model.facts;
      const M = moe_layers.length;
      const prompts = [0, 1, 2].map((p) => Uint32Array.from(i32(g, `p${p}.ids`)));
      const D = 2;
      // All three prompts in one batched call: packing must not mix sequences.
      const logs = await model.route(prompts, { probs: true, lookahead: D });
      for (let p = 0; p < 3; p++) {
        const log = logs[p]!;
        checkRouting(g, p, log, M, k, E);
        // spec: 65535 exactly where layer l+d has no MoE block, else k distinct experts.
        const T = prompts[p]!.length;
        for (let t = 0; t < T; t++) {
          for (let m = 0; m < M; m++) {
            for (let d = 1; d <= D; d++) {
              const picks = log.spec!.subarray(
                ((t * M + m) * D + d - 1) * k,
                ((t * M + m) * D + d) * k,
              );
              const target = moe_layers[m]! + d;
              if (target >= num_layers || !moe_layers.includes(target)) {
                assert.ok(picks.every((x) => x === 65535));
              } else {
                assert.equal(new Set(picks).size, k);
                assert.ok(picks.every((x) => x < E));
              }
            }
          }
        }
        // final logits
        const ref = f32(g, `p${p}.logits`);
        const got = await model.logits(prompts[p]!);
        assert.equal(got.length, ref.length);
        for (let i = 0; i < ref.length; i++) {
          const tol = 1e-3 * Math.max(1, Math.abs(ref[i]!));
          if (!(Math.abs(got[i]! - ref[i]!) <= tol)) {
            assert.fail(`logit ${i} of prompt ${p}: ${got[i]} vs ${ref[i]}`);
          }
        }
        // greedy generation with the decode loop on the GPU
        const greedy = i32(g, `p${p}.greedy`);
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
    } finally {
      model.destroy();
    }
  });
}
