/**
 * Causal grouped-query attention over a KV store. Query token t (position
 * pos, KV row kv_row) of head h attends the keys of its own sequence at rows
 * kv_row − pos + j for lo ≤ j ≤ pos, lo = max(0, pos − W + 1) with a sliding
 * window W (0 = none); kv head = h / (nq / nkv) as Hugging Face's repeat_kv.
 * Scores are scaled by 1/sqrt(d); softmax is computed online in f32.
 * One invocation per (token, head); d is compiled in (a model constant).
 */
import { pipeline, type Recorder } from "../gpu.ts";

export interface AttentionArgs {
  q: GPUBuffer;
  /** Storage K/V stores [rows, nkv·d], or their texture mirrors (kv_texture.ts) when d % 4 = 0. */
  kCache: GPUBuffer | GPUTextureView;
  vCache: GPUBuffer | GPUTextureView;
  info: GPUBuffer;
  out: GPUBuffer;
  tokens: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  window: number | null;
}

export function attention(rec: Recorder, a: AttentionArgs): void {
  const tex = !(a.kCache instanceof GPUBuffer);
  const p = pipeline(
    rec.ctx,
    `attention:d${a.headDim}:${tex ? "tex" : "buf"}`,
    () => wgsl(a.headDim, tex),
  );
  const n = a.tokens * a.numHeads;
  rec.dispatch(
    p,
    [a.tokens, a.numHeads, a.numKvHeads, a.window ?? 0, { f32: 1 / Math.sqrt(a.headDim) }],
    [a.q, a.kCache, a.vCache, a.info, a.out],
    [Math.ceil(n / 64)],
  );
}

/** FLOPs of attention for one query at position pos (scores and weighted sum). */
export function attentionFlops(
  pos: number,
  window: number | null,
  numHeads: number,
  headDim: number,
): number {
  const keys = window === null ? pos + 1 : Math.min(pos + 1, window);
  return 4 * keys * numHeads * headDim;
}

function wgsl(d: number, tex: boolean): string {
  if (tex) return wgslTex(d);
  return /* wgsl */ `
const D = ${d}u;
struct Params { T: u32, nq: u32, nkv: u32, window: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kc: array<f32>;
@group(0) @binding(3) var<storage, read> vc: array<f32>;
@group(0) @binding(4) var<storage, read> info: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let idx = gid.x;
  if (idx >= p.T * p.nq) { return; }
  let t = idx / p.nq;
  let h = idx % p.nq;
  let g = h / (p.nq / p.nkv);
  let pos = info[t * 4u];
  let base_row = info[t * 4u + 1u] - pos;
  var lo = 0u;
  if (p.window > 0u && pos + 1u > p.window) { lo = pos + 1u - p.window; }
  var qv: array<f32, D>;
  var acc: array<f32, D>;
  for (var i = 0u; i < D; i++) { qv[i] = q[(t * p.nq + h) * D + i]; acc[i] = 0.0; }
  var m = -3.0e38;
  var l = 0.0;
  let kv_stride = p.nkv * D;
  for (var j = lo; j <= pos; j++) {
    let kbase = (base_row + j) * kv_stride + g * D;
    var s = 0.0;
    for (var i = 0u; i < D; i++) { s += qv[i] * kc[kbase + i]; }
    s = s * p.scale;
    let m_new = max(m, s);
    let c = exp(m - m_new);
    let e = exp(s - m_new);
    l = l * c + e;
    for (var i = 0u; i < D; i++) { acc[i] = acc[i] * c + e * vc[kbase + i]; }
    m = m_new;
  }
  let inv = 1.0 / l;
  for (var i = 0u; i < D; i++) { out[(t * p.nq + h) * D + i] = acc[i] * inv; }
}
`;
}

/** The texture variant: keys and values as vec4 texels, row = KV row, texel = g·d/4 + i. */
function wgslTex(d: number): string {
  const d4 = d / 4;
  return /* wgsl */ `
const D4 = ${d4}u;
struct Params { T: u32, nq: u32, nkv: u32, window: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var kt: texture_2d<f32>;
@group(0) @binding(3) var vt: texture_2d<f32>;
@group(0) @binding(4) var<storage, read> info: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let idx = gid.x;
  if (idx >= p.T * p.nq) { return; }
  let t = idx / p.nq;
  let h = idx % p.nq;
  let g = h / (p.nq / p.nkv);
  let pos = info[t * 4u];
  let base_row = info[t * 4u + 1u] - pos;
  var lo = 0u;
  if (p.window > 0u && pos + 1u > p.window) { lo = pos + 1u - p.window; }
  var qv: array<vec4<f32>, D4>;
  var acc: array<vec4<f32>, D4>;
  for (var i = 0u; i < D4; i++) { qv[i] = q[(t * p.nq + h) * D4 + i] * p.scale; acc[i] = vec4<f32>(0.0); }
  var m = -3.0e38;
  var l = 0.0;
  let col = g * D4;
  for (var j = lo; j <= pos; j++) {
    let row = base_row + j;
    var s4 = vec4<f32>(0.0);
    for (var i = 0u; i < D4; i++) { s4 += qv[i] * textureLoad(kt, vec2<u32>(col + i, row), 0); }
    let s = s4.x + s4.y + s4.z + s4.w;
    let m_new = max(m, s);
    let c = exp(m - m_new);
    let e = exp(s - m_new);
    l = l * c + e;
    for (var i = 0u; i < D4; i++) { acc[i] = acc[i] * c + e * textureLoad(vt, vec2<u32>(col + i, row), 0); }
    m = m_new;
  }
  let inv = 1.0 / l;
  for (var i = 0u; i < D4; i++) { out[(t * p.nq + h) * D4 + i] = acc[i] * inv; }
}
`;
}
