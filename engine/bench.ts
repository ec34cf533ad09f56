/**
 * `moetrace bench engine`: on one device, in one run,
 * - the GFLOP/s of the engine's best matmul kernel (kernels/matmul_tex.ts,
 *   the prefill tile) on a 1024 × 1024 × 1024 problem;
 * - prefill tokens/s and GFLOP/s of `route` (the capture path: 8 documents ×
 *   256 tokens in one call, up to the last router) and of `logits` (one
 *   512-token sequence, embedding to logits), FLOPs counted by `model.flops`;
 * - decode tokens/s of `generate` (greedy, 128 new tokens after a 16-token
 *   prompt, loop on the GPU): 128 / (time with 128 new − time with 0 new).
 * Model: fixtures/models/tiny-moe when trained, else a random checkpoint of its
 * shape (Mixtral, 4 layers, hidden 192, 8 experts top-2, vocab 4096) in a temp dir.
 * - the time from a fresh device to the first texture RMSNorm at hidden 4096
 *   (its pipeline compile, which must stay well under a second);
 * - where a decode step's GPU time goes (attention+router per layer, one active
 *   expert, embedding+lm_head+sampling) and the host→device upload rate and
 *   per-upload cost of one expert written as `generate --offload` writes it;
 *   `--calibrate FILE` writes these as a `simulate --hardware` JSON
 *   (cache/hardware.ts `Hardware`).
 * Target: prefill GFLOP/s ≥ 50% of the matmul's.
 */
import type { BenchOptions } from "../bench/measure.ts";
import { type Figure, medianSeconds, printFigures } from "../bench/measure.ts";
import { createGpuContext, readBack, Recorder } from "./gpu.ts";
import { matmulFlops } from "./kernels/matmul.ts";
import { matmulTex, PREFILL } from "./kernels/matmul_tex.ts";
import { rmsnorm } from "./kernels/rmsnorm.ts";
import { loadModel, type MoeModel } from "./model.ts";
import type { ExpertLayout } from "./weights.ts";
import { createSlotMatrix, writeSlot } from "./offload.ts";
import { writeRandomMixtral } from "./random_checkpoint.ts";
import { Rng } from "../common/random.ts";
import { writeFileAtomic } from "../common/atomic_write.ts";
import { pathExists } from "../common/fs.ts";
import type { Hardware } from "../cache/hardware.ts";

const TINY_MOE = new URL("../fixtures/models/tiny-moe/", import.meta.url).pathname;

/** GFLOP/s of the engine's best matmul (texture operands, prefill tile) on an n × n × n problem. */
export async function matmulGflops(
  n: number,
  repeats = 4,
): Promise<{ gflops: number; adapter: string }> {
  const ctx = await createGpuContext();
  try {
    const rng = new Rng(7);
    const data = new Float32Array(n * n).map(() => rng.next() - 0.5);
    const a = ctx.pool.texture("bench a", n / 4, n, data).createView();
    const w = ctx.pool.texture("bench w", n / 4, n, data).createView();
    const y = ctx.pool.storage("bench y", n * n * 4);
    const rec = new Recorder(ctx);
    for (let i = 0; i < repeats; i++) {
      matmulTex(rec, { a, w, y, rows: n, n, k: n }, { shape: PREFILL });
    }
    rec.finish();
    const run = async () => {
      const encoder = ctx.device.createCommandEncoder();
      rec.encode(encoder);
      ctx.device.queue.submit([encoder.finish()]);
      await ctx.device.queue.onSubmittedWorkDone();
    };
    await run(); // compile and warm up
    const seconds = await medianSeconds(3, run);
    rec.destroy();
    return { gflops: (repeats * matmulFlops(n, n, n)) / seconds / 1e9, adapter: ctx.adapterName };
  } finally {
    ctx.pool.releaseAll();
    ctx.device.destroy();
  }
}

/**
 * Milliseconds from a fresh device to the first texture RMSNorm of width n
 * done: mostly compiling its pipeline (issue 17: the kernel with the row in a
 * private array of n compiled in took 59 s at n = 2048, 613 s at 4096).
 */
export async function rmsnormFirstRunMs(n: number): Promise<number> {
  const ctx = await createGpuContext();
  try {
    const x = ctx.pool.upload("bench x", new Float32Array(n).fill(1));
    const w = ctx.pool.upload("bench w", new Float32Array(n).fill(1));
    const y = ctx.pool.texture("bench y", n / 4, 1, undefined, true).createView();
    const start = performance.now();
    const rec = new Recorder(ctx);
    rmsnorm(rec, { x, weight: w, y, rows: 1, n, eps: 1e-5 });
    rec.finish().submit();
    await ctx.device.queue.onSubmittedWorkDone();
    const ms = performance.now() - start;
    rec.destroy();
    return ms;
  } finally {
    ctx.pool.releaseAll();
    ctx.device.destroy();
  }
}

/**
 * The host → device link as `generate --offload` pays it, on a fresh device:
 * an upload is offload.ts `writeSlot` of one expert's three matrices (w1, w3:
 * [H, F]; w2: [F, H], in `host`'s texel format) into slot matrices like the
 * offloader's, then the next submit and a 16-byte router readback, as in the
 * offloaded decode. Each cost is the median over 7 repeats of 4 × (U uploads,
 * readback) minus 4 readbacks alone, over 4U, after a warm-up, with two host
 * copies written alternately into two slots; U uploads make at least 16 MiB
 * (one 44 MB expert; 20 of tiny-moe's 864 KiB), as one small upload is far
 * below the readback's jitter (±1 ms):
 * - `latencyUs`: an upload of three one-row matrices ([1, F], [1, F], [1, H]):
 *   the calls, staging and copies without the bytes (U = 16);
 * - `gbps`: the expert's bytes over (its upload − that fixed cost).
 * Not one large write: on llvmpipe a 64 MiB writeBuffer costs about 3.5× per
 * byte what writes up to 48 MiB do (README, "Offloading"), so the link is
 * measured at the sizes the engine writes.
 */
async function uploadLink(
  shape: { h: number; f: number },
  host: ExpertLayout,
): Promise<{ gbps: number; latencyUs: number; readbackMs: number; expertBytes: number }> {
  const ctx = await createGpuContext();
  try {
    const small = ctx.pool.storage("readback probe", 256);
    const readback = () => readBack(ctx, [{ buffer: small, bytes: 16 }]).then(() => {});
    /** Seconds per upload of experts whose matrices have `rows` rows each (all of them: K), `per` uploads per readback. */
    const timeUploads = async (rows: "one" | "all", per: number) => {
      const dims = [[shape.h, shape.f], [shape.h, shape.f], [shape.f, shape.h]] as const;
      const mats = dims.map(([K, N], i) =>
        createSlotMatrix(
          ctx,
          `link probe ${i}`,
          { k: rows === "one" ? 1 : K, n: N, count: 2 },
          host,
        )
      );
      // Two experts' host copies, every page written (untouched zero pages would read faster).
      const copies = [0, 1].map((e) =>
        mats.map((m) => {
          const n = m.linear.k * m.linear.n;
          return host.texture && host.format !== "f32"
            ? new Uint16Array(n).fill(0x3c00 + e)
            : new Float32Array(n).fill(1 + e);
        })
      );
      let next = 0;
      const upload = () => {
        const e = next++ % 2;
        // flushed by the readback's submit, as the offloader's writes are by the next segment's
        mats.forEach((m, i) => writeSlot(ctx.device, m, e, copies[e]![i]!));
      };
      const withUploads = async () => {
        for (let i = 0; i < 4; i++) {
          for (let j = 0; j < per; j++) upload();
          await readback();
        }
      };
      const alone = async () => {
        for (let i = 0; i < 4; i++) await readback();
      };
      await withUploads(); // staging allocations and first copies
      const seconds = (await medianSeconds(7, withUploads) - await medianSeconds(7, alone)) /
        (4 * per);
      const bytes = copies[0]!.reduce((a, c) => a + c.byteLength, 0);
      for (const m of mats) ctx.pool.release(m.texture ?? m.linear.buffer!);
      return { seconds, bytes };
    };
    await readback();
    const row = await timeUploads("one", 16);
    const expertBytes = 4 * 3 * shape.h * shape.f / (host.texture && host.format !== "f32" ? 2 : 1);
    const full = await timeUploads("all", Math.ceil((16 << 20) / expertBytes));
    const fixed = Math.max(0, row.seconds);
    // so that latency + bytes / bandwidth (cache/timing.ts transferMs) is the full upload's time
    const gbps = full.bytes / Math.max(1e-9, full.seconds - fixed) / 1e9;
    // one router-choice readback as the offloaded decode does it (submit, copy, mapAsync), 16 bytes
    const readbackSeconds = await medianSeconds(9, async () => {
      for (let i = 0; i < 8; i++) await readback();
    }) / 8;
    return {
      gbps,
      latencyUs: fixed * 1e6,
      readbackMs: readbackSeconds * 1000,
      expertBytes: full.bytes,
    };
  } finally {
    ctx.pool.releaseAll();
    ctx.device.destroy();
  }
}

/**
 * What `--calibrate` writes (a `simulate --hardware` JSON): where a decode
 * step of `model` after `prompt` spends its GPU time (per-dispatch
 * timestamps: attention + router per layer, one active expert, embedding +
 * LM head + sampling), and the host → device link and router readback
 * measured on a fresh device.
 */
export async function calibrate(
  model: MoeModel,
  prompt: Uint32Array,
  o: { adapter: string; modelName: string; by: string },
): Promise<Hardware> {
  // The first profile compiles the decode pipelines; then the median of three per section.
  await model.profile([prompt], "decode");
  const steps: { sections: Map<string, number> }[] = [];
  for (let i = 0; i < 3; i++) steps.push(await model.profile([prompt], "decode"));
  const section = (name: string) => {
    const ms = steps.map((s) => s.sections.get(name) ?? 0).sort((a, b) => a - b);
    return ms[1]!;
  };
  const moeCount = model.facts.moe_layers.length;
  // The offloader's slots take the resident experts' layout: texture or buffer, texel format.
  const link = await uploadLink(
    { h: model.config.hiddenSize, f: model.config.expertFfn },
    model.expertLayout(),
  );
  const round = (x: number) => Number(x.toPrecision(4));
  return {
    name: `calibrated-${o.adapter.split(" ")[0]}`,
    bandwidth_gb_s: round(link.gbps),
    latency_us: round(link.latencyUs),
    attention_ms_per_layer: round(section("layer") / model.facts.num_layers),
    expert_ms: round(section("experts") / Math.max(1, moeCount * model.facts.top_k)),
    other_ms_per_token: round(section("other")),
    readback_ms_per_layer: round(link.readbackMs),
    // generate --offload writes uploads into the one WebGPU queue its kernels
    // run on: they finish before the layer's experts compute, prefetches too.
    uploads_overlap_compute: false,
    source:
      `measured by moetrace ${o.by} on ${o.adapter}, ${o.modelName} (decode step timestamps; uploads: one expert's ${
        (link.expertBytes / 2 ** 20).toFixed(2)
      } MiB written into slots as generate --offload does; readback: 16-byte mapAsync round trip, what generate --offload pays per MoE layer), ${
        new Date().toISOString()
      }`,
  };
}

/** Prints the figures (and returns them, for `bench gpu`). */
export async function benchEngine(options: BenchOptions): Promise<Figure[]> {
  Deno.env.set("XDG_RUNTIME_DIR", Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp");
  let dir = TINY_MOE;
  let temp: string | null = null;
  if (!(await pathExists(`${TINY_MOE}model.safetensors`))) {
    temp = await Deno.makeTempDir({ prefix: "moetrace-bench-" });
    dir = temp;
    await writeRandomMixtral(dir);
  }
  try {
    const mm = await matmulGflops(1024);
    const normMs = await rmsnormFirstRunMs(4096);
    const model = await loadModel(dir, { maxBatchTokens: 2048 });
    const rng = new Rng(3);
    const doc = (n: number) =>
      Uint32Array.from({ length: n }, () => 3 + rng.int(model.vocabSize - 3));
    const docs = Array.from({ length: 8 }, () => doc(256));
    const lengths = docs.map((d) => d.length);
    const route = () => model.route(docs, { probs: false, lookahead: 0 }).then(() => {});
    await route();
    const routeSeconds = await medianSeconds(3, route);
    const long = doc(512);
    const logits = () => model.logits(long).then(() => {});
    await logits();
    const logitsSeconds = await medianSeconds(3, logits);
    const prompt = doc(16);
    const gen = (n: number) => () =>
      model.generate(prompt, {
        maxNewTokens: n,
        temperature: 0,
        seed: 0,
        probs: false,
        lookahead: 0,
      }).then(() => {});
    await gen(8)();
    const gen0 = await medianSeconds(3, gen(0));
    const gen128 = await medianSeconds(3, gen(128));
    // where a decode step's time goes and the link, for the table and --calibrate
    const hardware = await calibrate(model, prompt, {
      adapter: mm.adapter,
      modelName: temp ? "a random tiny-moe-shaped checkpoint" : "fixtures/models/tiny-moe",
      by: "bench engine --calibrate",
    });
    const gpuMiB = model.gpuBytes() / 2 ** 20;
    const routeGflops = model.flops(lengths, "route") / routeSeconds / 1e9;
    const logitsGflops = model.flops([512], "logits") / logitsSeconds / 1e9;
    model.destroy();
    const total = lengths.reduce((a, b) => a + b, 0);
    const figures: Figure[] = [
      { name: "matmul 1024³ (engine kernel)", value: mm.gflops, unit: "GFLOP/s" },
      {
        name: "prefill route 8×256 tokens",
        value: total / routeSeconds,
        unit: "tokens/s",
        target: 1000,
        direction: "min",
      },
      {
        name: "prefill route GFLOP/s",
        value: routeGflops,
        unit: "GFLOP/s",
        target: Number((0.5 * mm.gflops).toFixed(2)),
        direction: "min",
      },
      { name: "prefill logits 512 tokens", value: 512 / logitsSeconds, unit: "tokens/s" },
      { name: "prefill logits GFLOP/s", value: logitsGflops, unit: "GFLOP/s" },
      {
        name: "decode (greedy, GPU loop)",
        value: 128 / Math.max(1e-9, gen128 - gen0),
        unit: "tokens/s",
      },
      {
        name: "decode step: attention+router per layer",
        value: hardware.attention_ms_per_layer!,
        unit: "ms",
      },
      { name: "decode step: one active expert", value: hardware.expert_ms!, unit: "ms" },
      {
        name: "decode step: embedding + lm_head + sampling",
        value: hardware.other_ms_per_token!,
        unit: "ms",
      },
      {
        name: "texture RMSNorm hidden 4096: compile + first run",
        value: normMs,
        unit: "ms",
      },
      { name: "GPU memory (weights + 2048-token run state)", value: gpuMiB, unit: "MiB" },
      { name: "host→device upload bandwidth", value: hardware.bandwidth_gb_s, unit: "GB/s" },
      { name: "host→device upload latency", value: hardware.latency_us, unit: "µs" },
      {
        name: "router readback round trip (offload)",
        value: hardware.readback_ms_per_layer!,
        unit: "ms",
      },
    ];
    if (options.calibrate) {
      await writeFileAtomic(options.calibrate, JSON.stringify(hardware, null, 2) + "\n");
      if (!options.json) console.log(`wrote ${options.calibrate}`);
    }
    printFigures(
      `bench engine: ${
        temp ? "random tiny-moe-shaped checkpoint" : "fixtures/models/tiny-moe"
      } on ${mm.adapter}`,
      figures,
      options.json,
    );
    return figures;
  } finally {
    if (temp) await Deno.remove(temp, { recursive: true });
  }
}
