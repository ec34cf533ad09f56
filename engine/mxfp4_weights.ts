/**
 * gpt-oss routed experts as published: MXFP4 `*_blocks` (u8 [E, N, K/32,
 * 16]) and `*_scales` (u8 [E, N, K/32]) for `gate_up_proj` (N = 2F output
 * rows, gate and up interleaved, K = H) and `down_proj` (N = H, K = F), plus
 * f32/16-bit biases [E, N]. The bytes go to the GPU unchanged, blocks as u32
 * words and scales as packed bytes, in chunks of consecutive experts under the
 * binding limit; kernels/matmul_mxfp4.ts decodes them.
 */
import { DataError } from "../common/errors.ts";
import { moeNames } from "./checkpoint.ts";
import { readTensorBytes } from "./safetensors.ts";
import type { WeightReader } from "./weight_reader.ts";

/** One projection of consecutive experts: blocks, scales and bias on the GPU. */
export interface Mxfp4Matrix {
  blocks: GPUBuffer; // u32 words [count, N, K/32, 4]
  scales: GPUBuffer; // bytes [count, N, K/32], packed 4 per u32
  bias: GPUBuffer; // [count, N]
  n: number;
  k: number;
}

/** Consecutive MXFP4 experts of one layer. */
export interface Mxfp4Chunk {
  first: number;
  count: number;
  gateUp: Mxfp4Matrix; // N = 2F (gate 2j, up 2j + 1), K = H
  down: Mxfp4Matrix; // N = H, K = F
}

/** Layer l's MXFP4 experts in chunks (pool group `group`). */
export async function uploadMxfp4Experts(
  r: WeightReader,
  l: number,
  group: string,
): Promise<Mxfp4Chunk[]> {
  const c = r.ck.config, h = c.hiddenSize, f = c.expertFfn, E = c.numExperts;
  const names = moeNames(c, l);
  // bytes of one expert's blocks, the largest part of a chunk
  const perExpert = 2 * f * (h / 32) * 16 + h * (f / 32) * 16;
  const perChunk = Math.max(1, Math.min(E, Math.floor(r.ctx.weightLimits.binding / perExpert)));
  const bytes = async (name: string) => {
    const info = r.ck.tensors.get(name);
    if (info === undefined) throw new DataError(`Tensor ${name} is missing from ${r.ck.dir}.`);
    return await readTensorBytes(info);
  };
  const gateUp = {
    blocks: await bytes(names.gateUp + "_blocks"),
    scales: await bytes(names.gateUp + "_scales"),
    bias: await r.f32(names.gateUp + "_bias"),
  };
  const down = {
    blocks: await bytes(names.down + "_blocks"),
    scales: await bytes(names.down + "_scales"),
    bias: await r.f32(names.down + "_bias"),
  };
  const chunks: Mxfp4Chunk[] = [];
  for (let first = 0; first < E; first += perChunk) {
    const count = Math.min(perChunk, E - first);
    const label = `L${l} mxfp4 experts ${first}+`;
    const matrix = (
      m: { blocks: Uint8Array; scales: Uint8Array; bias: Float32Array },
      n: number,
      k: number,
      what: string,
    ): Mxfp4Matrix => {
      const blockBytes = n * (k / 32) * 16, scaleBytes = n * (k / 32);
      return {
        blocks: upload(
          r,
          `${label} ${what} blocks`,
          m.blocks,
          first * blockBytes,
          count * blockBytes,
        ),
        scales: upload(
          r,
          `${label} ${what} scales`,
          m.scales,
          first * scaleBytes,
          count * scaleBytes,
        ),
        bias: r.ctx.pool.upload(
          `${label} ${what} bias`,
          m.bias.subarray(first * n, (first + count) * n),
        ),
        n,
        k,
      };
    };
    chunks.push(r.ctx.pool.grouped(group, () => ({
      first,
      count,
      gateUp: matrix(gateUp, 2 * f, h, "gate_up"),
      down: matrix(down, h, f, "down"),
    })));
  }
  return chunks;
}

/** Uploads bytes [offset, offset + length) of `data` as a u32 buffer (zero-padded to whole words). */
function upload(
  r: WeightReader,
  label: string,
  data: Uint8Array,
  offset: number,
  length: number,
): GPUBuffer {
  const words = new Uint8Array(Math.ceil(length / 4) * 4);
  words.set(data.subarray(offset, offset + length));
  return r.ctx.pool.upload(label, words);
}
