/**
 * Causal grouped-query attention over a KV store. Query token t (position
 * pos, KV row kv_row) of head h attends the keys of its own sequence at rows
 * kv_row − pos + j for lo ≤ j ≤ pos, lo = max(0, pos − W + 1) with a sliding
 * window W (0 = none); kv head = h / (nq / nkv) as Hugging Face's repeat_kv.
 * Scores are multiplied by `scale` (1/√d, Granite's attention_multiplier,
 * MLA's YaRN-corrected scale); softmax is computed online in f32. With
 * `sinks` (gpt-oss) head h's learned logit sinks[h] joins the softmax's
 * denominator and is dropped from its output: the online softmax starts from
 * m = sinks[h], l = 1 instead of m = −∞, l = 0. Values may be narrower than
 * keys (`vHeadDim`, MLA; storage variant).
 * One invocation per (token, head); d is compiled in (a model constant).
 */
import { pipeline, type Recorder } from "../gpu.ts";

export interface AttentionArgs {
  /** Queries [T, nq·d]; a texture [nq·d/4, T] in the texture variant's "io" form. */
  q: GPUBuffer | GPUTextureView;
  /** Storage K/V stores [rows, nkv·d], or their texture mirrors (kv_texture.ts) when d % 4 = 0. */
  kCache: GPUBuffer | GPUTextureView;
  vCache: GPUBuffer | GPUTextureView;
  info: GPUBuffer;
  /** Output [T, nq·d], or a write-only texture [nq·d/4, T] (then q must be a texture too). */
  out: GPUBuffer | GPUTextureView;
  tokens: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  window: number | null;
  /** Score scale. */
  scale: number;
  /** [nq] sink logits (gpt-oss). */
  sinks?: GPUBuffer;
  /** Value head dimension (default headDim; storage variant only when different). */
  vHeadDim?: number;
}

export function attention(rec: Recorder, a: AttentionArgs): void {
  const tex = !(a.kCache instanceof GPUBuffer);
  const io = !(a.q instanceof GPUBuffer);
  if (io && (!tex || a.out instanceof GPUBuffer)) {
    throw new Error("attention: texture q needs texture K/V and output");
  }
  const dv = a.vHeadDim ?? a.headDim;
  if (tex && dv !== a.headDim) throw new Error("attention: texture K/V need equal k and v widths");
  const sinks = a.sinks !== undefined;
  const key = `attention:d${a.headDim}:${tex ? "tex" : "buf"}${io ? ":io" : ""}${
    dv !== a.headDim ? `:dv${dv}` : ""
  }${sinks ? ":sinks" : ""}`;
  const p = pipeline(
    rec.ctx,
    key,
    () => (tex ? wgslTex(a.headDim, io, sinks) : wgsl(a.headDim, dv, sinks)),
  );
  const n = (tex ? Math.ceil(a.tokens / QUERY_BLOCK) : a.tokens) * a.numHeads;
  const buffers = [a.q, a.kCache, a.vCache, a.info, a.out];
  if (a.sinks) buffers.push(a.sinks);
  rec.dispatch(
    p,
    [a.tokens, a.numHeads, a.numKvHeads, a.window ?? 0, { f32: a.scale }],
    buffers,
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

function wgsl(d: number, dv: number, sinks: boolean): string {
  return /* wgsl */ `
const D = ${d}u;
const DV = ${dv}u;
struct Params { T: u32, nq: u32, nkv: u32, window: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kc: array<f32>;
@group(0) @binding(3) var<storage, read> vc: array<f32>;
@group(0) @binding(4) var<storage, read> info: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
${sinks ? "@group(0) @binding(6) var<storage, read> sinks: array<f32>;" : ""}

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
  var acc: array<f32, DV>;
  for (var i = 0u; i < D; i++) { qv[i] = q[(t * p.nq + h) * D + i]; }
  for (var i = 0u; i < DV; i++) { acc[i] = 0.0; }
  var m = ${sinks ? "sinks[h]" : "-3.0e38"};
  var l = ${sinks ? "1.0" : "0.0"};
  let kv_stride = p.nkv * D;
  for (var j = lo; j <= pos; j++) {
    let kbase = (base_row + j) * kv_stride + g * D;
    let vbase = (base_row + j) * p.nkv * DV + g * DV;
    var s = 0.0;
    for (var i = 0u; i < D; i++) { s += qv[i] * kc[kbase + i]; }
    s = s * p.scale;
    let m_new = max(m, s);
    let c = exp(m - m_new);
    let e = exp(s - m_new);
    l = l * c + e;
    for (var i = 0u; i < DV; i++) { acc[i] = acc[i] * c + e * vc[vbase + i]; }
    m = m_new;
  }
  let inv = 1.0 / l;
  for (var i = 0u; i < DV; i++) { out[(t * p.nq + h) * DV + i] = acc[i] * inv; }
}
`;
}

/**
 * The texture variant: keys and values as vec4 texels (row = KV row, texel =
 * g·d/4 + i), head vectors unrolled into registers, and QB consecutive query
 * tokens per invocation sharing every key/value fetch; each query keeps its own
 * causal window and online softmax, so blocks may straddle sequences.
 */
export const QUERY_BLOCK = 4;

function wgslTex(d: number, io: boolean, sinks: boolean): string {
  const d4 = d / 4, QB = QUERY_BLOCK;
  const I = Array.from({ length: d4 }, (_, i) => i), Q = Array.from({ length: QB }, (_, b) => b);
  return /* wgsl */ `
struct Params { T: u32, nq: u32, nkv: u32, window: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
${
    io
      ? "@group(0) @binding(1) var qt: texture_2d<f32>;"
      : "@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;"
  }
@group(0) @binding(2) var kt: texture_2d<f32>;
@group(0) @binding(3) var vt: texture_2d<f32>;
@group(0) @binding(4) var<storage, read> info: array<u32>;
${
    io
      ? "@group(0) @binding(5) var ot: texture_storage_2d<rgba32float, write>;"
      : "@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;"
  }
${sinks ? "@group(0) @binding(6) var<storage, read> sinks: array<f32>;" : ""}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let blocks = (p.T + ${QB - 1}u) / ${QB}u;
  let idx = gid.x;
  if (idx >= blocks * p.nq) { return; }
  let h = idx % p.nq;
  let tb = (idx / p.nq) * ${QB}u;
  let col = (h / (p.nq / p.nkv)) * ${d4}u;
  var first = 0xffffffffu;
  var last = 0u;
  ${
    Q.map((b) => `
  let t${b} = min(tb + ${b}u, p.T - 1u);
  let pos${b} = info[t${b} * 4u];
  let hi${b} = info[t${b} * 4u + 1u];
  var lo${b} = hi${b} - pos${b};
  if (p.window > 0u && pos${b} + 1u > p.window) { lo${b} = hi${b} + 1u - p.window; }
  first = min(first, lo${b}); last = max(last, hi${b});
  ${
      I.map((i) =>
        `let q${b}_${i} = ${
          io
            ? `textureLoad(qt, vec2<u32>(h * ${d4}u + ${i}u, t${b}), 0)`
            : `q[(t${b} * p.nq + h) * ${d4}u + ${i}u]`
        } * p.scale;`
      ).join(" ")
    }
  ${I.map((i) => `var a${b}_${i} = vec4<f32>(0.0);`).join(" ")}
  var m${b} = ${sinks ? "sinks[h]" : "-3.0e38"}; var l${b} = ${sinks ? "1.0" : "0.0"};`).join("")
  }
  for (var r = first; r <= last; r++) {
    ${I.map((i) => `let k${i} = textureLoad(kt, vec2<u32>(col + ${i}u, r), 0);`).join(" ")}
    ${I.map((i) => `let v${i} = textureLoad(vt, vec2<u32>(col + ${i}u, r), 0);`).join(" ")}
    ${
    Q.map((b) => `
    if (r >= lo${b} && r <= hi${b}) {
      let s4 = ${I.map((i) => `q${b}_${i} * k${i}`).join(" + ")};
      let s = s4.x + s4.y + s4.z + s4.w;
      let mn = max(m${b}, s);
      let c = exp(m${b} - mn);
      let e = exp(s - mn);
      l${b} = l${b} * c + e;
      ${I.map((i) => `a${b}_${i} = a${b}_${i} * c + e * v${i};`).join(" ")}
      m${b} = mn;
    }`).join("")
  }
  }
  ${
    Q.map((b) => `
  if (tb + ${b}u < p.T) {
    let inv${b} = 1.0 / l${b};
    ${
      I.map((i) =>
        io
          ? `textureStore(ot, vec2<u32>(h * ${d4}u + ${i}u, t${b}), a${b}_${i} * inv${b});`
          : `out[(t${b} * p.nq + h) * ${d4}u + ${i}u] = a${b}_${i} * inv${b};`
      ).join(" ")
    }
  }`).join("")
  }
}
`;
}
