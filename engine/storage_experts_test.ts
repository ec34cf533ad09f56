/**
 * Issue 17, "silent zero experts": a hidden size on the texture path (a
 * multiple of 64) with routed experts on the storage path (their width not a
 * multiple of 64). The input RMSNorm of the MoE block used to be written only
 * into the hidden size's staging texture, so the storage expert matmul read an
 * xn buffer nothing had written and every routed expert contributed zero.
 * Compared with a run on storage buffers only (textures: false), which takes
 * no staging texture anywhere; the offloaded decode (experts in storage slots)
 * too.
 */
import assert from "node:assert/strict";
import { loadModel } from "./model.ts";
import { createOffloader } from "./offload.ts";
import { writeRandomMixtral } from "./random_checkpoint.ts";

Deno.env.set("XDG_RUNTIME_DIR", Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp");

Deno.test("routed experts on storage buffers read the normalised input when the hidden size takes textures", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-storage-experts-" });
  try {
    // hidden 128 (texture path), expert width 200 (storage path), 2 layers
    await writeRandomMixtral(dir, {
      hidden: 128,
      ffn: 200,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      vocab: 256,
      seed: 7,
    });
    const tex = await loadModel(dir, { maxBatchTokens: 64 });
    const buf = await loadModel(dir, { maxBatchTokens: 64, textures: false });
    try {
      assert.equal(tex.expertLayout().texture, false, "the experts take the storage path");
      const ids = Uint32Array.from({ length: 33 }, (_, i) => (i * 41 + 9) % 253 + 3);
      const la = await tex.logits(ids), lb = await buf.logits(ids);
      let worst = 0;
      for (let j = 0; j < la.length; j++) {
        worst = Math.max(worst, Math.abs(la[j]! - lb[j]!) / Math.max(1, Math.abs(lb[j]!)));
      }
      assert.ok(worst <= 1e-4, `logits differ by up to ${worst} (relative)`);
      // layer 1's router sees layer 0's expert output
      const [a] = await tex.route([ids], { probs: true, lookahead: 0 });
      const [b] = await buf.route([ids], { probs: true, lookahead: 0 });
      assert.deepEqual(Array.from(a!.experts), Array.from(b!.experts));
      for (let j = 0; j < a!.probs!.length; j++) {
        assert.ok(Math.abs(a!.probs![j]! - b!.probs![j]!) < 1e-5, `probability ${j}`);
      }
      // decode steps (1-row tiles) too
      const opts = { maxNewTokens: 12, temperature: 0, seed: 0, probs: false, lookahead: 0 };
      const ga = await tex.generate(ids.subarray(0, 9), opts);
      const gb = await buf.generate(ids.subarray(0, 9), opts);
      assert.deepEqual(Array.from(ga.tokens), Array.from(gb.tokens));
      assert.deepEqual(Array.from(ga.log.experts), Array.from(gb.log.experts));
      // the offloaded decode: the experts run from storage slots
      const host = await loadModel(dir, { maxBatchTokens: 64, hostExperts: true });
      try {
        const off = createOffloader(host, {
          policy: "lru",
          capacity: 4,
          prefetch: "none",
          budget: "per-layer",
        });
        try {
          const r = await off.generate(ids.subarray(0, 9), opts);
          assert.deepEqual(Array.from(r.tokens), Array.from(gb.tokens));
          assert.deepEqual(Array.from(r.log.experts), Array.from(gb.log.experts));
        } finally {
          off.destroy();
        }
      } finally {
        host.destroy();
      }
    } finally {
      tex.destroy();
      buf.destroy();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
