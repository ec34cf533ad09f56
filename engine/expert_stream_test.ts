/**
 * Issue 17, `gpuMemory`: a model whose weights do not fit keeps everything
 * but its routed experts resident and streams those through a ring of slots
 * (expert_stream.ts). At one third of tiny-moe's weight bytes (the routed
 * experts are 78% of them) the router logs, logits and generated tokens must
 * equal an unconstrained run bit for bit, on both kernel paths, with the
 * pool's peak within the cap; a cap below the resident part plus one expert
 * is refused in one sentence naming the sizes.
 */
import assert from "node:assert/strict";
import { DataError } from "../common/errors.ts";
import { loadModel } from "./model.ts";

Deno.env.set("XDG_RUNTIME_DIR", Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp");

const TINY = new URL("../fixtures/models/tiny-moe", import.meta.url).pathname;

for (const textures of [true, false]) {
  Deno.test(`tiny-moe in a third of its weight bytes streams its experts with bit-identical results (${textures ? "textures" : "storage"})`, async () => {
    const weightBytes = (await Deno.stat(`${TINY}/model.safetensors`)).size;
    const cap = Math.floor(weightBytes / 3);
    const whole = await loadModel(TINY, { maxBatchTokens: 64, textures });
    const streamed = await loadModel(TINY, { maxBatchTokens: 64, textures, gpuMemory: cap });
    try {
      assert.ok(
        whole.gpuBytesPeak() > weightBytes * 0.9,
        "the unconstrained run holds every weight",
      );
      const ids = Uint32Array.from({ length: 50 }, (_, i) => (i * 41 + 9) % 4000 + 3);
      const seqs = [ids, ids.subarray(5, 14)];
      const route = { probs: false, lookahead: 1 };
      const a = await whole.route(seqs, route), b = await streamed.route(seqs, route);
      for (let i = 0; i < seqs.length; i++) {
        assert.deepEqual(Array.from(b[i]!.experts), Array.from(a[i]!.experts), `experts ${i}`);
        assert.deepEqual(Array.from(b[i]!.weights), Array.from(a[i]!.weights), `weights ${i}`);
        assert.deepEqual(Array.from(b[i]!.spec!), Array.from(a[i]!.spec!), `spec ${i}`);
      }
      assert.ok(streamed.bytesStreamed() > 0, "experts were streamed");
      // a second pass: the ring cannot hold every expert, so they stream again
      const before = streamed.bytesStreamed();
      await streamed.route([ids], route);
      assert.ok(streamed.bytesStreamed() > before, "a later pass streams again");
      const opts = { maxNewTokens: 6, temperature: 0, seed: 0, probs: false, lookahead: 0 };
      const ga = await whole.generate(ids.subarray(0, 12), opts);
      const gb = await streamed.generate(ids.subarray(0, 12), opts);
      assert.deepEqual(Array.from(gb.tokens), Array.from(ga.tokens));
      assert.deepEqual(Array.from(gb.log.experts), Array.from(ga.log.experts));
      assert.ok(
        streamed.gpuBytesPeak() <= cap,
        `peak ${streamed.gpuBytesPeak()} bytes within the cap of ${cap}`,
      );
    } finally {
      whole.destroy();
      streamed.destroy();
    }
  });
}

Deno.test("a GPU memory cap below the resident weights plus one expert is refused in one sentence", async () => {
  await assert.rejects(
    loadModel(TINY, { maxBatchTokens: 64, gpuMemory: 4 * 2 ** 20 }),
    (e: unknown) => {
      assert.ok(e instanceof DataError);
      assert.match(
        e.message,
        /^--gpu-memory 4\.0 MiB cannot hold the working set of .*tiny-moe: the resident weights, activations and logs take [\d.]+ MiB and one routed expert 0\.8 MiB, so at least [\d.]+ MiB is needed\.$/,
      );
      return true;
    },
  );
});
