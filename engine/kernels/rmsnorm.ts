/**
 * RMSNorm over rows: y[r, :] = w ⊙ (x[r0 + r, :] · 1/sqrt(mean(x²) + eps)),
 * in f32 as Hugging Face's RMSNorm computes it.
 *
 * Into a buffer: one invocation per row. Into a texture (the texture path's
 * staging textures, n % 4 = 0): 8 invocations per row, 8 rows per workgroup
 * of 64; each invocation sums the squares of every 8th texel and the 8 sums
 * are added in a tree in workgroup memory. n is a uniform, so one pipeline
 * serves every width (the kernel this replaces held a row in a private array
 * of n compiled in: 59 s to compile at n = 2048 and 613 s at 4096 on
 * lavapipe). A row's arithmetic does not depend on the row count, so a
 * prefill and a decode step normalise a token alike. 8 lanes per row: on
 * lavapipe (8 f32 lanes per SIMD op) as fast as one invocation per row, and
 * 2 to 7× faster than 64 per row (a tree of 6 barriers per row).
 *
 * The texture variant can also write the same values into a buffer
 * (`yBuffer`), for readers of the rows on storage.
 */
import { pipeline, type Recorder } from "../gpu.ts";

export interface RmsNormArgs {
  x: GPUBuffer;
  weight: GPUBuffer;
  /** Output rows [rows, n], or a write-only texture [n/4 texels, rows] (n % 4 = 0): storage writes are slow on lavapipe. */
  y: GPUBuffer | GPUTextureView;
  /** With a texture `y`: also write the rows into this buffer [rows, n]. */
  yBuffer?: GPUBuffer;
  rows: number;
  n: number;
  eps: number;
  /** First input row (output rows start at 0). */
  inRowOffset?: number;
}

/** Invocations per row of the texture variant, and rows per workgroup of 64. */
const LANES = 8;
const ROWS = 64 / LANES;

export function rmsnorm(rec: Recorder, a: RmsNormArgs): void {
  if (!(a.y instanceof GPUBuffer)) {
    if (a.n % 4 !== 0) throw new Error("rmsnorm: a texture output needs n % 4 = 0");
    const both = a.yBuffer !== undefined;
    const p = pipeline(rec.ctx, `rmsnorm:tex${both ? "+buffer" : ""}`, () => wgslTex(both));
    rec.dispatch(
      p,
      [a.rows, a.n / 4, a.inRowOffset ?? 0, { f32: a.eps }],
      [a.x, a.weight, a.y, ...(a.yBuffer ? [a.yBuffer] : [])],
      [Math.ceil(a.rows / ROWS)],
    );
    return;
  }
  if (a.yBuffer) throw new Error("rmsnorm: yBuffer goes with a texture output");
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

/** The texture variant: LANES invocations per row, its n/4 texels strided over them. */
function wgslTex(both: boolean): string {
  return /* wgsl */ `
struct Params { rows: u32, n4: u32, in_offset: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(3) var y: texture_storage_2d<rgba32float, write>;
${both ? "@group(0) @binding(4) var<storage, read_write> yb: array<vec4<f32>>;" : ""}

const LANES = ${LANES}u;
const ROWS = ${ROWS}u;
var<workgroup> part: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let lane = t % LANES;
  let r = wg.x * ROWS + t / LANES;
  let live = r < p.rows;
  let src = (p.in_offset + r) * p.n4;
  var ss = vec4<f32>(0.0);
  if (live) {
    for (var i = lane; i < p.n4; i += LANES) { let v = x[src + i]; ss += v * v; }
  }
  part[t] = (ss.x + ss.y) + (ss.z + ss.w);
  workgroupBarrier();
  for (var s = LANES / 2u; s > 0u; s >>= 1u) {
    if (lane < s) { part[t] += part[t + s]; }
    workgroupBarrier();
  }
  if (!live) { return; }
  let inv = inverseSqrt(part[t - lane] / f32(p.n4 * 4u) + p.eps);
  for (var i = lane; i < p.n4; i += LANES) {
    let v = w[i] * (x[src + i] * inv);
    textureStore(y, vec2<u32>(i, r), v);
    ${both ? "yb[r * p.n4 + i] = v;" : ""}
  }
}
`;
}
