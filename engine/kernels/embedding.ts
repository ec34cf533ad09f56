/**
 * Embedding gather: x[t, :] = table[tokens[info[t].token_index], :].
 * The table may be split into row chunks (tensors larger than one binding):
 * each chunk dispatch copies the tokens whose id falls in its rows.
 */
import { pipeline, type Recorder } from "../gpu.ts";

export interface EmbeddingArgs {
  /** [rowCount, H] rows rowBase.. of the embedding. */
  table: GPUBuffer;
  tokens: GPUBuffer;
  /** Per token: pos, kv_row, log_row, token_index (u32 × 4). */
  info: GPUBuffer;
  x: GPUBuffer;
  tokensCount: number;
  hidden: number;
  rowBase: number;
  rowCount: number;
}

export function embedding(rec: Recorder, a: EmbeddingArgs): void {
  const p = pipeline(rec.ctx, "embedding", () => WGSL);
  rec.dispatch(p, [a.tokensCount, a.hidden, a.rowBase, a.rowCount], [
    a.table,
    a.tokens,
    a.info,
    a.x,
  ], [
    Math.ceil(a.hidden / 64),
    a.tokensCount,
  ]);
}

const WGSL = /* wgsl */ `
struct Params { T: u32, H: u32, row_base: u32, row_count: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read> tokens: array<u32>;
@group(0) @binding(3) var<storage, read> info: array<u32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let h = gid.x;
  let t = gid.y;
  if (h >= p.H || t >= p.T) { return; }
  let id = tokens[info[t * 4u + 3u]];
  if (id < p.row_base || id - p.row_base >= p.row_count) { return; }
  x[t * p.H + h] = table[(id - p.row_base) * p.H + h];
}
`;
