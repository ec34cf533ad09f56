/**
 * Weighted scatter back to tokens: x[t, :] += Σ_j y[slot_of[t·k + j], :]
 * (the expert outputs y are already multiplied by their gate weights in the
 * down projection's epilogue). Also adds the residual, since x is the stream.
 */
import { pipeline, type Recorder } from "../gpu.ts";

export interface MoeCombineArgs {
  /** Expert outputs [T·k, H], or a texture of them [H/4 texels, T·k rows] (H % 4 = 0). */
  y: GPUBuffer | GPUTextureView;
  slotOf: GPUBuffer;
  x: GPUBuffer;
  tokens: number;
  topK: number;
  hidden: number;
}

export function moeCombine(rec: Recorder, a: MoeCombineArgs): void {
  if (!(a.y instanceof GPUBuffer)) {
    const p = pipeline(rec.ctx, "moe_combine:tex", () => WGSL_TEX);
    rec.dispatch(p, [a.tokens, a.topK, a.hidden / 4], [a.y, a.slotOf, a.x], [
      Math.ceil(a.hidden / 4 / 64),
      a.tokens,
    ]);
    return;
  }
  const p = pipeline(rec.ctx, "moe_combine", () => WGSL);
  rec.dispatch(p, [a.tokens, a.topK, a.hidden], [a.y, a.slotOf, a.x], [
    Math.ceil(a.hidden / 64),
    a.tokens,
  ]);
}

const WGSL = /* wgsl */ `
struct Params { T: u32, k: u32, H: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> slot_of: array<u32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let h = gid.x;
  let t = gid.y;
  if (h >= p.H || t >= p.T) { return; }
  var s = 0.0;
  for (var j = 0u; j < p.k; j++) { s += y[slot_of[t * p.k + j] * p.H + h]; }
  x[t * p.H + h] = x[t * p.H + h] + s;
}
`;

const WGSL_TEX = /* wgsl */ `
struct Params { T: u32, k: u32, H4: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var yt: texture_2d<f32>;
@group(0) @binding(2) var<storage, read> slot_of: array<u32>;
@group(0) @binding(3) var<storage, read_write> x: array<vec4<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let h = gid.x;
  let t = gid.y;
  if (h >= p.H4 || t >= p.T) { return; }
  var s = vec4<f32>(0.0);
  for (var j = 0u; j < p.k; j++) { s += textureLoad(yt, vec2<u32>(h, slot_of[t * p.k + j]), 0); }
  x[t * p.H4 + h] = x[t * p.H4 + h] + s;
}
`;
