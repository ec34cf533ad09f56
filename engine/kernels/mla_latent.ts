/**
 * Multi-head latent attention, after q and the compressed K/V projection
 * (DeepSeek-V2/V3): per token, in f32 as transformers computes it,
 *
 *   latent  = RMSNorm(ckv[:, :kvr]) · w_norm                     → latent [T, kvr]
 *   k_rope  = RoPE(ckv[:, kvr:]) at the token's position        → kRope [T, rope]
 *   q_rope  = RoPE(q[:, h, nope:]) for every head h, in place   (q [T, nq, nope + rope])
 *
 * RoPE pairs (2i, 2i + 1) (`interleaved`: DeepSeek-V2's complex rotation and
 * V3's rope_interleave; the rotated pair stays in place, a permutation of
 * V3's de-interleaved output applied alike to q and k, so every q·k is the
 * same) or (i, i + rope/2) (rotate_half), with cos/sin from the table
 * [positions, rope/2, 2] (YaRN's attention factor included). One invocation
 * per token.
 */
import { pipeline, type Recorder } from "../gpu.ts";

export interface MlaLatentArgs {
  /** [T, kvr + rope] */
  ckv: GPUBuffer;
  /** [kvr] kv_a_layernorm weight */
  norm: GPUBuffer;
  /** [positions, rope/2, 2] */
  rope: GPUBuffer;
  info: GPUBuffer;
  latent: GPUBuffer;
  kRope: GPUBuffer;
  /** [T, nq, nope + rope], rotated in place */
  q: GPUBuffer;
  tokens: number;
  kvLoraRank: number;
  ropeDim: number;
  nopeDim: number;
  numHeads: number;
  eps: number;
  interleaved: boolean;
}

export function mlaLatent(rec: Recorder, a: MlaLatentArgs): void {
  const key = `mla_latent:${a.interleaved ? "interleaved" : "half"}`;
  const p = pipeline(rec.ctx, key, () => wgsl(a.interleaved));
  rec.dispatch(
    p,
    [a.tokens, a.kvLoraRank, a.ropeDim, a.nopeDim, a.numHeads, { f32: a.eps }],
    [a.ckv, a.norm, a.rope, a.info, a.latent, a.kRope, a.q],
    [Math.ceil(a.tokens / 64)],
  );
}

function wgsl(interleaved: boolean): string {
  // the two members of pair i and where they sit in a rope part of width p.rope
  const [first, second] = interleaved ? ["2u * i", "2u * i + 1u"] : ["i", "i + half"];
  return /* wgsl */ `
struct Params { T: u32, kvr: u32, rope: u32, nope: u32, nq: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ckv: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> rope: array<f32>;
@group(0) @binding(4) var<storage, read> info: array<u32>;
@group(0) @binding(5) var<storage, read_write> latent: array<f32>;
@group(0) @binding(6) var<storage, read_write> k_rope: array<f32>;
@group(0) @binding(7) var<storage, read_write> q: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = gid.x;
  if (t >= p.T) { return; }
  let pos = info[t * 4u];
  let base = t * (p.kvr + p.rope);
  var ss = 0.0;
  for (var i = 0u; i < p.kvr; i++) { let v = ckv[base + i]; ss += v * v; }
  let inv = inverseSqrt(ss / f32(p.kvr) + p.eps);
  for (var i = 0u; i < p.kvr; i++) { latent[t * p.kvr + i] = w[i] * (ckv[base + i] * inv); }
  let half = p.rope / 2u;
  let table = pos * p.rope;
  for (var i = 0u; i < half; i++) {
    let c = rope[table + 2u * i];
    let s = rope[table + 2u * i + 1u];
    let x1 = ckv[base + p.kvr + ${first}];
    let x2 = ckv[base + p.kvr + ${second}];
    k_rope[t * p.rope + ${first}] = x1 * c - x2 * s;
    k_rope[t * p.rope + ${second}] = x2 * c + x1 * s;
    for (var h = 0u; h < p.nq; h++) {
      let qb = (t * p.nq + h) * (p.nope + p.rope) + p.nope;
      let y1 = q[qb + ${first}];
      let y2 = q[qb + ${second}];
      q[qb + ${first}] = y1 * c - y2 * s;
      q[qb + ${second}] = y2 * c + y1 * s;
    }
  }
}
`;
}
