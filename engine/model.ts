/**
 * An MoE checkpoint on WebGPU, with every router decision logged on the GPU.
 *
 * API
 * - `loadModel(dir, { maxBatchTokens })` validates the checkpoint
 *   (checkpoint.ts), creates the device (a DataError naming the fix when there
 *   is no adapter), uploads the weights (weights.ts) and allocates the run
 *   state (run_state.ts) once for `maxBatchTokens` tokens (default 4096,
 *   lowered so that no activation exceeds one binding or texture). With
 *   `hostExperts` the routed experts stay in host memory for an offloader
 *   (offload.ts, through `segments()`); `route`, `generate`, `logits` and
 *   `profile` then throw (their forward would need the experts on the GPU).
 * - `route(sequences, { probs, lookahead })`: teacher-forced router logs
 *   (router_log.ts defines them). Sequences are packed into passes of at most
 *   maxBatchTokens tokens, each sequence from position 0 with its own keys
 *   and values; one readback per pass, so a call whose sequences fit in
 *   maxBatchTokens reads back once. The pass stops after the last MoE layer's
 *   router (nothing after it changes a router decision), so no logits are
 *   computed.
 * - `generate(prompt, options)`: prompt prefill, then a decode loop whose
 *   token choice (kernels/sample.ts) writes the next token id into the GPU
 *   token buffer: no readback per token; one at the end (or every 32 tokens
 *   when `stopIds` are given, to stop early). The returned tokens include a
 *   stop token that ended generation. prompt + maxNewTokens ≤ maxBatchTokens.
 * - `logits(sequence)`: final logits [T, V] of one teacher-forced sequence.
 *
 * Where the rest lives: the transformer loop in forward.ts (attention.ts and
 * router.ts are its two seams for new attention types and router variants),
 * the kernels in kernels/ (one per file), the offloaded decode in offload.ts
 * and segments.ts.
 */
import { basename } from "node:path";
import { DataError } from "../common/errors.ts";
import type { ModelFacts } from "../trace/mod.ts";
import { attentionFor } from "./attention.ts";
import { openCheckpoint } from "./checkpoint.ts";
import { expertParams, type ModelConfig, moeLayers } from "./config.ts";
import { forwardFlops, type ForwardPlan, recordForward, type Transformer } from "./forward.ts";
import { createGpuContext, type GpuContext, readBack, Recorder, type WeightLimits } from "./gpu.ts";
import { mlaAttention } from "./mla.ts";
import { describeRouter, routerFor } from "./router.ts";
import { firstRows, readRouterLogs, type RouteOptions, type RouterLog } from "./router_log.ts";
import {
  allocateRunState,
  capForLimits,
  checkTokens,
  ensureLogBuffers,
  writeDecodeRow,
  writeRows,
} from "./run_state.ts";
import { type SegmentedDecode, segmentedDecode } from "./segments.ts";
import { type ExpertLayout, ROUTED_EXPERTS, uploadWeights } from "./weights.ts";
import {
  checkGpuMemory,
  createExpertStream,
  type ExpertStream,
  layerExpertBytes,
} from "./expert_stream.ts";

export interface GenerateOptions extends RouteOptions {
  maxNewTokens: number;
  temperature: number;
  seed: number;
  stopIds?: number[];
}

export interface MoeModel {
  readonly facts: ModelFacts;
  readonly vocabSize: number;
  readonly config: ModelConfig;
  readonly maxBatchTokens: number;
  route(sequences: Uint32Array[], options: RouteOptions): Promise<RouterLog[]>;
  generate(
    prompt: Uint32Array,
    options: GenerateOptions,
  ): Promise<{ tokens: Uint32Array; promptLength: number; log: RouterLog }>;
  logits(sequence: Uint32Array): Promise<Float32Array>;
  /** FLOPs of a forward over sequences of these lengths (`route`: up to the last router; else to logits of every token). */
  flops(lengths: number[], upTo: "route" | "logits"): number;
  /** Bytes of GPU buffers and textures this model holds (weights, run state, logs; an offloader's slots). */
  gpuBytes(): number;
  /** The part of `gpuBytes` holding routed expert weights: every expert, or with `hostExperts` an offloader's slots. */
  expertGpuBytes(): number;
  /** How a routed expert's GPU copy is laid out (texture or buffer, texel format); an offloader's slots take the same. */
  expertLayout(): ExpertLayout;
  /** GPU → CPU readbacks (mapAsync) since loading: one per route pass, one per generate call (+1 per 32 tokens with stopIds). */
  readbacks(): number;
  /** Weights uploaded in pieces because they exceed one binding or texture (weight_reader.ts). */
  splitWeights(): number;
  /** The most bytes of GPU buffers and textures this model held at once (BufferPool.peakBytes). */
  gpuBytesPeak(): number;
  /** Bytes of routed experts written into the ring of a model loaded with `gpuMemory` (0 otherwise). */
  bytesStreamed(): number;
  /**
   * GPU milliseconds per kernel and per section ("layer": norms, attention,
   * routers, shared/dense FFN; "experts": grouping, routed experts, combine;
   * "other": embedding, final norm, lm_head, sampling) of one `route` pass over
   * these sequences, or of one decode step after them (bench, calibration;
   * needs timestamp-query; each dispatch in its own pass, so slower than a run).
   */
  profile(
    sequences: Uint32Array[],
    mode: "route" | "decode",
  ): Promise<{ kernels: Map<string, number>; sections: Map<string, number> }>;
  /** The decode step cut at every MoE layer's router, for an offloader; needs `hostExperts`. */
  segments(): SegmentedDecode;
  destroy(): void;
}

export async function loadModel(
  dir: string,
  options: {
    maxBatchTokens?: number;
    /** Use textures where sizes allow (default true); false runs every kernel on storage buffers. */
    textures?: boolean;
    /**
     * Keep routed experts in host memory and upload none of them (default
     * false): only an offloader (offload.ts) can then run the model, through
     * its expert slots.
     */
    hostExperts?: boolean;
    /** Lower limits to split weights against than the device's (gpu.ts `WeightLimits`, for tests). */
    weightLimits?: Partial<WeightLimits>;
    /**
     * GPU memory the model may hold, in bytes (`--gpu-memory`): the routed
     * experts stay in host memory and stream through a ring of slots in what
     * is left after everything else (expert_stream.ts), with bit-identical
     * router logs.
     */
    gpuMemory?: number;
  } = {},
): Promise<MoeModel> {
  const ck = await openCheckpoint(dir);
  const c = ck.config;
  const router = routerFor(c, `${dir}/config.json`);
  const ctx = await createGpuContext({
    textures: options.textures ?? true,
    ...(options.weightLimits ? { weightLimits: options.weightLimits } : {}),
  });
  // Allocation failures surface asynchronously in WebGPU: catch them in an
  // error scope around the uploads and report them as what they are.
  ctx.device.pushErrorScope("out-of-memory");
  const cap = capForLimits(
    c,
    ctx.maxBinding,
    ctx.device.limits.maxTextureDimension2D,
    options.maxBatchTokens ?? 4096,
  );
  const positions = Math.max(cap + 1, c.maxPositions);
  const streamed = options.gpuMemory !== undefined && moeLayers(c).length > 0;
  const hostExperts = (options.hostExperts ?? false) || streamed;
  const weights = await uploadWeights(ctx, ck, positions, hostExperts);
  const state = allocateRunState(ctx, c, cap, {
    qkvTexture: weights.layers[0]!.wqkv?.view !== undefined,
  });
  const outOfMemory = await ctx.device.popErrorScope();
  if (outOfMemory) {
    const mib = (ctx.pool.bytes / 2 ** 20).toFixed(0);
    ctx.pool.releaseAll();
    throw new DataError(
      `The GPU ran out of memory loading ${dir}: it needs about ${mib} MiB for weights and run state (${outOfMemory.message}).`,
    );
  }
  const attention = c.mla ? mlaAttention(c, weights, state) : attentionFor(c, weights, state);
  const moe = moeLayers(c);
  const facts: ModelFacts = {
    name: basename(dir),
    family: c.family,
    num_layers: c.numLayers,
    moe_layers: moe,
    num_experts: c.numExperts,
    top_k: c.topK,
    num_shared_experts: c.numSharedExperts,
    hidden_size: c.hiddenSize,
    expert_params: expertParams(c),
    dtype: ck.dtype,
    router_scores: router.probs,
    router: describeRouter(router),
  };
  const t = { config: c, weights, state, attention, router };
  if (!streamed) return new Model(dir, facts, ctx, t);
  const hosts = moe.map((l) => weights.layers[l]!.hostExperts!);
  const gpuMemory = options.gpuMemory!;
  const expertBytes = layerExpertBytes(hosts[0]!) / c.numExperts;
  checkGpuMemory({ gpuMemory, resident: ctx.pool.bytes, expertBytes, model: dir });
  // the ring is made at the first pass, after the log buffers it must leave room for
  const stream = () =>
    createExpertStream(ctx, hosts, {
      gpuMemory,
      model: dir,
      shape: { h: c.hiddenSize, f: c.expertFfn },
    });
  return new Model(dir, facts, ctx, t, stream);
}

/** A loaded model: the transformer and its GPU context, reachable only through MoeModel. */
class Model implements MoeModel {
  readonly vocabSize: number;
  readonly config: ModelConfig;
  readonly maxBatchTokens: number;
  readonly #dir: string;
  readonly #ctx: GpuContext;
  readonly #t: Transformer;
  /** Streamed routed experts (`gpuMemory`): the ring's maker, then the ring. */
  readonly #makeStream: (() => ExpertStream) | null;
  #stream: ExpertStream | null = null;

  constructor(
    dir: string,
    readonly facts: ModelFacts,
    ctx: GpuContext,
    t: Transformer,
    makeStream: (() => ExpertStream) | null = null,
  ) {
    this.#dir = dir;
    this.#ctx = ctx;
    this.#t = t;
    this.#makeStream = makeStream;
    this.config = t.config;
    this.vocabSize = t.config.vocabSize;
    this.maxBatchTokens = t.state.cap;
  }

  /** Records and finishes one forward pass (submit, profile or reuse it; destroy when done). */
  #record(plan: ForwardPlan): Recorder {
    const rec = new Recorder(this.#ctx);
    if (this.#makeStream !== null && !plan.slots) {
      this.#stream ??= this.#makeStream();
      recordForward(rec, this.#t, { ...plan, stream: this.#stream });
    } else recordForward(rec, this.#t, plan);
    return rec.finish();
  }

  #checkTokens(seq: Uint32Array): void {
    checkTokens(seq, this.vocabSize, this.#dir);
  }

  /**
   * Checks and writes sequences packed from row 0, each from position 0 with
   * its own K/V rows; `extraRows` spare token rows after them.
   */
  #writeSequences(sequences: readonly Uint32Array[], extraRows = 0): void {
    const total = sequences.reduce((a, b) => a + b.length, 0);
    const tokens = new Uint32Array(total + extraRows);
    const rows: number[][] = [];
    let off = 0;
    for (const seq of sequences) {
      this.#checkTokens(seq);
      tokens.set(seq, off);
      for (let p = 0; p < seq.length; p++) rows.push([p, off + p, off + p, off + p]);
      off += seq.length;
    }
    const device = this.#ctx.device;
    device.queue.writeBuffer(this.#t.state.tokens, 0, tokens);
    writeRows(device, this.#t.state, rows);
  }

  async route(sequences: Uint32Array[], o: RouteOptions): Promise<RouterLog[]> {
    const cap = this.maxBatchTokens;
    ensureLogBuffers(this.#ctx, this.config, this.#t.state, o);
    const out: RouterLog[] = [];
    let i = 0;
    while (i < sequences.length) {
      // the next pass: as many whole sequences as fit in cap rows
      const batch: Uint32Array[] = [];
      let total = 0;
      while (i < sequences.length && total + sequences[i]!.length <= cap) {
        total += sequences[i]!.length;
        batch.push(sequences[i++]!);
      }
      if (batch.length === 0) {
        throw new DataError(
          `A sequence of ${
            sequences[i]!.length
          } tokens is longer than the engine's batch of ${cap} tokens; raise maxBatchTokens or cut the document.`,
        );
      }
      if (total === 0) {
        for (const _ of batch) {
          out.push({ experts: new Uint16Array(0), weights: new Float32Array(0) });
        }
        continue;
      }
      this.#writeSequences(batch);
      const rec = this.#record({
        tokens: total,
        logits: "none",
        probs: o.probs,
        lookahead: o.lookahead,
      });
      rec.submit();
      const counts = batch.map((b) => b.length);
      const read = { rows: total, counts, options: o };
      out.push(...(await readRouterLogs(this.#ctx, this.config, this.#t.state, read)).logs);
      rec.destroy();
    }
    return out;
  }

  async logits(sequence: Uint32Array): Promise<Float32Array> {
    const T = sequence.length, V = this.vocabSize, cap = this.maxBatchTokens;
    if (T === 0 || T > cap) {
      throw new DataError(`Sequence has ${T} tokens, expected 1 to ${cap}.`);
    }
    this.#writeSequences([sequence]);
    ensureLogBuffers(this.#ctx, this.config, this.#t.state, { probs: false, lookahead: 0 });
    const out = this.#ctx.pool.storage("all logits", T * V * 4); // [T, V]
    const rec = this.#record({
      tokens: T,
      logits: "all",
      allLogits: out,
      probs: false,
      lookahead: 0,
    });
    rec.submit();
    const [data] = await readBack(this.#ctx, [{ buffer: out, bytes: T * V * 4 }]);
    rec.destroy();
    this.#ctx.pool.release(out);
    return new Float32Array(data!);
  }

  async generate(
    prompt: Uint32Array,
    o: GenerateOptions,
  ): Promise<{ tokens: Uint32Array; promptLength: number; log: RouterLog }> {
    const P = prompt.length, cap = this.maxBatchTokens;
    const s = this.#t.state, device = this.#ctx.device;
    if (P === 0) throw new DataError("The prompt is empty, expected at least one token.");
    if (!Number.isInteger(o.maxNewTokens) || o.maxNewTokens < 0 || P + o.maxNewTokens > cap) {
      throw new DataError(
        `Prompt of ${P} tokens plus ${o.maxNewTokens} new tokens exceeds the engine's ${cap}-token context; lower max-new-tokens.`,
      );
    }
    this.#writeSequences([prompt]);
    ensureLogBuffers(this.#ctx, this.config, s, o);
    const logged = { probs: o.probs, lookahead: o.lookahead };
    const sampling = { temperature: Math.max(0, o.temperature), seed: o.seed };
    // the prefill's last row samples the first new token; each decode step the next one
    const prefill = this.#record({
      tokens: P,
      ...logged,
      ...(o.maxNewTokens > 0 ? { logits: "last", sample: sampling } : { logits: "none" }),
    });
    prefill.submit();
    const decode = this.#record({ tokens: 1, logits: "last", ...logged, sample: sampling });
    const stops = new Set(o.stopIds ?? []);
    const checkEvery = stops.size > 0 ? 32 : Infinity;
    let produced = 0; // generated tokens whose forward has run
    let end = P + o.maxNewTokens;
    while (produced < o.maxNewTokens) {
      writeDecodeRow(device, s, P + produced);
      decode.submit();
      produced++;
      if (produced % checkEvery === 0 && produced < o.maxNewTokens) {
        const [ids] = await readBack(this.#ctx, [{
          buffer: s.tokens,
          offset: P * 4,
          bytes: produced * 4,
        }]);
        const hit = new Uint32Array(ids!).findIndex((id) => stops.has(id));
        if (hit >= 0) {
          end = P + hit + 1;
          break;
        }
      }
    }
    // one readback: every row's log and the tokens; cut at the first stop token
    const rows = P + produced;
    const read = { rows, counts: [rows], tokens: rows, options: logged };
    const { logs: [full], ids: tokens } = await readRouterLogs(this.#ctx, this.config, s, read);
    const hit = tokens.subarray(P).findIndex((id) => stops.has(id));
    if (hit >= 0) end = Math.min(end, P + hit + 1);
    end = Math.min(end, rows);
    prefill.destroy();
    decode.destroy();
    const log = firstRows(full!, end, {
      moeLayers: this.facts.moe_layers.length,
      topK: this.config.topK,
      experts: this.config.numExperts,
      lookahead: o.lookahead,
    });
    return { tokens: tokens.slice(0, end), promptLength: P, log };
  }

  flops(lengths: number[], upTo: "route" | "logits"): number {
    return forwardFlops(this.config, lengths, upTo);
  }

  gpuBytes(): number {
    return this.#ctx.pool.bytes;
  }

  expertGpuBytes(): number {
    return this.#ctx.pool.groupBytes.get(ROUTED_EXPERTS) ?? 0;
  }

  expertLayout(): ExpertLayout {
    // every MoE layer's experts share the first one's layout
    for (const layer of this.#t.weights.layers) {
      if (layer.hostExperts) {
        return { texture: layer.hostExperts.texture, format: layer.hostExperts.format };
      }
      const w1 = layer.experts?.[0]?.w1;
      if (w1) return { texture: w1.view !== undefined, format: w1.format };
      if (layer.mxfp4) {
        throw new DataError(
          `${this.#dir} keeps its routed experts as MXFP4 blocks, which have no expert slot layout.`,
        );
      }
    }
    throw new DataError(`${this.#dir} has no MoE layer, so no routed experts.`);
  }

  readbacks(): number {
    return this.#ctx.stats.readbacks;
  }

  splitWeights(): number {
    return this.#ctx.stats.splitWeights;
  }

  gpuBytesPeak(): number {
    return this.#ctx.pool.peakBytes;
  }

  bytesStreamed(): number {
    return this.#stream?.bytesStreamed ?? 0;
  }

  async profile(
    sequences: Uint32Array[],
    mode: "route" | "decode",
  ): Promise<{ kernels: Map<string, number>; sections: Map<string, number> }> {
    const cap = this.maxBatchTokens;
    const total = sequences.reduce((a, b) => a + b.length, 0);
    if (total + 1 > cap) {
      throw new DataError(`Profiling takes at most ${cap - 1} tokens, got ${total}.`);
    }
    // one spare token row: the decode step's input is sampled into it
    this.#writeSequences(sequences, 1);
    const rec = this.#record({ tokens: total, logits: "none", probs: false, lookahead: 0 });
    if (mode === "route") {
      const out = await rec.profile();
      rec.destroy();
      return out;
    }
    // decode: the last sequence's next position, after a prefill of all of them
    rec.submit();
    const pos = sequences[sequences.length - 1]!.length, row = total;
    writeRows(this.#ctx.device, this.#t.state, [[pos, row, row, row]]);
    const step = this.#record({
      tokens: 1,
      logits: "last",
      probs: false,
      lookahead: 0,
      sample: { temperature: 0, seed: 0 },
    });
    const out = await step.profile();
    rec.destroy();
    step.destroy();
    return out;
  }

  segments(): SegmentedDecode {
    return segmentedDecode(this.#t, this.#ctx, this.#dir);
  }

  destroy(): void {
    this.#ctx.pool.releaseAll();
    this.#ctx.device.destroy();
  }
}
