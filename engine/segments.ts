/**
 * The decode step cut at every MoE layer's router: what an offloader
 * (offload.ts) drives when the routed experts live in host memory and a
 * layer's decision must be read back before its experts can be uploaded and
 * run. It is the public face of the forward's resume point (forward.ts
 * `ForwardPlan.segment`), obtained from `MoeModel.segments()` of a model
 * loaded with `hostExperts`.
 *
 * One token's forward is M + 1 segments (M MoE layers): segment m < M runs
 * from MoE layer m − 1's experts (segment 0: from the embedding) up to MoE
 * layer m's router and lookahead router; segment M runs the last MoE layer's
 * experts and the rest of the model. Between segments the caller reads the
 * decision (`readChoice`), uploads experts into its slots and writes the
 * chosen slots (`writeSlots`) where the expert kernels read expert ids. Gate
 * weights and the combine order stay the router's, so the output is
 * bit-identical to `MoeModel.generate`.
 */
import { DataError } from "../common/errors.ts";
import { moeLayers } from "./config.ts";
import type { ExpertSlots, Transformer } from "./forward.ts";
import { recordForward } from "./forward.ts";
import { type GpuContext, readBack, Recorder } from "./gpu.ts";
import { readRouterLogs, type RouteOptions, type RouterLog } from "./router_log.ts";
import { checkTokens, ensureLogBuffers, writeDecodeRow } from "./run_state.ts";
import type { HostExperts } from "./weights.ts";

/** A router decision read back between segments. */
export interface Choice {
  /** [k] the experts MoE layer m chose for the row. */
  experts: Uint32Array;
  /** [k] layer m + 1's router's pick on layer m's router input (lookahead 1), when asked. */
  spec: Uint32Array | null;
  /** The row's input token id, when asked. */
  token: number | null;
}

export interface SegmentedDecode {
  /** The model's GPU context: slot textures come from its pool, uploads go through its queue. */
  readonly ctx: GpuContext;
  /** [MoE layer] the routed experts in host memory, each matrix laid out as one GPU slot. */
  readonly hostExperts: readonly HostExperts[];
  /** Tokens a sequence may hold, prompt and generated together (the run state's rows). */
  readonly maxTokens: number;
  /** Allocates the log buffers passes logging `o` write (once; later calls with the same `o` do nothing). */
  reserveLogs(o: RouteOptions): void;
  /** Checks the prompt's ids against the vocabulary and writes them at rows [0, P). */
  writePrompt(prompt: Uint32Array): void;
  /**
   * Records segment m (0 ≤ m ≤ M) of a one-token forward, its routed experts
   * read from `slots`. Segment M computes logits and writes the sampled next
   * token after the row when `sample` is given; otherwise only the row's keys
   * and values. Destroy the recorder when done.
   */
  record(
    m: number,
    slots: ExpertSlots,
    o: { lookahead: number; sample?: { temperature: number; seed: number } },
  ): Recorder;
  /** Points the segments submitted next at the token at position `pos` (row pos). */
  setPosition(pos: number): void;
  submit(segment: Recorder): void;
  /** One readback of MoE layer m's decision for row `pos` (after segment m ran). */
  readChoice(pos: number, m: number, o: { spec: boolean; token: boolean }): Promise<Choice>;
  /** Writes [k] slot ids where the next segment's expert kernels read the chosen experts. */
  writeSlots(slots: Uint32Array<ArrayBuffer>): void;
  /** The router log of rows [0, rows) and their token ids, in one readback. */
  readLog(rows: number, o: RouteOptions): Promise<{ log: RouterLog; tokens: Uint32Array }>;
}

/** The segmented decode of a transformer whose routed experts are in host memory; `source` names it in errors. */
export function segmentedDecode(
  t: Transformer,
  ctx: GpuContext,
  source: string,
): SegmentedDecode {
  const c = t.config, s = t.state, device = ctx.device;
  const moe = moeLayers(c);
  const M = moe.length, k = c.topK;
  const hostExperts = moe.map((l) => {
    const host = t.weights.layers[l]!.hostExperts;
    if (!host) {
      throw new DataError(
        `Offloading ${source} needs its routed experts in host memory; load it with hostExperts.`,
      );
    }
    return host;
  });
  return {
    ctx,
    hostExperts,
    maxTokens: s.cap,
    reserveLogs: (o) => ensureLogBuffers(ctx, c, s, o),
    writePrompt(prompt) {
      checkTokens(prompt, c.vocabSize, source);
      device.queue.writeBuffer(s.tokens, 0, new Uint32Array(prompt));
    },
    record(m, slots, o) {
      const rec = new Recorder(ctx);
      const last = m === M;
      const sample = last && o.sample !== undefined;
      recordForward(rec, t, {
        tokens: 1,
        logits: sample ? "last" : "none",
        probs: false,
        lookahead: o.lookahead,
        ...(sample ? { sample: o.sample! } : {}),
        segment: { from: m === 0 ? -1 : moe[m - 1]!, to: last ? c.numLayers : moe[m]! },
        slots,
      });
      return rec.finish();
    },
    setPosition: (pos) => writeDecodeRow(device, s, pos),
    submit: (segment) => segment.submit(),
    async readChoice(pos, m, o) {
      const row = (pos * M + m) * k * 4;
      const parts = [{ buffer: s.logExperts, offset: row, bytes: k * 4 }];
      if (o.spec) parts.push({ buffer: s.logSpec!, offset: row, bytes: k * 4 });
      if (o.token) parts.push({ buffer: s.tokens, offset: pos * 4, bytes: 4 });
      const data = await readBack(ctx, parts);
      return {
        experts: new Uint32Array(data[0]!),
        spec: o.spec ? new Uint32Array(data[1]!) : null,
        token: o.token ? new Uint32Array(data[data.length - 1]!)[0]! : null,
      };
    },
    writeSlots: (slots) => device.queue.writeBuffer(s.choice, 0, slots),
    async readLog(rows, o) {
      const read = { rows, counts: [rows], tokens: rows, options: o };
      const { logs: [log], ids } = await readRouterLogs(ctx, c, s, read);
      return { log: log!, tokens: ids };
    },
  };
}
