/**
 * RMSNorm over rows: y[r, :] = w ⊙ (x[r0 + r, :] · 1/sqrt(mean(x²) + eps)),
 * in f32 as Hugging Face's RMSNorm computes it. One invocation per row.
 */
import { pipeline, type Recorder } from "../gpu.ts";

export interface RmsNormArgs {
  x: GPUBuffer;
  weight: GPUBuffer;
  /** Output rows [rows, n], or a write-only texture [n/4 texels, rows] (n % 4 = 0): storage writes are slow on lavapipe. */
  y: GPUBuffer | GPUTextureView;
  rows: number;
  n: number;
  eps: number;
  /** First input row (output rows start at 0). */
  inRowOffset?: number;
}

export function rmsnorm(rec: Recorder, a: RmsNormArgs): void {
  if (!(a.y instanceof GPUBuffer)) {
    if (a.n % 4 !== 0) throw new Error("rmsnorm: a texture output needs n % 4 = 0");
    const p = pipeline(rec.ctx, `rmsnorm:tex:n${a.n}`, () => wgslTex(a.n / 4));
    rec.dispatch(p, [a.rows, a.n / 4, a.inRowOffset ?? 0, { f32: a.eps }], [a.x, a.weight, a.y], [
      Math.ceil(a.rows / 64),
    ]);
    return;
  }
  const p = pipeline(rec.ctx, "rmsnorm", () => WGSL);
  rec.dispatch(p, [a.rows, a.n, a.inRowOffset ?? 0, { f32: a.eps }], [a.x, a.weight, a.y], [
    Math.ceil(a.rows / 64),
  ]);
}

const WGSL = /* wgsl */ `
struct Params { rows: u32, n: u32, in_offset: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let r = gid.x;
  if (r >= p.rows) { return; }
  let src = (p.in_offset + r) * p.n;
  var ss = 0.0;
  for (var i = 0u; i < p.n; i++) { let v = x[src + i]; ss += v * v; }
  let inv = inverseSqrt(ss / f32(p.n) + p.eps);
  let dst = r * p.n;
  for (var i = 0u; i < p.n; i++) { y[dst + i] = w[i] * (x[src + i] * inv); }
}
`;

/** The texture variant reads each row once into registers/private memory (n compiled in). */
function wgslTex(n4: number): string {
  return /* wgsl */ `
const N4 = ${n4}u;
struct Params { rows: u32, n4: u32, in_offset: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(3) var y: texture_storage_2d<rgba32float, write>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let r = gid.x;
  if (r >= p.rows) { return; }
  let src = (p.in_offset + r) * N4;
  var row: array<vec4<f32>, N4>;
  var ss = vec4<f32>(0.0);
  for (var i = 0u; i < N4; i++) { let v = x[src + i]; row[i] = v; ss += v * v; }
  let inv = inverseSqrt((ss.x + ss.y + ss.z + ss.w) / f32(N4 * 4u) + p.eps);
  for (var i = 0u; i < N4; i++) { textureStore(y, vec2<u32>(i, r), w[i] * (row[i] * inv)); }
}
`;
}
