/**
 * Offloaded generation (offload.ts) on a random tiny-moe-shaped checkpoint,
 * both kernel paths:
 * - GPU memory: a model loaded with `hostExperts` holds no routed expert on
 *   the GPU (its pool counts exactly E × M expert copies less than the
 *   resident model's), and with an offloader exactly its slots: capacity × M
 *   per-expert copies per layer, capacity copies for a global pool.
 * - the tokens and router logs equal `generate`'s (resident experts, batched
 *   prefill; one prompt of 20 tokens takes the 64-row prefill tile there and
 *   the 1-row decode tile here, so equality also shows the kernels are
 *   batch-independent);
 * - the uploads equal the simulator's replay (cache/replay.ts) of the same
 *   routing with the same policy, capacity and budget: demand uploads =
 *   misses, prefetch uploads = prefetch_issued, summed over prompt (phase 0)
 *   and generated (phase 1) rows of every document, for LRU at k, k + 2 and E
 *   per layer and at 4 and 12 slots in a global pool, with and without
 *   speculative prefetch.
 * - f16 and bf16 checkpoints: experts stay 16-bit in their slots (half the
 *   bytes of f32) and the text and logs still equal `generate`'s.
 * - the command line: `generate --offload lru:5 --budget global --prefetch
 *   speculative` continues the Hugging Face golden and writes a measured.csv
 *   whose uploads equal `simulate --budget global`'s loads on its trace.
 */
import assert from "node:assert/strict";
import { loadModel, type MoeModel } from "./model.ts";
import { createOffloader, type OffloadSettings } from "./offload.ts";
import { writeRandomMixtral } from "./random_checkpoint.ts";
import { readHeader, toHalfBits, writeSafetensors } from "./safetensors.ts";
import type { AccessTrace } from "../cache/access_trace.ts";
import { replay } from "../cache/replay.ts";
import { createPolicy } from "../cache/policies/mod.ts";
import { policyOptions } from "../cache/expert_cache.ts";
import { SpeculativePrefetcher } from "../cache/prefetch/speculative.ts";
import { runCli } from "../tests/cli_helpers.ts";
import { parse } from "csv-parse/sync";

Deno.env.set("XDG_RUNTIME_DIR", Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp");

function sum(a: Float64Array): number {
  return a.reduce((x, y) => x + y, 0);
}

const H = 128, F = 192, M = 3, E = 8, k = 2;
/** The random checkpoint's shape: hidden 128, FFN 192 (the texture path when asked), 3 MoE layers. */
const SHAPE = { hidden: H, ffn: F, layers: M, heads: 4, kvHeads: 2, vocab: 512 };
/** One expert's GPU copy: w1, w3 [H, F] and w2 [F, H] in f32 (rgba32float texels or a storage buffer). */
const EXPERT_BYTES = 3 * H * F * 4;

for (const textures of [true, false]) {
  Deno.test(`offloaded generate holds only its slots, equals generate, uploads equal simulated misses (textures ${textures})`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "moetrace-offload-test-" });
    let full: MoeModel | null = null, host: MoeModel | null = null;
    try {
      // hidden 128, FFN 192: the texture path when asked; 3 MoE layers of 8 experts, top-2
      await writeRandomMixtral(dir, SHAPE);
      full = await loadModel(dir, { maxBatchTokens: 128, textures });
      host = await loadModel(dir, { maxBatchTokens: 128, textures, hostExperts: true });
      assert.equal(full.expertGpuBytes(), E * M * EXPERT_BYTES);
      assert.equal(host.expertGpuBytes(), 0);
      assert.equal(full.gpuBytes() - host.gpuBytes(), E * M * EXPERT_BYTES);
      await assert.rejects(
        host.generate(Uint32Array.from([5, 6]), {
          maxNewTokens: 1,
          temperature: 0,
          seed: 0,
          probs: false,
          lookahead: 0,
        }),
        /experts are in host memory/,
      );

      const long = Uint32Array.from({ length: 20 }, (_, i) => (i * 37 + 11) % 512);
      const prompts = [[5, 17, 300, 42], [9, 200, 11]].map((p) => Uint32Array.from(p));
      prompts.push(long);
      const options = { maxNewTokens: 20, temperature: 0, seed: 3, probs: false, lookahead: 0 };
      const base = [];
      for (const p of prompts) base.push(await full.generate(p, options));
      // every setting on the texture path; the storage path (same host code) at one of each budget
      const settings: Omit<OffloadSettings, "prefetch">[] = textures
        ? [
          ...[k, k + 2, E].map((capacity) => ({
            policy: "lru" as const,
            capacity,
            budget: "per-layer" as const,
          })),
          ...[4, 12].map((capacity) => ({
            policy: "lru" as const,
            capacity,
            budget: "global" as const,
          })),
        ]
        : [
          { policy: "lru", capacity: k + 2, budget: "per-layer" },
          { policy: "lru", capacity: 12, budget: "global" },
        ];
      for (const s of settings) {
        for (const prefetch of ["none", "speculative"] as const) {
          const label = `${s.budget} capacity ${s.capacity}, prefetch ${prefetch}`;
          const before = host.gpuBytes();
          const off = createOffloader(host, { ...s, prefetch });
          const slots = s.budget === "global" ? s.capacity : s.capacity * M;
          assert.equal(host.expertGpuBytes(), slots * EXPERT_BYTES, `slot bytes, ${label}`);
          const held = host.gpuBytes();
          if (prefetch === "none") {
            // (speculative prefetch also allocates the model's spec log, once)
            assert.equal(held - before, slots * EXPERT_BYTES, `pool bytes, ${label}`);
          }
          const chosen: number[] = [], spec: number[] = [];
          let misses = 0, prefetched = 0, bytes = 0;
          try {
            for (let i = 0; i < prompts.length; i++) {
              const r = await off.generate(prompts[i]!, options);
              assert.deepEqual(r.tokens, base[i]!.tokens, `tokens, ${label}`);
              assert.deepEqual(r.log.experts, base[i]!.log.experts, `experts, ${label}`);
              assert.deepEqual(r.log.weights, base[i]!.log.weights, `weights, ${label}`);
              assert.equal(r.measures.length, r.tokens.length);
              for (const m of r.measures) {
                misses += m.misses;
                prefetched += m.prefetched;
                bytes += m.bytes;
                assert.equal(Number.isNaN(m.ms), m.phase === 0);
              }
              chosen.push(...r.log.experts);
              if (r.log.spec) spec.push(...r.log.spec);
            }
          } finally {
            off.destroy();
          }
          assert.equal(host.expertGpuBytes(), 0, `slots released, ${label}`);
          assert.equal(host.gpuBytes(), held - slots * EXPERT_BYTES, `pool after, ${label}`);
          assert.equal(bytes, (misses + prefetched) * EXPERT_BYTES, `bytes moved, ${label}`);
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
              policyOptions({
                layers: M,
                experts: E,
                topK: k,
                capacity: s.capacity,
                budget: s.budget,
                seed: 0,
              }),
            ),
            budget: s.budget,
            prefetcher: prefetch === "speculative" ? new SpeculativePrefetcher(trace, 1) : null,
            costs: [],
          });
          assert.equal(misses, sum(sim.stats.misses), `misses, ${label}`);
          assert.equal(prefetched, sum(sim.stats.prefetchIssued), `prefetches, ${label}`);
          // every expert of every layer is loaded at least once: the count is not trivially 0
          assert.ok(misses + prefetched >= M * E, label);
          if (s.budget === "per-layer" && s.capacity === E) {
            assert.equal(misses + prefetched, M * E, `each expert once, ${label}`);
          }
        }
      }
    } finally {
      full?.destroy();
      host?.destroy();
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("offloaded generate keeps f16 and bf16 experts 16-bit in their slots and equals generate", async () => {
  const base = await Deno.makeTempDir({ prefix: "moetrace-offload-half-" });
  try {
    await writeRandomMixtral(`${base}/f32`, SHAPE);
    const header = await readHeader(`${base}/f32/model.safetensors`);
    const raw = await Deno.readFile(`${base}/f32/model.safetensors`);
    for (const dtype of ["F16", "BF16"]) {
      const tensors: Record<string, { shape: number[]; dtype: string; bytes: Uint8Array }> = {};
      for (const info of header.values()) {
        const f = new Float32Array(raw.slice(info.begin, info.end).buffer);
        const bits = Uint16Array.from(
          f,
          (x) =>
            dtype === "F16"
              ? toHalfBits(x)
              : new Uint32Array(new Float32Array([x]).buffer)[0]! >>> 16,
        );
        tensors[info.name] = { shape: [...info.shape], dtype, bytes: new Uint8Array(bits.buffer) };
      }
      const dir = `${base}/${dtype}`;
      await Deno.mkdir(dir);
      await Deno.copyFile(`${base}/f32/config.json`, `${dir}/config.json`);
      await writeSafetensors(`${dir}/model.safetensors`, tensors);
      const full = await loadModel(dir, { maxBatchTokens: 64 });
      const host = await loadModel(dir, { maxBatchTokens: 64, hostExperts: true });
      try {
        assert.equal(full.expertGpuBytes(), (E * M * EXPERT_BYTES) / 2, dtype);
        const prompt = Uint32Array.from([7, 300, 41, 99, 5]);
        const options = { maxNewTokens: 12, temperature: 0, seed: 1, probs: false, lookahead: 0 };
        const want = await full.generate(prompt, options);
        const off = createOffloader(host, {
          policy: "lru",
          capacity: k + 1,
          prefetch: "speculative",
          budget: "per-layer",
        });
        try {
          assert.equal(host.expertGpuBytes(), ((k + 1) * M * EXPERT_BYTES) / 2, dtype);
          const got = await off.generate(prompt, options);
          assert.deepEqual(got.tokens, want.tokens, dtype);
          assert.deepEqual(got.log.experts, want.log.experts, dtype);
          assert.deepEqual(got.log.weights, want.log.weights, dtype);
          const moved = got.measures.reduce((a, m) => a + m.bytes, 0);
          const loads = got.measures.reduce((a, m) => a + m.misses + m.prefetched, 0);
          assert.equal(moved, (loads * EXPERT_BYTES) / 2, dtype);
        } finally {
          off.destroy();
        }
      } finally {
        full.destroy();
        host.destroy();
      }
    }
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("generate --offload with a global pool continues the golden; its uploads equal simulate --budget global", async () => {
  const model = new URL("../fixtures/models/tiny-mixtral-swa", import.meta.url).pathname;
  const dir = await Deno.makeTempDir({ prefix: "moetrace-offload-cli-" });
  try {
    const golden = JSON.parse(await Deno.readTextFile(`${model}/golden.json`)).prompts[0];
    await Deno.writeTextFile(
      `${dir}/prompts.jsonl`,
      JSON.stringify({ prompt: golden.text }) + "\n",
    );
    // 2 MoE layers of 6 experts, top-3: 5 slots shared by both layers (storage path, window 7)
    const gen = await runCli([
      "generate",
      "--model",
      model,
      "--prompts",
      `${dir}/prompts.jsonl`,
      "--out",
      `${dir}/trace`,
      "--max-new-tokens",
      "12",
      "--offload",
      "lru:5",
      "--budget",
      "global",
      "--prefetch",
      "speculative",
    ]);
    assert.equal(gen.code, 0, gen.stderr);
    const printed = JSON.parse(gen.stdout.trim());
    assert.equal(printed.completion, golden.greedy_text.slice(0, printed.completion.length));
    const measured = parse(await Deno.readTextFile(`${dir}/trace/measured.csv`), {
      columns: true,
    }) as Record<string, string>[];
    assert.equal(measured.filter((r) => r.phase === "1").length, 12);
    assert.ok(measured.every((r) => r.budget === "global" && r.capacity === "5"));
    const uploads = measured.reduce((a, r) => a + Number(r.uploads), 0);
    const sim = await runCli([
      "simulate",
      `${dir}/trace`,
      "--out",
      `${dir}/sim`,
      "--policy",
      "lru",
      "--capacity",
      "5",
      "--prefetch",
      "speculative",
      "--budget",
      "global",
      "--dtype",
      "fp32",
    ]);
    assert.equal(sim.code, 0, sim.stderr);
    const rows = parse(await Deno.readTextFile(`${dir}/sim/simulation.csv`), {
      columns: true,
    }) as Record<string, string>[];
    const all = rows.find((r) => r.layer === "all")!;
    assert.equal(all.budget, "global");
    assert.ok(uploads > 5, `${uploads} uploads`);
    assert.equal(uploads, Number(all.misses) + Number(all.prefetch_issued));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
