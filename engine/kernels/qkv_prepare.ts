/**
 * After the fused q|k|v projection: optional q/k RMSNorm (over the whole
 * projection, OLMoE, or per head, Qwen3, GLM), optional clamp to ±clip_qkv
 * (OLMoE, after the norms), RoPE on the first `ropeDim` dimensions of each q
 * and k head (Hugging Face's rotate_half convention, pairs (i, i + ropeDim/2);
 * the rest pass through, GLM's partial rotary; cos/sin from a table
 * [positions, ropeDim/2, 2] computed on the CPU), then q to its buffer and k,
 * v into the layer's KV store at row `info[t].kv_row`.
 * One invocation per token.
 */
import { pipeline, type Recorder } from "../gpu.ts";

export interface QkvPrepareArgs {
  /** [T, (nq + 2 nkv) d] */
  qkv: GPUBuffer;
  /** [positions, d/2, 2] cos, sin */
  rope: GPUBuffer;
  info: GPUBuffer;
  q: GPUBuffer;
  kCache: GPUBuffer;
  vCache: GPUBuffer;
  qNorm?: GPUBuffer;
  kNorm?: GPUBuffer;
  tokens: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** Rotated dimensions per head (even, ≤ headDim). */
  ropeDim: number;
  eps: number;
  /** 0 = no clamp. */
  clip: number;
}

export function qkvPrepare(
  rec: Recorder,
  a: QkvPrepareArgs,
  norm: "none" | "whole" | "per_head",
): void {
  const clip = a.clip > 0;
  const p = pipeline(rec.ctx, `qkv_prepare:${norm}:${clip ? "clip" : ""}`, () => wgsl(norm, clip));
  const buffers = [a.qkv, a.rope, a.info, a.q, a.kCache, a.vCache];
  if (norm !== "none") buffers.push(a.qNorm!, a.kNorm!);
  rec.dispatch(
    p,
    [a.tokens, a.numHeads, a.numKvHeads, a.headDim, { f32: a.eps }, { f32: a.clip }, a.ropeDim],
    buffers,
    [Math.ceil(a.tokens / 64)],
  );
}

function wgsl(norm: "none" | "whole" | "per_head", clip: boolean): string {
  const normBindings = norm === "none" ? "" : `
@group(0) @binding(7) var<storage, read> qn: array<f32>;
@group(0) @binding(8) var<storage, read> kn: array<f32>;`;
  // value(i) of q (which = 0) or k (which = 1) head h, element i, after norm and clamp
  const normExpr = norm === "none"
    ? "v"
    : norm === "whole"
    ? "select(kn[h * p.d + i], qn[h * p.d + i], which == 0u) * (v * inv)"
    : "select(kn[i], qn[i], which == 0u) * (v * inv)";
  return /* wgsl */ `
struct Params { T: u32, nq: u32, nkv: u32, d: u32, eps: f32, clip: f32, rd: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> rope: array<f32>;
@group(0) @binding(3) var<storage, read> info: array<u32>;
@group(0) @binding(4) var<storage, read_write> q: array<f32>;
@group(0) @binding(5) var<storage, read_write> kc: array<f32>;
@group(0) @binding(6) var<storage, read_write> vc: array<f32>;
${normBindings}

fn value(base: u32, which: u32, h: u32, i: u32, inv: f32) -> f32 {
  let v = qkv[base + h * p.d + i];
  var r = ${normExpr};
  ${clip ? "r = clamp(r, -p.clip, p.clip);" : ""}
  return r;
}

fn inv_rms(start: u32, len: u32) -> f32 {
  var ss = 0.0;
  for (var i = 0u; i < len; i++) { let v = qkv[start + i]; ss += v * v; }
  return inverseSqrt(ss / f32(len) + p.eps);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = gid.x;
  if (t >= p.T) { return; }
  let width = (p.nq + 2u * p.nkv) * p.d;
  let row = t * width;
  let pos = info[t * 4u];
  let kv_row = info[t * 4u + 1u];
  let half = p.rd / 2u;
  let rope_base = pos * p.rd;
  for (var which = 0u; which < 2u; which++) {
    let heads = select(p.nkv, p.nq, which == 0u);
    let base = row + select(p.nq * p.d, 0u, which == 0u);
    var inv = 1.0;
    ${norm === "whole" ? "inv = inv_rms(base, heads * p.d);" : ""}
    for (var h = 0u; h < heads; h++) {
      ${norm === "per_head" ? "inv = inv_rms(base + h * p.d, p.d);" : ""}
      for (var i = 0u; i < half; i++) {
        let c = rope[rope_base + 2u * i];
        let s = rope[rope_base + 2u * i + 1u];
        let x1 = value(base, which, h, i, inv);
        let x2 = value(base, which, h, i + half, inv);
        let o1 = x1 * c - x2 * s;
        let o2 = x2 * c + x1 * s;
        if (which == 0u) {
          q[t * p.nq * p.d + h * p.d + i] = o1;
          q[t * p.nq * p.d + h * p.d + i + half] = o2;
        } else {
          kc[kv_row * p.nkv * p.d + h * p.d + i] = o1;
          kc[kv_row * p.nkv * p.d + h * p.d + i + half] = o2;
        }
      }
      for (var i = p.rd; i < p.d; i++) {
        let x = value(base, which, h, i, inv);
        if (which == 0u) { q[t * p.nq * p.d + h * p.d + i] = x; }
        else { kc[kv_row * p.nkv * p.d + h * p.d + i] = x; }
      }
    }
  }
  let vbase = row + (p.nq + p.nkv) * p.d;
  for (var i = 0u; i < p.nkv * p.d; i++) {
    var v = qkv[vbase + i];
    ${clip ? "v = clamp(v, -p.clip, p.clip);" : ""}
    vc[kv_row * p.nkv * p.d + i] = v;
  }
}
`;
}

export interface QkvPrepareTexArgs {
  /** [(nq + 2 nkv) d / 4 texels, T rows] */
  qkv: GPUTextureView;
  rope: GPUBuffer;
  info: GPUBuffer;
  /** Write-only textures: q [nq d / 4, T]; the layer's K and V mirrors [nkv d / 4, rows] at kv_row. */
  q: GPUTextureView;
  kTex: GPUTextureView;
  vTex: GPUTextureView;
  qNorm?: GPUBuffer;
  kNorm?: GPUBuffer;
  tokens: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  ropeDim: number;
  eps: number;
  clip: number;
}

/**
 * The texture variant (d % 8 = 0): reads q|k|v as texels, computes the token's
 * cos/sin once for all heads, and writes q and the K/V mirrors with
 * textureStore (no storage traffic, no separate kv_texture pass). d is compiled in.
 */
export function qkvPrepareTex(
  rec: Recorder,
  a: QkvPrepareTexArgs,
  norm: "none" | "whole" | "per_head",
): void {
  if (a.headDim % 8 !== 0) throw new Error("qkvPrepareTex needs head_dim % 8 = 0");
  const clip = a.clip > 0;
  const rd = a.ropeDim;
  const key = `qkv_prepare_tex:${norm}:${clip ? "clip" : ""}:d${a.headDim}${
    rd !== a.headDim ? `:rd${rd}` : ""
  }`;
  const p = pipeline(rec.ctx, key, () => wgslTex(norm, clip, a.headDim, rd));
  const bindings = [a.qkv, a.rope, a.info, a.q, a.kTex, a.vTex];
  if (norm !== "none") bindings.push(a.qNorm!, a.kNorm!);
  rec.dispatch(
    p,
    [a.tokens, a.numHeads, a.numKvHeads, { f32: a.eps }, { f32: a.clip }],
    bindings,
    [Math.ceil(a.tokens / 64)],
  );
}

function wgslTex(
  norm: "none" | "whole" | "per_head",
  clip: boolean,
  d: number,
  rd: number,
): string {
  const d4 = d / 4, half = rd / 2;
  const normBindings = norm === "none" ? "" : `
@group(0) @binding(7) var<storage, read> qn: array<f32>;
@group(0) @binding(8) var<storage, read> kn: array<f32>;`;
  const weight = (which: string) => norm === "whole" ? `${which}[h * D + i]` : `${which}[i]`;
  return /* wgsl */ `
const D = ${d}u;
const D4 = ${d4}u;
const RD = ${rd}u;
const HALF = ${half}u;
struct Params { T: u32, nq: u32, nkv: u32, eps: f32, clip: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var qkv: texture_2d<f32>;
@group(0) @binding(2) var<storage, read> rope: array<f32>;
@group(0) @binding(3) var<storage, read> info: array<u32>;
@group(0) @binding(4) var qt: texture_storage_2d<rgba32float, write>;
@group(0) @binding(5) var kt: texture_storage_2d<rgba32float, write>;
@group(0) @binding(6) var vt: texture_storage_2d<rgba32float, write>;
${normBindings}

fn inv_rms(t: u32, first: u32, texels: u32) -> f32 {
  var ss = vec4<f32>(0.0);
  for (var j = 0u; j < texels; j++) { let v = textureLoad(qkv, vec2<u32>(first + j, t), 0); ss += v * v; }
  return inverseSqrt((ss.x + ss.y + ss.z + ss.w) / f32(texels * 4u) + p.eps);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = gid.x;
  if (t >= p.T) { return; }
  let pos = info[t * 4u];
  let kv_row = info[t * 4u + 1u];
  var cs: array<f32, HALF>;
  var sn: array<f32, HALF>;
  for (var i = 0u; i < HALF; i++) { cs[i] = rope[pos * RD + 2u * i]; sn[i] = rope[pos * RD + 2u * i + 1u]; }
  var x: array<f32, D>;
  var o: array<f32, D>;
  for (var which = 0u; which < 2u; which++) {
    let heads = select(p.nkv, p.nq, which == 0u);
    let first = select(p.nq * D4, 0u, which == 0u);
    var inv = 1.0;
    ${norm === "whole" ? "inv = inv_rms(t, first, heads * D4);" : ""}
    for (var h = 0u; h < heads; h++) {
      ${norm === "per_head" ? "inv = inv_rms(t, first + h * D4, D4);" : ""}
      for (var j = 0u; j < D4; j++) {
        let v = textureLoad(qkv, vec2<u32>(first + h * D4 + j, t), 0);
        x[4u * j] = v.x; x[4u * j + 1u] = v.y; x[4u * j + 2u] = v.z; x[4u * j + 3u] = v.w;
      }
      for (var i = 0u; i < D; i++) {
        var r = x[i];
        ${
    norm === "none" ? "" : `r = select(${weight("kn")}, ${weight("qn")}, which == 0u) * (r * inv);`
  }
        ${clip ? "r = clamp(r, -p.clip, p.clip);" : ""}
        x[i] = r;
      }
      for (var i = 0u; i < HALF; i++) {
        o[i] = x[i] * cs[i] - x[i + HALF] * sn[i];
        o[i + HALF] = x[i + HALF] * cs[i] + x[i] * sn[i];
      }
      for (var i = RD; i < D; i++) { o[i] = x[i]; }
      for (var j = 0u; j < D4; j++) {
        let texel = vec4<f32>(o[4u * j], o[4u * j + 1u], o[4u * j + 2u], o[4u * j + 3u]);
        if (which == 0u) { textureStore(qt, vec2<u32>(h * D4 + j, t), texel); }
        else { textureStore(kt, vec2<u32>(h * D4 + j, kv_row), texel); }
      }
    }
  }
  let vfirst = (p.nq + p.nkv) * D4;
  for (var j = 0u; j < p.nkv * D4; j++) {
    var v = textureLoad(qkv, vec2<u32>(vfirst + j, t), 0);
    ${clip ? "v = clamp(v, vec4<f32>(-p.clip), vec4<f32>(p.clip));" : ""}
    textureStore(vt, vec2<u32>(j, kv_row), v);
  }
}
`;
}
