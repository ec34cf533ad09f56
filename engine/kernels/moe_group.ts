/**
 * Groups the T·k (token, choice) pairs by expert for the grouped expert
 * matmuls, in one workgroup: counts per expert (atomics), offsets (prefix
 * sum), each pair's slot in expert order (`slot_of`), each slot's token and
 * gate weight (`row_token`, `row_weight`), and the tile list the grouped
 * matmul walks: (expert, first slot, end slot) per `tile_rows` slots of one
 * expert, padded with expert 0xffffffff up to `max_tiles` (= ceil(T·k /
 * tile_rows) + E, an upper bound, so no readback is needed). A row's weight
 * is its gate weight times `weightScale` (Granite's residual multiplier; 1
 * leaves it bit for bit).
 */
import { pipeline, type Recorder } from "../gpu.ts";

export interface MoeGroupArgs {
  choice: GPUBuffer;
  choiceWeight: GPUBuffer;
  rowToken: GPUBuffer;
  rowWeight: GPUBuffer;
  slotOf: GPUBuffer;
  tiles: GPUBuffer;
  tokens: number;
  topK: number;
  numExperts: number;
  tileRows: number;
  /** Multiplies every row weight (default 1). */
  weightScale?: number;
}

export function maxTiles(pairs: number, numExperts: number, tileRows: number): number {
  return Math.ceil(pairs / tileRows) + numExperts;
}

export function moeGroup(rec: Recorder, a: MoeGroupArgs): void {
  if (a.numExperts > 256) throw new Error("moe_group supports at most 256 experts");
  const p = pipeline(rec.ctx, "moe_group", () => WGSL);
  const pairs = a.tokens * a.topK;
  rec.dispatch(
    p,
    [
      pairs,
      a.topK,
      a.numExperts,
      a.tileRows,
      maxTiles(pairs, a.numExperts, a.tileRows),
      { f32: a.weightScale ?? 1 },
    ],
    [a.choice, a.choiceWeight, a.rowToken, a.rowWeight, a.slotOf, a.tiles],
    [1],
  );
}

const WGSL = /* wgsl */ `
struct Params { S: u32, k: u32, E: u32, tile_rows: u32, max_tiles: u32, weight_scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> choice: array<u32>;
@group(0) @binding(2) var<storage, read> choice_weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> row_token: array<u32>;
@group(0) @binding(4) var<storage, read_write> row_weight: array<f32>;
@group(0) @binding(5) var<storage, read_write> slot_of: array<u32>;
@group(0) @binding(6) var<storage, read_write> tiles: array<u32>;

var<workgroup> counts: array<atomic<u32>, 256>;
var<workgroup> offsets: array<u32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
  atomicStore(&counts[lid], 0u);
  workgroupBarrier();
  for (var i = lid; i < p.S; i += 256u) {
    slot_of[i] = atomicAdd(&counts[choice[i]], 1u);
  }
  workgroupBarrier();
  if (lid == 0u) {
    var off = 0u;
    var nt = 0u;
    for (var e = 0u; e < p.E; e++) {
      let c = atomicLoad(&counts[e]);
      offsets[e] = off;
      for (var s = 0u; s < c; s += p.tile_rows) {
        tiles[nt * 3u] = e;
        tiles[nt * 3u + 1u] = off + s;
        tiles[nt * 3u + 2u] = off + min(s + p.tile_rows, c);
        nt++;
      }
      off += c;
    }
    for (var t = nt; t < p.max_tiles; t++) { tiles[t * 3u] = 0xffffffffu; }
  }
  workgroupBarrier();
  for (var i = lid; i < p.S; i += 256u) {
    let slot = offsets[choice[i]] + slot_of[i];
    slot_of[i] = slot;
    row_token[slot] = i / p.k;
    row_weight[slot] = choice_weight[i] * p.weight_scale;
  }
}
`;
