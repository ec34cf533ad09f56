/**
 * Routed experts streamed from host memory layer by layer, for a model whose
 * weights do not fit the GPU memory it may use (`loadModel`'s `gpuMemory`,
 * `--gpu-memory`). Everything else (attention, routers, norms, shared
 * experts, dense FFNs, embedding, LM head, run state) stays resident; the
 * routed experts of MoE layers live in host memory (`HostExperts`) and a
 * ring of R layer slots on the GPU, each able to hold one MoE layer's E
 * experts in the layout the resident model would give them (same chunks,
 * texture or buffer, texel format), so the expert kernels compute exactly
 * what they compute on resident experts and the router log is bit-identical.
 *
 * A pass runs as segments (forward.ts `plan.segment`): up to MoE layer 0's
 * router, then for each MoE layer m its experts (read from ring slot m mod R)
 * up to the next router. Before segment m is submitted, layer m's experts are
 * written into their slot (`queue.writeTexture`/`writeBuffer`, one write per
 * expert matrix); the queue orders that write after the submitted segments
 * that read the slot's previous layer, and the host-side copy of layer m
 * overlaps the GPU's work on layer m − 1 (R ≥ 2). With R ≥ the layers a pass
 * needs, every layer is written once and stays.
 *
 * R is the number of layer slots that fit in the memory left after the
 * resident part and the log buffers (at most the MoE layer count); a cap that
 * leaves room for none is refused in one sentence naming the sizes.
 */
import { DataError } from "../common/errors.ts";
import type { ExpertSlots } from "./forward.ts";
import type { GpuContext } from "./gpu.ts";
import { createSlotMatrix, type SlotMatrix, writeSlot } from "./offload.ts";
import {
  type ExpertChunk,
  type ExpertLayout,
  expertsPerChunk,
  type HostExperts,
  ROUTED_EXPERTS,
} from "./weights.ts";

/** One layer slot of the ring: chunks as recordForward reads them, their matrices, and the MoE layer held. */
interface LayerSlot {
  chunks: ExpertChunk[];
  matrices: SlotMatrix[][];
  holds: number; // MoE index, or −1
}

export interface ExpertStream {
  /** Layer slots in the ring. */
  readonly count: number;
  /** What recordForward reads routed experts from: MoE index i → ring slot i mod R (stable, so recordings can be reused). */
  readonly slots: ExpertSlots;
  /** Bytes written into the ring so far. */
  readonly bytesStreamed: number;
  /** Bytes of one MoE layer's routed experts. */
  readonly layerBytes: number;
  /** Makes MoE layer m's experts present in its ring slot, writing them unless already there (before the segment that runs them is submitted). */
  load(m: number): void;
}

/** The refusal of a cap below the resident part plus one MoE layer's experts; `resident` bytes are already on the GPU. */
export function checkGpuMemory(
  o: { gpuMemory: number; resident: number; layerBytes: number; model: string },
): void {
  if (o.gpuMemory - o.resident >= o.layerBytes) return;
  throw new DataError(
    `--gpu-memory ${
      mib(o.gpuMemory)
    } cannot hold one layer's working set of ${o.model}: the resident weights, activations and logs take ${
      mib(o.resident)
    } and one MoE layer's routed experts ${mib(o.layerBytes)}, so at least ${
      mib(o.resident + o.layerBytes)
    } is needed.`,
  );
}

/** MiB with one decimal, for messages. */
export function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** Bytes of one MoE layer's routed experts as their GPU copies hold them. */
export function layerExpertBytes(host: HostExperts): number {
  let bytes = 0;
  for (const w of [host.w1, host.w3, host.w2]) for (const m of w) bytes += m.byteLength;
  return bytes;
}

/**
 * Creates the ring for `hosts` (one per MoE layer) in what remains of
 * `gpuMemory` after the pool's live bytes, with at most `needed` slots (the
 * MoE layers a pass reads experts of). `model` names the checkpoint in the
 * refusal.
 */
export function createExpertStream(
  ctx: GpuContext,
  hosts: readonly HostExperts[],
  o: { gpuMemory: number; needed: number; model: string; shape: { h: number; f: number } },
): ExpertStream {
  const layerBytes = layerExpertBytes(hosts[0]!);
  const resident = ctx.pool.bytes;
  checkGpuMemory({ gpuMemory: o.gpuMemory, resident, layerBytes, model: o.model });
  const fit = Math.floor((o.gpuMemory - resident) / layerBytes);
  const count = Math.max(1, Math.min(fit, o.needed));
  const layout: ExpertLayout = { texture: hosts[0]!.texture, format: hosts[0]!.format };
  const E = hosts[0]!.w1.length;
  const { h, f } = o.shape;
  const shapes = [[h, f], [h, f], [f, h]] as const; // w1, w3, w2: [K, N]
  const perChunk = expertsPerChunk(ctx, { h, f }, layout.texture);
  const ring: LayerSlot[] = ctx.pool.grouped(
    ROUTED_EXPERTS,
    () =>
      Array.from({ length: count }, (_, r) => {
        const slot: LayerSlot = { chunks: [], matrices: [], holds: -1 };
        for (let first = 0; first < E; first += perChunk) {
          const n = Math.min(perChunk, E - first);
          const mats = shapes.map(([K, N], i) =>
            createSlotMatrix(
              ctx,
              `ring ${r} experts ${first}+ ${["gate", "up", "down"][i]}`,
              { k: K, n: N, count: n },
              layout,
            )
          );
          slot.chunks.push({
            first,
            count: n,
            w1: mats[0]!.linear,
            w3: mats[1]!.linear,
            w2: mats[2]!.linear,
          });
          slot.matrices.push(mats);
        }
        return slot;
      }),
  );
  let streamed = 0;
  const M = hosts.length;
  return {
    count,
    layerBytes,
    slots: { chunks: Array.from({ length: M }, (_, i) => ring[i % count]!.chunks), count: E },
    get bytesStreamed() {
      return streamed;
    },
    load(m) {
      const slot = ring[m % count]!;
      if (slot.holds === m) return;
      const host = hosts[m]!;
      slot.chunks.forEach((chunk, i) => {
        const mats = slot.matrices[i]!;
        for (let at = 0; at < chunk.count; at++) {
          const e = chunk.first + at;
          streamed += writeSlot(ctx.device, mats[0]!, at, host.w1[e]!) +
            writeSlot(ctx.device, mats[1]!, at, host.w3[e]!) +
            writeSlot(ctx.device, mats[2]!, at, host.w2[e]!);
        }
      });
      slot.holds = m;
    },
  };
}
