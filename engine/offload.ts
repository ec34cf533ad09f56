/**
 * Offloaded decoding (issue 9): routed experts live in host memory and the
 * GPU holds `capacity` expert slots per MoE layer, managed by the simulator's
 * own cache code (cache/expert_cache.ts, cache/policies/), so the engine's
 * upload counts are the simulator's miss (and prefetch) counts by
 * construction.
 *
 * - The prompt is prefilled as `generate` does, with every expert resident
 *   (a batched prefill needs them all); its router decisions are then fed to
 *   the cache token by token, layer by layer, exactly as the simulator replays
 *   phase-0 rows, uploading each miss into its slot. So the cache enters the
 *   decode in the state the simulator has at the first generated token.
 * - Each decode step runs in M + 1 segments (model.ts `ForwardPlan.segment`):
 *   up to MoE layer l's router; read back its top-k (the readback offloading
 *   needs); `cache.request` and upload the misses into their slots
 *   (`queue.writeTexture`); with speculative prefetch, `cache.prefetch` layer
 *   l + 1's router applied to layer l's router input (the `spec` log, lookahead
 *   1) and upload what it issued; write the chosen experts' slot ids into the
 *   choice buffer; then the grouped-expert kernels run over the slot textures.
 *   Gate weights and the combine order are the router's, so the output is
 *   bit-identical to `generate`.
 * - Per generated token: wall ms from this step's first submit to the next
 *   step's (the last step: to `onSubmittedWorkDone`), uploads (demand +
 *   prefetch) and bytes moved. Steps are not separated by an extra wait (a
 *   real decoder would not pay one): a step's GPU tail (last layer's experts,
 *   LM head, sampling) completes inside the next step's first readback, so
 *   per-step times are shifted by that tail and their sum is the decode's
 *   wall time.
 *
 * Per-layer budget only; online policies only (not belady or pinned).
 */
import { DataError, UsageError } from "../common/errors.ts";
import { ExpertCache, policyOptions } from "../cache/expert_cache.ts";
import { createPolicy, isPolicyName, type PolicyName } from "../cache/policies/mod.ts";
import { moeLayers } from "./config.ts";
import { readBack, Recorder } from "./gpu.ts";
import {
  type ExpertChunk,
  type GenerateOptions,
  type HostMatrix,
  type Linear,
  modelInternals,
  type MoeModel,
  recordForward,
  type RouterLog,
} from "./model.ts";
import { toFloat32 } from "./safetensors.ts";

export interface OffloadSettings {
  policy: PolicyName;
  /** Expert slots per MoE layer. */
  capacity: number;
  prefetch: "none" | "speculative";
}

/**
 * One trace row of an offloaded run: a generated token's decode step (phase
 * 1), or a prompt token's router decisions replayed through the cache after
 * the prefill (phase 0: uploads counted, no time of its own).
 */
export interface TokenMeasure {
  phase: 0 | 1;
  /** Index among the generated tokens of this prompt (phase 1), or −1. */
  token: number;
  /** Position (trace row in its document) whose forward this was. */
  pos: number;
  /** Wall ms of the decode step; NaN in phase 0. */
  ms: number;
  /** Demand uploads (cache misses). */
  misses: number;
  /** Prefetch uploads. */
  prefetched: number;
  bytes: number;
}

export interface OffloadResult {
  tokens: Uint32Array;
  promptLength: number;
  log: RouterLog;
  /** Prompt rows (phase 0) then generated tokens (phase 1). */
  measures: TokenMeasure[];
}

/** Parses `POLICY:CAPACITY` of `--offload`. */
export function parseOffload(text: string, prefetch: string): OffloadSettings {
  const [name, cap, ...rest] = text.split(":");
  const capacity = Number(cap);
  if (
    rest.length > 0 || name === undefined || !isPolicyName(name) || name === "belady" ||
    name === "pinned" || !Number.isInteger(capacity) || capacity < 1
  ) {
    throw new UsageError(
      `--offload takes POLICY:CAPACITY with an online policy (lru, fifo, lfu, lfru, random, swap) and a positive integer, got "${text}".`,
    );
  }
  if (prefetch !== "none" && prefetch !== "speculative") {
    throw new UsageError(`--prefetch takes none or speculative, got "${prefetch}".`);
  }
  return { policy: name, capacity, prefetch };
}

/** A slot copy of one expert matrix: `capacity` experts of [K, N]. */
interface SlotMatrix {
  linear: Linear;
  texture?: GPUTexture;
  /** Host [E, K, N] (f32 on the storage path), and where each expert sits in it. */
  host: (e: number) => HostMatrix;
}

export interface Offloader {
  /** Generates from one prompt; the cache and its slots carry over from the previous call, as the simulator's replay of the trace's documents does. */
  generate(prompt: Uint32Array, o: GenerateOptions): Promise<OffloadResult>;
  destroy(): void;
}

/**
 * Offloaded generation over `model`, which must come from `loadModel` with
 * `keepHostExperts: true`. One cache (and one set of slots) for every prompt.
 */
export function createOffloader(model: MoeModel, settings: OffloadSettings): Offloader {
  const I = modelInternals(model);
  const { ctx, weights, state } = I;
  const device = ctx.device;
  const c = model.config;
  const moe = moeLayers(c);
  const M = moe.length, k = c.topK, E = c.numExperts, cap = settings.capacity;
  if (cap < k || cap > E) {
    throw new DataError(
      `--offload capacity is ${cap}, expected between top-k (${k}) and the expert count (${E}).`,
    );
  }
  const spec = settings.prefetch === "speculative";
  const ro = { probs: false, lookahead: spec ? 1 : 0 };
  I.ensureLogs(ro);

  // ---- slots
  const slotLayers: SlotMatrix[][] = []; // [m] → w1, w3, w2
  const slotChunks: ExpertChunk[][] = [];
  for (const l of moe) {
    const chunks = weights.layers[l]!.experts!;
    const mats = (["w1", "w3", "w2"] as const).map((which): SlotMatrix => {
      const first = chunks[0]![which];
      const hostOf = (e: number): HostMatrix => {
        const chunk = chunks.find((ch) => e >= ch.first && e < ch.first + ch.count)!;
        if (!chunk.host) throw new Error("generateOffloaded: load the model with keepHostExperts");
        const size = first.k * first.n;
        const all = chunk.host[which];
        return all.subarray((e - chunk.first) * size, (e - chunk.first + 1) * size);
      };
      const label = `L${l} expert slots ${which}`;
      if (first.view) {
        const width = Math.ceil(first.n / 4);
        const format = first.format === "f32"
          ? "rgba32float"
          : first.format === "f16"
          ? "rgba16float"
          : "rg32uint";
        const texture = ctx.pool.texture(label, width, cap * first.k, undefined, false, format);
        return {
          linear: { k: first.k, n: first.n, format: first.format, view: texture.createView() },
          texture,
          host: hostOf,
        };
      }
      const buffer = ctx.pool.storage(label, cap * first.k * first.n * 4);
      return {
        linear: { k: first.k, n: first.n, format: "f32", buffer },
        host: (e) => {
          const m = hostOf(e);
          return m instanceof Float32Array
            ? m
            : toFloat32(new Uint8Array(m.buffer, m.byteOffset, m.byteLength), "F16", label);
        },
      };
    });
    slotLayers.push(mats);
    slotChunks.push([{
      first: 0,
      count: cap,
      w1: mats[0]!.linear,
      w3: mats[1]!.linear,
      w2: mats[2]!.linear,
    }]);
  }
  /** Uploads expert e of MoE layer m into slot s; returns the bytes moved. */
  const upload = (m: number, e: number, s: number): number => {
    let bytes = 0;
    for (const mat of slotLayers[m]!) {
      const { k: K, n: N } = mat.linear;
      let data = mat.host(e);
      if (mat.texture) {
        const width = Math.ceil(N / 4);
        if (N % 4 !== 0) {
          const padded = new (data.constructor as new (n: number) => HostMatrix)(K * width * 4);
          for (let r = 0; r < K; r++) padded.set(data.subarray(r * N, (r + 1) * N), r * width * 4);
          data = padded;
        }
        const texelBytes = mat.linear.format === "f32" ? 16 : 8;
        device.queue.writeTexture(
          { texture: mat.texture, origin: [0, s * K] },
          data.buffer as ArrayBuffer,
          { offset: data.byteOffset, bytesPerRow: width * texelBytes },
          [width, K],
        );
      } else {
        device.queue.writeBuffer(
          mat.linear.buffer!,
          s * K * N * 4,
          data.buffer as ArrayBuffer,
          data.byteOffset,
          data.byteLength,
        );
      }
      bytes += data.byteLength;
    }
    return bytes;
  };

  // ---- the cache, as the simulator builds it
  const cache = new ExpertCache(
    createPolicy(
      settings.policy,
      policyOptions({
        layers: M,
        experts: E,
        topK: k,
        capacity: cap,
        budget: "per-layer",
        seed: 0,
      }),
    ),
    { layers: M, experts: E, budget: "per-layer" },
  );
  const predicted: number[] = [];
  /** One (token, layer) step: request, uploads, speculative prefetch; returns the chosen slots. */
  const step = (m: number, chosen: ArrayLike<number>, specPick: ArrayLike<number> | null) => {
    const r = cache.request(m, chosen);
    let bytes = 0;
    r.misses.forEach((e, i) => bytes += upload(m, e, r.slots[i]!));
    let prefetched = 0;
    if (specPick && m + 1 < M) {
      predicted.length = 0;
      for (let j = 0; j < k; j++) if (specPick[j] !== 65535) predicted.push(specPick[j]!);
      if (predicted.length > 0) {
        prefetched = cache.prefetch(m + 1, predicted, 0, predicted.length);
        for (let i = 0; i < prefetched; i++) {
          const key = cache.issuedKeys[i]!;
          bytes += upload(m + 1, key % E, cache.slotOf[key]!);
        }
      }
    }
    const slots = new Uint32Array(k);
    for (let j = 0; j < k; j++) slots[j] = cache.slotOf[m * E + chosen[j]!]!;
    return { misses: r.misses.length, prefetched, bytes, slots };
  };

  const generate = async (prompt: Uint32Array, o: GenerateOptions): Promise<OffloadResult> => {
    const P = prompt.length;
    if (P === 0) throw new DataError("The prompt is empty, expected at least one token.");
    if (!Number.isInteger(o.maxNewTokens) || o.maxNewTokens < 1 || P + o.maxNewTokens > state.cap) {
      throw new DataError(
        `Prompt of ${P} tokens plus ${o.maxNewTokens} new tokens exceeds the engine's ${state.cap}-token context; lower max-new-tokens.`,
      );
    }
    I.checkTokens(prompt);
    I.ensureLogs(ro);
    // ---- prefill with every expert resident, then the prompt's decisions through the cache
    const sampling = { temperature: Math.max(0, o.temperature), seed: o.seed };
    device.queue.writeBuffer(state.tokens, 0, new Uint32Array(prompt));
    I.writeInfo(Array.from({ length: P }, (_, p) => [p, p, p, p]));
    const prefill = new Recorder(ctx);
    recordForward(prefill, c, weights, state, {
      tokens: P,
      logits: "last",
      probs: false,
      lookahead: ro.lookahead,
      sample: sampling,
    });
    prefill.finish();
    I.submit(prefill);
    const { logs: [promptLog] } = await I.readLogs(P, ro, [P]);
    const promptRows: TokenMeasure[] = [];
    for (let t = 0; t < P; t++) {
      const row: TokenMeasure = {
        phase: 0,
        token: -1,
        pos: t,
        ms: NaN,
        misses: 0,
        prefetched: 0,
        bytes: 0,
      };
      promptRows.push(row);
      for (let m = 0; m < M; m++) {
        const base = (t * M + m) * k;
        const r = step(
          m,
          promptLog!.experts.subarray(base, base + k),
          spec ? promptLog!.spec!.subarray(base, base + k) : null,
        );
        row.misses += r.misses;
        row.prefetched += r.prefetched;
        row.bytes += r.bytes;
      }
    }

    // ---- decode segments, recorded once
    const segments: Recorder[] = [];
    for (let m = 0; m <= M; m++) {
      const rec = new Recorder(ctx);
      const last = m === M;
      recordForward(rec, c, weights, state, {
        tokens: 1,
        logits: last ? "last" : "none",
        probs: false,
        lookahead: ro.lookahead,
        ...(last ? { sample: sampling } : {}),
        segment: { from: m === 0 ? -1 : moe[m - 1]!, to: last ? c.numLayers : moe[m]! },
        slots: { chunks: slotChunks, count: cap },
      });
      rec.finish();
      segments.push(rec);
    }
    const stops = new Set(o.stopIds ?? []);
    const measures: TokenMeasure[] = [];
    let produced = 0;
    await device.queue.onSubmittedWorkDone();
    let t0 = performance.now();
    while (produced < o.maxNewTokens) {
      const pos = P + produced;
      device.queue.writeBuffer(state.info, 0, new Uint32Array([pos, pos, pos, pos]));
      let misses = 0, prefetched = 0, bytes = 0, input = 0;
      for (let m = 0; m < M; m++) {
        I.submit(segments[m]!);
        const row = (pos * M + m) * k * 4;
        const parts = [{ buffer: state.logExperts, offset: row, bytes: k * 4 }];
        if (spec) parts.push({ buffer: state.logSpec!, offset: row, bytes: k * 4 });
        if (m === 0) parts.push({ buffer: state.tokens, offset: pos * 4, bytes: 4 });
        const data = await readBack(ctx, parts);
        if (m === 0) input = new Uint32Array(data[data.length - 1]!)[0]!;
        const r = step(m, new Uint32Array(data[0]!), spec ? new Uint32Array(data[1]!) : null);
        misses += r.misses;
        prefetched += r.prefetched;
        bytes += r.bytes;
        device.queue.writeBuffer(state.choice, 0, r.slots);
      }
      I.submit(segments[M]!);
      const last = produced + 1 === o.maxNewTokens || stops.has(input);
      if (last) await device.queue.onSubmittedWorkDone();
      const t1 = performance.now();
      measures.push({
        phase: 1,
        token: produced,
        pos,
        ms: t1 - t0,
        misses,
        prefetched,
        bytes,
      });
      t0 = t1;
      produced++;
      if (stops.has(input)) break; // the stop token's own row is logged, as generate does
    }
    const rows = P + produced;
    const { logs: [full], ids: tokens } = await I.readLogs(rows, ro, [rows], rows);
    let end = rows;
    const hit = tokens.subarray(P).findIndex((id) => stops.has(id));
    if (hit >= 0) end = Math.min(end, P + hit + 1);
    const log: RouterLog = {
      experts: full!.experts.slice(0, end * M * k),
      weights: full!.weights.slice(0, end * M * k),
    };
    if (full!.spec) log.spec = full!.spec.slice(0, end * M * ro.lookahead * k);
    prefill.destroy();
    for (const rec of segments) rec.destroy();
    return {
      tokens: tokens.slice(0, end),
      promptLength: P,
      log,
      measures: [...promptRows, ...measures.slice(0, end - P)],
    };
  };
  const destroy = () => {
    for (const mats of slotLayers) {
      for (const mat of mats) {
        if (mat.texture) mat.texture.destroy();
        else ctx.pool.release(mat.linear.buffer!);
      }
    }
  };
  return { generate, destroy };
}
