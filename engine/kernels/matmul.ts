/**
 * Y = epilogue(A · W), the engine's one matrix multiply, register-tiled: each
 * invocation computes 4 rows × 4 columns with vec4 loads and no workgroup
 * memory (12× faster than shared-memory tiles on llvmpipe, DESIGN.md).
 *
 * W is stored transposed, [K, N] row-major (`in × out`), so that neighbouring
 * invocations load neighbouring vec4s of a W row; A is [rows, K].
 *
 * Modes
 * - dense: output row m reads A row `a_row_offset + m`.
 * - grouped (experts): workgroup row y is an entry of a tile list written by
 *   moe_group.ts, `(expert, first slot, end slot)`; W is [E_chunk, K, N], the
 *   expert's matrix at `(expert − expert_base)·K·N`; with `gather`, slot s reads
 *   A row `row_token[s]`, else A row s. Output row = slot.
 * Epilogues (variant flags, part of the cache key)
 * - swiglu: a second weight W3 of the same shape; y = silu(A·W) ⊙ (A·W3)
 * - bias: y += bias[n]
 * - scale "row": y *= scale[out row] (gate weight of a slot);
 *   "sigmoid": y *= sigmoid(scale[out row]) (shared-expert gate)
 * - alpha: value *= alpha (a uniform; after the bias: Granite's residual
 *   multiplier and logits scaling)
 * - accumulate: y[m, n] += value (residual adds), else y[m, n] = value
 */
import type { Recorder } from "../gpu.ts";
import { pipeline } from "../gpu.ts";

/** Invocations along N per workgroup; each covers 4 columns. */
const WGX = 16;

export interface MatmulVariant {
  grouped?: boolean;
  gather?: boolean;
  swiglu?: boolean;
  bias?: boolean;
  scale?: "row" | "sigmoid";
  /** Multiply the output (after any bias) by `alpha`. */
  alpha?: boolean;
  accumulate?: boolean;
  /** Row groups of 4 per workgroup (1 for decode, 4 for prefill). */
  rowGroups?: 1 | 4;
}

export interface MatmulArgs {
  a: GPUBuffer;
  w: GPUBuffer;
  w3?: GPUBuffer;
  y: GPUBuffer;
  bias?: GPUBuffer;
  scale?: GPUBuffer;
  tiles?: GPUBuffer;
  rowToken?: GPUBuffer;
  /** Output rows (dense), or the tile-list length (grouped). */
  rows: number;
  n: number;
  k: number;
  aRowOffset?: number;
  /** Row stride of Y in elements (default n) and first column written (default 0). */
  yStride?: number;
  yCol?: number;
  /** Grouped: experts held by `w` start at expertBase, expertCount of them. */
  expertBase?: number;
  expertCount?: number;
  /** The `alpha` variant's factor. */
  alpha?: number; /**
   * A piece of a split weight (weight_reader.ts `LinearPiece`): the first
   * column of A read (a multiple of 64 on textures), A's row length (default
   * k), and the first bias element (default 0).
   */

  aCol?: number;
  aStride?: number;
  biasCol?: number;
}

/** Rows a grouped tile covers for a row-group setting. */
export function tileRows(rowGroups: 1 | 4): number {
  return 4 * rowGroups;
}

export function matmul(rec: Recorder, args: MatmulArgs, variant: MatmulVariant = {}): void {
  const v = { rowGroups: 1 as 1 | 4, ...variant };
  if (v.swiglu && !args.w3) throw new Error("matmul: swiglu needs w3");
  if (v.bias && !args.bias) throw new Error("matmul: bias variant needs a bias buffer");
  if (v.scale && !args.scale) throw new Error("matmul: scale variant needs a scale buffer");
  if (v.grouped && !args.tiles) throw new Error("matmul: grouped needs a tile list");
  if (v.gather && !args.rowToken) throw new Error("matmul: gather needs row_token");
  const k4 = args.k % 4 === 0, n4 = args.n % 4 === 0;
  const key = [
    "matmul",
    v.grouped ? "grouped" : "dense",
    v.gather ? "gather" : "",
    v.swiglu ? "swiglu" : "",
    v.bias ? "bias" : "",
    v.scale ?? "",
    v.accumulate ? "acc" : "",
    ...(v.alpha ? ["alpha"] : []),
    `r${v.rowGroups}`,
    k4 ? "k4" : "k1",
    n4 ? "n4" : "n1",
  ].join(":");
  const p = pipeline(rec.ctx, key, () => wgsl(v, k4, n4));
  const buffers = [args.a, args.w, args.y];
  if (v.swiglu) buffers.push(args.w3!);
  if (v.bias) buffers.push(args.bias!);
  if (v.scale) buffers.push(args.scale!);
  if (v.grouped) buffers.push(args.tiles!);
  if (v.gather) buffers.push(args.rowToken!);
  const uniforms = [
    args.rows,
    args.n,
    args.k,
    args.aRowOffset ?? 0,
    args.yStride ?? args.n,
    args.yCol ?? 0,
    args.expertBase ?? 0,
    args.expertCount ?? 0xffffffff,
    { f32: args.alpha ?? 1 },
    args.aCol ?? 0,
    args.aStride ?? args.k,
    args.biasCol ?? 0,
  ];
  const colGroups = Math.ceil(args.n / (4 * WGX));
  const rowWorkgroups = v.grouped ? args.rows : Math.ceil(args.rows / (4 * v.rowGroups));
  rec.dispatch(p, uniforms, buffers, [colGroups, rowWorkgroups]);
}

/** FLOPs of a multiply of `rows × k` by `k × n` (2 per multiply-add). */
export function matmulFlops(rows: number, n: number, k: number): number {
  return 2 * rows * n * k;
}

function wgsl(v: MatmulVariant & { rowGroups: 1 | 4 }, k4: boolean, n4: boolean): string {
  let b = 4;
  const extra: string[] = [];
  const bind = (decl: string) => extra.push(`@group(0) @binding(${b++}) ${decl};`);
  if (v.swiglu) bind("var<storage, read> w3: array<f32>");
  if (v.bias) bind("var<storage, read> bias: array<f32>");
  if (v.scale) bind("var<storage, read> scale: array<f32>");
  if (v.grouped) bind("var<storage, read> tiles: array<u32>");
  if (v.gather) bind("var<storage, read> row_token: array<u32>");

  // A row i (0..3) as a vec4 over k..k+3; zero past K.
  const loadA = k4
    ? `fn load_a(row: u32, k: u32) -> vec4<f32> {
  let base = row * p.a_stride + p.a_col + k;
  return vec4<f32>(a[base], a[base + 1u], a[base + 2u], a[base + 3u]);
}`
    : `fn load_a(row: u32, k: u32) -> vec4<f32> {
  let base = row * p.a_stride + p.a_col;
  var r = vec4<f32>(0.0);
  for (var i = 0u; i < 4u; i++) { if (k + i < p.K) { r[i] = a[base + k + i]; } }
  return r;
}`;
  // W row k (over n..n+3), zero past K or N.
  const loadW = (name: string) =>
    n4
      ? `fn load_${name}(wbase: u32, k: u32, n: u32) -> vec4<f32> {
  if (k >= p.K) { return vec4<f32>(0.0); }
  let base = wbase + k * p.N + n;
  return vec4<f32>(${name}[base], ${name}[base + 1u], ${name}[base + 2u], ${name}[base + 3u]);
}`
      : `fn load_${name}(wbase: u32, k: u32, n: u32) -> vec4<f32> {
  var r = vec4<f32>(0.0);
  if (k >= p.K) { return r; }
  let base = wbase + k * p.N;
  for (var i = 0u; i < 4u; i++) { if (n + i < p.N) { r[i] = ${name}[base + n + i]; } }
  return r;
}`;
  const rowSetup = v.grouped
    ? `  let t = wg.y * 3u;
  let expert = tiles[t];
  if (expert < p.expert_base || expert - p.expert_base >= p.expert_count) { return; }
  let first = tiles[t + 1u] + lid.y * 4u;
  let end = tiles[t + 2u];
  if (first >= end) { return; }
  let wbase = (expert - p.expert_base) * p.K * p.N;`
    : `  let first = (wg.y * ${v.rowGroups}u + lid.y) * 4u;
  let end = p.M;
  if (first >= end) { return; }
  let wbase = 0u;`;
  const aRow = v.grouped
    ? (v.gather ? "row_token[out_row]" : "out_row")
    : "p.a_row_offset + out_row";
  const twoAcc = v.swiglu;
  return /* wgsl */ `
struct Params { M: u32, N: u32, K: u32, a_row_offset: u32, y_stride: u32, y_col: u32, expert_base: u32, expert_count: u32, alpha: f32, a_col: u32, a_stride: u32, bias_col: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
${extra.join("\n")}

${loadA}
${loadW("w")}
${twoAcc ? loadW("w3") : ""}

@compute @workgroup_size(${WGX}, ${v.rowGroups})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
${rowSetup}
  let n = (wg.x * ${WGX}u + lid.x) * 4u;
  if (n >= p.N) { return; }
  // A rows of the 4 outputs, clamped to the last valid row (their results are not stored).
  var arow: array<u32, 4>;
  for (var i = 0u; i < 4u; i++) {
    let out_row = min(first + i, end - 1u);
    arow[i] = ${aRow};
  }
  var acc0 = vec4<f32>(0.0); var acc1 = vec4<f32>(0.0); var acc2 = vec4<f32>(0.0); var acc3 = vec4<f32>(0.0);
  ${
    twoAcc
      ? "var g0 = vec4<f32>(0.0); var g1 = vec4<f32>(0.0); var g2 = vec4<f32>(0.0); var g3 = vec4<f32>(0.0);"
      : ""
  }
  for (var k = 0u; k < p.K; k += 4u) {
    let a0 = load_a(arow[0], k); let a1 = load_a(arow[1], k); let a2 = load_a(arow[2], k); let a3 = load_a(arow[3], k);
    let w0 = load_w(wbase, k, n); let w1 = load_w(wbase, k + 1u, n); let w2 = load_w(wbase, k + 2u, n); let w3v = load_w(wbase, k + 3u, n);
    acc0 += a0.x * w0 + a0.y * w1 + a0.z * w2 + a0.w * w3v;
    acc1 += a1.x * w0 + a1.y * w1 + a1.z * w2 + a1.w * w3v;
    acc2 += a2.x * w0 + a2.y * w1 + a2.z * w2 + a2.w * w3v;
    acc3 += a3.x * w0 + a3.y * w1 + a3.z * w2 + a3.w * w3v;
    ${
    twoAcc
      ? `let u0 = load_w3(wbase, k, n); let u1 = load_w3(wbase, k + 1u, n); let u2 = load_w3(wbase, k + 2u, n); let u3 = load_w3(wbase, k + 3u, n);
    g0 += a0.x * u0 + a0.y * u1 + a0.z * u2 + a0.w * u3;
    g1 += a1.x * u0 + a1.y * u1 + a1.z * u2 + a1.w * u3;
    g2 += a2.x * u0 + a2.y * u1 + a2.z * u2 + a2.w * u3;
    g3 += a3.x * u0 + a3.y * u1 + a3.z * u2 + a3.w * u3;`
      : ""
  }
  }
  var accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
  ${twoAcc ? "let ups = array<vec4<f32>, 4>(g0, g1, g2, g3);" : ""}
  for (var i = 0u; i < 4u; i++) {
    let out_row = first + i;
    if (out_row >= end) { break; }
    var val = accs[i];
    ${twoAcc ? "val = val / (vec4<f32>(1.0) + exp(-val)) * ups[i];" : ""}
    ${v.scale === "row" ? "val = val * scale[out_row];" : ""}
    ${v.scale === "sigmoid" ? "val = val * (1.0 / (1.0 + exp(-scale[out_row])));" : ""}
    for (var j = 0u; j < 4u; j++) {
      let col = n + j;
      if (col >= p.N) { break; }
      let idx = out_row * p.y_stride + p.y_col + col;
      var o = val[j];
      ${v.bias ? "o += bias[p.bias_col + col];" : ""}
      ${v.alpha ? "o = o * p.alpha;" : ""}
      ${v.accumulate ? "y[idx] = y[idx] + o;" : "y[idx] = o;"}
    }
  }
}
`;
}
