/**
 * Multi-head latent attention's keys and values into the layer's K/V store:
 * the up-projection kv [T, nq, nope + dv] of the latent gives each head's
 * k_nope | v; each head's key is [k_nope | k_rope] with the rope key shared
 * by all heads (transformers' expand_kv). Row `info[t].kv_row` of K
 * [rows, nq, nope + rope] and V [rows, nq, dv]. One invocation per (head,
 * token).
 */
import { pipeline, type Recorder } from "../gpu.ts";

export interface MlaKvArgs {
  /** [T, nq (nope + dv)] */
  kv: GPUBuffer;
  /** [T, rope] */
  kRope: GPUBuffer;
  info: GPUBuffer;
  kCache: GPUBuffer;
  vCache: GPUBuffer;
  tokens: number;
  numHeads: number;
  nopeDim: number;
  ropeDim: number;
  vHeadDim: number;
}

export function mlaKv(rec: Recorder, a: MlaKvArgs): void {
  const p = pipeline(rec.ctx, "mla_kv", () => WGSL);
  rec.dispatch(
    p,
    [a.tokens, a.numHeads, a.nopeDim, a.ropeDim, a.vHeadDim],
    [a.kv, a.kRope, a.info, a.kCache, a.vCache],
    [Math.ceil(a.numHeads / 64), a.tokens],
  );
}

const WGSL = /* wgsl */ `
struct Params { T: u32, nq: u32, nope: u32, rope: u32, dv: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> kv: array<f32>;
@group(0) @binding(2) var<storage, read> k_rope: array<f32>;
@group(0) @binding(3) var<storage, read> info: array<u32>;
@group(0) @binding(4) var<storage, read_write> kc: array<f32>;
@group(0) @binding(5) var<storage, read_write> vc: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let h = gid.x;
  let t = gid.y;
  if (h >= p.nq || t >= p.T) { return; }
  let row = info[t * 4u + 1u];
  let qk = p.nope + p.rope;
  let src = (t * p.nq + h) * (p.nope + p.dv);
  let kb = (row * p.nq + h) * qk;
  for (var i = 0u; i < p.nope; i++) { kc[kb + i] = kv[src + i]; }
  for (var i = 0u; i < p.rope; i++) { kc[kb + p.nope + i] = k_rope[t * p.rope + i]; }
  let vb = (row * p.nq + h) * p.dv;
  for (var i = 0u; i < p.dv; i++) { vc[vb + i] = kv[src + p.nope + i]; }
}
`;
