/**
 * GPU slots for routed experts that live in host memory: a slot matrix holds
 * `count` experts of one [K, N] matrix as the grouped-expert kernels read
 * them, and `writeSlot` puts one expert into it. The offloader (offload.ts)
 * and the expert stream (expert_stream.ts) both fill their slots this way.
 */
import type { GpuContext } from "./gpu.ts";
import { type ExpertLayout, type HostMatrix, type Linear, TEXEL_FORMAT } from "./weights.ts";

/** One GPU matrix of a slot chunk: `count` experts of [K, N]. */
export interface SlotMatrix {
  linear: Linear;
  /** Set on the texture path ([count·K, N/4] texels); else `linear.buffer` ([count, K, N] f32). */
  texture?: GPUTexture;
}

/**
 * A slot matrix of `count` experts of [K, N] as the grouped-expert kernels read
 * them: a texture in the host copy's texel format on the texture path, else an
 * f32 storage buffer.
 */
export function createSlotMatrix(
  ctx: GpuContext,
  name: string,
  shape: { k: number; n: number; count: number },
  host: ExpertLayout,
): SlotMatrix {
  const { k: K, n: N, count } = shape;
  if (host.texture) {
    const t = ctx.pool.texture(name, N / 4, count * K, undefined, false, TEXEL_FORMAT[host.format]);
    return { linear: { k: K, n: N, format: host.format, view: t.createView() }, texture: t };
  }
  return {
    linear: { k: K, n: N, format: "f32", buffer: ctx.pool.storage(name, count * K * N * 4) },
  };
}

/**
 * Writes one expert's [K, N] matrix, laid out as HostExperts holds it, into
 * slot `at` of `mat`: one writeTexture or writeBuffer (a copy into staging
 * now, into the slot at the next submit). bench.ts `calibrate` times these
 * same writes at the checkpoint's sizes. Returns the bytes moved.
 */
export function writeSlot(
  device: GPUDevice,
  mat: SlotMatrix,
  at: number,
  data: HostMatrix,
): number {
  const { k: K, n: N } = mat.linear;
  if (mat.texture) {
    const texelBytes = mat.linear.format === "f32" ? 16 : 8;
    device.queue.writeTexture(
      { texture: mat.texture, origin: [0, at * K] },
      data.buffer as ArrayBuffer,
      { offset: data.byteOffset, bytesPerRow: (N / 4) * texelBytes },
      [N / 4, K],
    );
  } else {
    device.queue.writeBuffer(
      mat.linear.buffer!,
      at * K * N * 4,
      data.buffer as ArrayBuffer,
      data.byteOffset,
      data.byteLength,
    );
  }
  return data.byteLength;
}
