/**
 * Offloaded generation (issue 9): the routed experts live in host memory only
 * (`loadModel(dir, { hostExperts: true })` uploads none of them) and the GPU
 * holds expert slots, `capacity` per MoE layer or one global pool of
 * `capacity` slots shared by every layer, managed by the simulator's own cache
 * code (cache/expert_cache.ts, cache/policies/), so the engine's upload counts
 * are the simulator's miss (and prefetch) counts by construction. GPU memory
 * for routed experts is slots × per-expert bytes (× MoE layers per layer)
 * instead of E × MoE layers × per-expert bytes (`MoeModel.expertGpuBytes`).
 *
 * - Every token, prompt and generated alike, runs as one decode step through
 *   the slots: the prompt is prefilled token by token, so the cache sees the
 *   rows in the simulator's order (token by token, layer by layer; phase-0
 *   rows first) and enters the decode in the state the simulator has at the
 *   first generated token. The kernels are batch-independent (each output
 *   element sums its K products in the same order whatever the tile shape),
 *   so the router logs equal `generate`'s batched prefill bit for bit
 *   (offload_test.ts, with a prompt long enough for the 64-row prefill tile).
 * - A step runs in M + 1 segments (segments.ts, `MoeModel.segments()`): up to MoE
 *   layer l's router; read back its top-k (the readback offloading needs);
 *   `cache.request` and upload the misses into their slots
 *   (`queue.writeTexture` or `writeBuffer`, one write per matrix); with
 *   speculative prefetch, `cache.prefetch` layer l + 1's router applied to
 *   layer l's router input (the `spec` log, lookahead 1) and upload what it
 *   issued; write the chosen experts' slot ids into the choice buffer; then
 *   the grouped-expert kernels run over the slot textures. Gate weights and the
 *   combine order are the router's, so the output is bit-identical to
 *   `generate`. The last segment computes logits and samples the next token
 *   only for the last prompt token and generated tokens.
 * - Per generated token: wall ms from this step's first submit to the next
 *   step's (the last step: to `onSubmittedWorkDone`), uploads (demand +
 *   prefetch) and bytes moved. Steps are not separated by an extra wait (a
 *   real decoder would not pay one): a step's GPU tail (last layer's experts,
 *   LM head, sampling) completes inside the next step's first readback, so
 *   per-step times are shifted by that tail and their sum is the decode's
 *   wall time. Prompt rows count uploads and bytes but no time.
 *
 * Online policies only: the offline ones (OFFLINE_POLICIES) need the whole
 * trace up front.
 */
import { DataError, UsageError } from "../common/errors.ts";
import { type Budget, ExpertCache, policyOptions } from "../cache/expert_cache.ts";
import {
  createPolicy,
  isPolicyName,
  OFFLINE_POLICIES,
  POLICY_NAMES,
  type PolicyName,
} from "../cache/policies/mod.ts";
import { moeLayers } from "./config.ts";
import type { ExpertSlots } from "./forward.ts";
import type { Recorder } from "./gpu.ts";
import type { GenerateOptions, MoeModel } from "./model.ts";
import { firstRows, type RouterLog } from "./router_log.ts";
import { createSlotMatrix, type SlotMatrix, writeSlot } from "./expert_slots.ts";
import { type ExpertChunk, expertsPerChunk, ROUTED_EXPERTS } from "./weights.ts";

export { createSlotMatrix, type SlotMatrix, writeSlot } from "./expert_slots.ts";

/** Policies an offloaded decode can run: those that decide from the past alone. */
const ONLINE_POLICIES = POLICY_NAMES.filter((p) => !OFFLINE_POLICIES.includes(p));

export interface OffloadSettings {
  policy: PolicyName;
  /** Expert slots per MoE layer (per-layer budget) or in all (global). */
  capacity: number;
  prefetch: "none" | "speculative";
  /** As `simulate --budget`: slots per layer, or one pool shared by all layers. */
  budget: Budget;
}

/**
 * One trace row of an offloaded run: a generated token's decode step (phase
 * 1), or a prompt token's step (phase 0: uploads counted, no time).
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

/** Parses `POLICY:CAPACITY` of `--offload` with its `--prefetch` and `--budget`. */
export function parseOffload(
  text: string,
  o: { prefetch: string; budget: string },
): OffloadSettings {
  // Policy names in any case, as simulate --policy takes them.
  const [name, cap, ...rest] = text.toLowerCase().split(":");
  const capacity = Number(cap);
  if (
    rest.length > 0 || name === undefined || !isPolicyName(name) ||
    OFFLINE_POLICIES.includes(name) || !/^\d+$/.test(cap ?? "") || capacity < 1
  ) {
    throw new UsageError(
      `--offload takes POLICY:CAPACITY with an online policy (${
        ONLINE_POLICIES.join(", ")
      }) and a positive integer, got "${text}".`,
    );
  }
  if (o.prefetch !== "none" && o.prefetch !== "speculative") {
    throw new UsageError(`--prefetch takes none or speculative, got "${o.prefetch}".`);
  }
  if (o.budget !== "per-layer" && o.budget !== "global") {
    throw new UsageError(`--budget takes per-layer or global, got "${o.budget}".`);
  }
  return { policy: name, capacity, prefetch: o.prefetch, budget: o.budget };
}

/**
 * A pool of expert slots: chunks of consecutive slots (one texture or buffer
 * per matrix each, under the device's texture and binding limits, as loadModel
 * chunks resident experts), read by the grouped-expert kernels as experts.
 */
interface SlotPool {
  /** As recordForward reads them: chunk i holds slots [first, first + count). */
  chunks: ExpertChunk[];
  /** [chunk] → w1, w3, w2. */
  matrices: SlotMatrix[][];
}

export interface Offloader {
  /** Generates from one prompt; the cache and its slots carry over from the previous call, as the simulator's replay of the trace's documents does. */
  generate(prompt: Uint32Array, o: GenerateOptions): Promise<OffloadResult>;
  destroy(): void;
}

/**
 * Offloaded generation over `model`, which must come from `loadModel` with
 * `hostExperts: true`. One cache (and one set of slots) for every prompt.
 */
export function createOffloader(model: MoeModel, settings: OffloadSettings): Offloader {
  const c = model.config;
  const moe = moeLayers(c);
  const M = moe.length, k = c.topK, E = c.numExperts, cap = settings.capacity;
  const global = settings.budget === "global";
  const most = global ? M * E : E;
  if (cap < k || cap > most) {
    throw new DataError(
      `--offload capacity is ${cap}, expected between top-k (${k}) and ${
        global ? "the experts of all MoE layers" : "the expert count"
      } (${most}).`,
    );
  }
  if (global && cap > 256) {
    throw new DataError(
      `--offload capacity is ${cap}, but a global pool can hold at most 256 slots (the expert grouping kernel's limit).`,
    );
  }
  const decode = model.segments();
  const { ctx, hostExperts: hosts } = decode;
  const device = ctx.device;
  const spec = settings.prefetch === "speculative";
  const ro = { probs: false, lookahead: spec ? 1 : 0 };
  // allocated now, not inside the first timed step
  decode.reserveLogs(ro);

  // ---- slots: per layer, or one pool that every layer's chunks point at
  const h = c.hiddenSize, f = c.expertFfn;
  const shapes = [[h, f], [h, f], [f, h]] as const; // w1, w3, w2: [K, N]
  const layout = model.expertLayout();
  const makePool = (label: string, slots: number): SlotPool => {
    const perChunk = expertsPerChunk(ctx, { h, f }, layout.texture);
    const pool: SlotPool = { chunks: [], matrices: [] };
    for (let first = 0; first < slots; first += perChunk) {
      const count = Math.min(perChunk, slots - first);
      const mats = shapes.map(([K, N], i) =>
        createSlotMatrix(
          ctx,
          `${label} slots ${first}+ ${["gate", "up", "down"][i]}`,
          { k: K, n: N, count },
          layout,
        )
      );
      pool.chunks.push({
        first,
        count,
        w1: mats[0]!.linear,
        w3: mats[1]!.linear,
        w2: mats[2]!.linear,
      });
      pool.matrices.push(mats);
    }
    return pool;
  };
  const pools: SlotPool[] = ctx.pool.grouped(ROUTED_EXPERTS, () => {
    if (global) {
      const shared = makePool("expert", cap);
      return moe.map(() => shared);
    }
    return moe.map((l) => makePool(`L${l} expert`, cap));
  });

  /** Uploads expert e of MoE layer m into slot s (numbered per layer, or over the global pool); returns the bytes moved. */
  const upload = (m: number, e: number, s: number): number => {
    const pool = pools[m]!;
    const i = pool.chunks.findIndex((ch) => s >= ch.first && s < ch.first + ch.count);
    const at = s - pool.chunks[i]!.first;
    const host = hosts[m]!;
    const mats = pool.matrices[i]!;
    return writeSlot(device, mats[0]!, at, host.w1[e]!) +
      writeSlot(device, mats[1]!, at, host.w3[e]!) +
      writeSlot(device, mats[2]!, at, host.w2[e]!);
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
        budget: settings.budget,
        seed: 0,
      }),
    ),
    { layers: M, experts: E, budget: settings.budget },
  );
  const predicted: number[] = [];
  /** One (token, layer) step: request, uploads, speculative prefetch; returns the chosen slots. */
  const step = (m: number, chosen: ArrayLike<number>, specPick: ArrayLike<number> | null) => {
    const r = cache.request(m, chosen);
    let bytes = 0;
    r.misses.forEach((e, i) => bytes += upload(m, e, r.slots[i]!));
    let prefetched = 0;
    // The trace logs no pick (65535) where model layer l + 1 has no MoE block; neither does this.
    if (specPick && m + 1 < M && moe[m + 1] === moe[m]! + 1) {
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
    if (
      !Number.isInteger(o.maxNewTokens) || o.maxNewTokens < 1 ||
      P + o.maxNewTokens > decode.maxTokens
    ) {
      throw new DataError(
        `Prompt of ${P} tokens plus ${o.maxNewTokens} new tokens exceeds the engine's ${decode.maxTokens}-token context; lower max-new-tokens.`,
      );
    }
    decode.writePrompt(prompt);
    decode.reserveLogs(ro);
    const sampling = { temperature: Math.max(0, o.temperature), seed: o.seed };

    // ---- one step's segments, recorded once: M up to a router, then the tail
    const slots: ExpertSlots = { chunks: pools.map((p) => p.chunks), count: cap };
    const segments = Array.from(
      { length: M },
      (_, m) => decode.record(m, slots, { lookahead: ro.lookahead }),
    );
    // the last prompt token and generated tokens sample the next token
    const sampleTail = decode.record(M, slots, { lookahead: ro.lookahead, sample: sampling });
    // other prompt tokens: their keys and values only
    const promptTail = decode.record(M, slots, { lookahead: ro.lookahead });

    /** The forward of the token at `pos` (its id already in the token buffer) through the slots. */
    const forward = async (pos: number, tail: Recorder) => {
      decode.setPosition(pos);
      let misses = 0, prefetched = 0, bytes = 0, input = 0;
      for (let m = 0; m < M; m++) {
        decode.submit(segments[m]!);
        const choice = await decode.readChoice(pos, m, { spec, token: m === 0 });
        if (m === 0) input = choice.token!;
        const r = step(m, choice.experts, choice.spec);
        misses += r.misses;
        prefetched += r.prefetched;
        bytes += r.bytes;
        decode.writeSlots(r.slots);
      }
      decode.submit(tail);
      return { misses, prefetched, bytes, input };
    };

    // ---- the prompt, token by token (phase 0)
    const promptRows: TokenMeasure[] = [];
    for (let t = 0; t < P; t++) {
      const r = await forward(t, t === P - 1 ? sampleTail : promptTail);
      promptRows.push({
        phase: 0,
        token: -1,
        pos: t,
        ms: NaN,
        misses: r.misses,
        prefetched: r.prefetched,
        bytes: r.bytes,
      });
    }

    // ---- the decode (phase 1), timed
    const stops = new Set(o.stopIds ?? []);
    const measures: TokenMeasure[] = [];
    let produced = 0;
    await device.queue.onSubmittedWorkDone();
    let t0 = performance.now();
    while (produced < o.maxNewTokens) {
      const pos = P + produced;
      const r = await forward(pos, sampleTail);
      const last = produced + 1 === o.maxNewTokens || stops.has(r.input);
      if (last) await device.queue.onSubmittedWorkDone();
      const t1 = performance.now();
      measures.push({
        phase: 1,
        token: produced,
        pos,
        ms: t1 - t0,
        misses: r.misses,
        prefetched: r.prefetched,
        bytes: r.bytes,
      });
      t0 = t1;
      produced++;
      if (stops.has(r.input)) break; // the stop token's own row is logged, as generate does
    }
    const rows = P + produced;
    const { log: full, tokens } = await decode.readLog(rows, ro);
    let end = rows;
    const hit = tokens.subarray(P).findIndex((id) => stops.has(id));
    if (hit >= 0) end = Math.min(end, P + hit + 1);
    const log = firstRows(full, end, {
      moeLayers: M,
      topK: k,
      experts: E,
      lookahead: ro.lookahead,
    });
    for (const rec of [...segments, sampleTail, promptTail]) rec.destroy();
    return {
      tokens: tokens.slice(0, end),
      promptLength: P,
      log,
      measures: [...promptRows, ...measures.slice(0, end - P)],
    };
  };
  const destroy = () => {
    for (const pool of new Set(pools)) {
      for (const mats of pool.matrices) {
        for (const mat of mats) ctx.pool.release(mat.texture ?? mat.linear.buffer!);
      }
    }
  };
  return { generate, destroy };
}
