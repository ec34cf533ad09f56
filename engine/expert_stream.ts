/**
 * Routed experts streamed from host memory, for a model whose weights do not
 * fit the GPU memory it may use (`loadModel`'s `gpuMemory`, `--gpu-memory`).
 * Everything else (attention, routers, norms, shared experts, dense FFNs,
 * embedding, LM head, run state and logs) stays resident; the routed experts
 * live in host memory (`HostExperts`) and pass through a ring of R slots on
 * the GPU, each holding one group of G consecutive experts in the layout the
 * resident model gives them (texture or buffer, texel format), so the expert
 * kernels compute exactly what they compute on resident experts and the
 * router log is bit-identical.
 *
 * A pass records, for each MoE layer, its groups in order, each after a host
 * write (gpu.ts `Recorder.hostWrite`) that puts the group into its ring slot
 * (group j of the pass in slot j mod R): `submit` sends the work before it,
 * then the write (one queue.writeTexture / writeBuffer per expert matrix),
 * which the queue orders after the work that read the slot's previous group;
 * the host side of the next group's copy overlaps the GPU's work on the
 * current one. A slot that already holds its group is not written again, so
 * with room for every group (R ≥ groups a pass reads) each is written once.
 *
 * G is as many experts as one chunk of the resident model holds, lowered so
 * that two groups fit in what the cap leaves; R as many groups as then fit.
 * A cap that leaves room for not even one expert is refused in one sentence
 * naming the sizes.
 */
import { DataError, UsageError } from "../common/errors.ts";
import { parseByteSize } from "../common/bytes.ts";
import type { ExpertSource } from "./forward.ts";
import type { GpuContext } from "./gpu.ts";
import { createSlotMatrix, type SlotMatrix, writeSlot } from "./expert_slots.ts";
import {
  type ExpertChunk,
  type ExpertLayout,
  expertsPerChunk,
  type HostExperts,
  ROUTED_EXPERTS,
} from "./weights.ts";

/** One ring slot: one group's matrices (gate, up, down) and the group it holds. */
interface RingSlot {
  mats: SlotMatrix[];
  holds: number; // group number over all layers, or −1
}

export interface ExpertStream extends ExpertSource {
  /** Experts per group and slots in the ring. */
  readonly groupSize: number;
  readonly count: number;
  /** Bytes written into the ring so far. */
  readonly bytesStreamed: number;
}

/** Parses `--gpu-memory SIZE`: a byte count or a number with a unit (24GiB, 512MB, 1.5GB). */
export function parseGpuMemory(text: string): number {
  const bytes = parseByteSize(text, { bareIsBytes: true }) ?? 0;
  if (bytes < 1) {
    throw new UsageError(
      `--gpu-memory takes a positive size such as 24GiB, 512MB or a byte count, got "${text}".`,
    );
  }
  return bytes;
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

/** The refusal of a cap below the resident part plus one routed expert; `resident` bytes are already on the GPU. */
export function checkGpuMemory(
  o: { gpuMemory: number; resident: number; expertBytes: number; model: string },
): void {
  if (o.gpuMemory - o.resident >= o.expertBytes) return;
  throw new DataError(
    `--gpu-memory ${
      mib(o.gpuMemory)
    } cannot hold the working set of ${o.model}: the resident weights, activations and logs take ${
      mib(o.resident)
    } and one routed expert ${mib(o.expertBytes)}, so at least ${
      mib(o.resident + o.expertBytes)
    } is needed.`,
  );
}

/**
 * Creates the ring for `hosts` (one per MoE layer) in what remains of
 * `gpuMemory` after the pool's live bytes. `model` names the checkpoint in
 * the refusal.
 */
export function createExpertStream(
  ctx: GpuContext,
  hosts: readonly HostExperts[],
  o: { gpuMemory: number; model: string; shape: { h: number; f: number } },
): ExpertStream {
  const E = hosts[0]!.w1.length, M = hosts.length;
  const expertBytes = layerExpertBytes(hosts[0]!) / E;
  const resident = ctx.pool.bytes;
  checkGpuMemory({ gpuMemory: o.gpuMemory, resident, expertBytes, model: o.model });
  const free = o.gpuMemory - resident;
  const layout: ExpertLayout = { texture: hosts[0]!.texture, format: hosts[0]!.format };
  const { h, f } = o.shape;
  const groupSize = Math.max(
    1,
    Math.min(
      expertsPerChunk(ctx, { h, f }, layout.texture),
      E,
      Math.floor(free / (2 * expertBytes)),
    ),
  );
  const perLayer = Math.ceil(E / groupSize);
  const count = Math.max(1, Math.min(M * perLayer, Math.floor(free / (groupSize * expertBytes))));
  const shapes = [[h, f], [h, f], [f, h]] as const; // w1, w3, w2: [K, N]
  const ring: RingSlot[] = ctx.pool.grouped(
    ROUTED_EXPERTS,
    () =>
      Array.from({ length: count }, (_, r) => ({
        holds: -1,
        mats: shapes.map(([K, N], i) =>
          createSlotMatrix(
            ctx,
            `ring ${r} ${["gate", "up", "down"][i]}`,
            { k: K, n: N, count: groupSize },
            layout,
          )
        ),
      })),
  );
  // MoE layer m's groups as the kernels read them: experts [first, first + count) in slot (m·perLayer + i) mod R
  const chunks: ExpertChunk[][] = hosts.map((_, m) =>
    Array.from({ length: perLayer }, (_, i) => {
      const first = i * groupSize;
      const mats = ring[(m * perLayer + i) % count]!.mats;
      return {
        first,
        count: Math.min(groupSize, E - first),
        w1: mats[0]!.linear,
        w3: mats[1]!.linear,
        w2: mats[2]!.linear,
      };
    })
  );
  let streamed = 0;
  return {
    groupSize,
    count,
    get bytesStreamed() {
      return streamed;
    },
    chunks: (m) => chunks[m]!,
    load(m, i) {
      const group = m * perLayer + i;
      const slot = ring[group % count]!;
      if (slot.holds === group) return;
      const host = hosts[m]!, chunk = chunks[m]![i]!;
      for (let at = 0; at < chunk.count; at++) {
        const e = chunk.first + at;
        streamed += writeSlot(ctx.device, slot.mats[0]!, at, host.w1[e]!) +
          writeSlot(ctx.device, slot.mats[1]!, at, host.w3[e]!) +
          writeSlot(ctx.device, slot.mats[2]!, at, host.w2[e]!);
      }
      slot.holds = group;
    },
  };
}
