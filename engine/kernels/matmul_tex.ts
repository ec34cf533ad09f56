/**
 * Y = epilogue(A · W) with both operands read through the texture unit:
 * the fast matmul of this engine. On llvmpipe/lavapipe a storage-buffer load
 * costs ~70 cycles per float while `textureLoad` of an rgba32f texel is vector
 * code (measured: 0.07 G floats/s vs 1.5 G floats/s), so the prefill path copies
 * activations into a texture (Recorder.copyToTexture, K % 64 = 0 so that rows
 * are 256-byte aligned) and keeps weights in textures.
 *
 * Same modes and epilogues as matmul.ts (see there): dense or grouped by a
 * tile list, gather through row_token, swiglu with a second weight, bias, row
 * or sigmoid scale, accumulate. Textures: A is [rows, K/4] texels; W is
 * [K (× experts), ceil(N/4)] texels, W[k, n] at texel (n/4, expert·K + k).
 * Register tile per invocation: TM rows × 4·TN4 columns.
 */
import { type Binding, pipeline, type Recorder } from "../gpu.ts";

export interface TexShape {
  wgx: number;
  wgy: number;
  tm: number;
  tn4: number;
}

/** Prefill tile (64 rows × 64 columns per workgroup) and decode tile (1 row). */
export const PREFILL: TexShape = { wgx: 8, wgy: 8, tm: 8, tn4: 2 };
export const DECODE: TexShape = { wgx: 16, wgy: 1, tm: 1, tn4: 2 };

export function texTileRows(s: TexShape): number {
  return s.tm * s.wgy;
}

export interface MatmulTexVariant {
  grouped?: boolean;
  gather?: boolean;
  swiglu?: boolean;
  bias?: boolean;
  scale?: "row" | "sigmoid";
  /** Multiply the output (after any bias) by `alpha` (storage output only). */
  alpha?: boolean;
  accumulate?: boolean;
  /** Write Y as texels of a write-only storage texture [rows, N/4] (N % 4 = 0; no bias or accumulate). */
  outTexture?: boolean;
  /** Weight texels: "float" (rgba32float or rgba16float) or "bf16" (rg32uint, 4 bf16 packed, unpacked here). */
  weights?: "float" | "bf16";
  shape: TexShape;
}

export interface MatmulTexArgs {
  a: GPUTextureView;
  w: GPUTextureView;
  w3?: GPUTextureView;
  y: GPUBuffer | GPUTextureView;
  bias?: GPUBuffer;
  scale?: GPUBuffer;
  tiles?: GPUBuffer;
  rowToken?: GPUBuffer;
  /** Output rows (dense) or tile-list length (grouped). */
  rows: number;
  n: number;
  k: number;
  aRowOffset?: number;
  yStride?: number;
  yCol?: number;
  expertBase?: number;
  expertCount?: number;
  alpha?: number; /**
   * A piece of a split weight (weight_reader.ts `LinearPiece`): the first
   * column of A read (a multiple of 64 on textures), A's row length (default
   * k), and the first bias element (default 0).
   */

  aCol?: number;
  aStride?: number;
  biasCol?: number;
}

export function matmulTex(rec: Recorder, args: MatmulTexArgs, v: MatmulTexVariant): void {
  if (args.k % 4 !== 0) throw new Error("matmulTex: K must be a multiple of 4");
  if (v.swiglu && !args.w3) throw new Error("matmulTex: swiglu needs w3");
  if (v.grouped && !args.tiles) throw new Error("matmulTex: grouped needs tiles");
  if (v.gather && !args.rowToken) throw new Error("matmulTex: gather needs row_token");
  const s = v.shape;
  if (
    v.outTexture && (args.n % 4 !== 0 || v.accumulate || v.alpha || args.y instanceof GPUBuffer)
  ) {
    throw new Error(
      "matmulTex: a texture output needs N % 4 = 0, a texture, no accumulate or alpha",
    );
  }
  const key = [
    "matmul_tex",
    v.grouped ? "grouped" : "dense",
    v.gather ? "gather" : "",
    v.swiglu ? "swiglu" : "",
    v.bias ? "bias" : "",
    v.scale ?? "",
    v.accumulate ? "acc" : "",
    ...(v.alpha ? ["alpha"] : []),
    v.outTexture ? "outtex" : "",
    v.weights === "bf16" ? "bf16" : "",
    `${s.wgx}x${s.wgy}x${s.tm}x${s.tn4}`,
  ].join(":");
  const p = pipeline(rec.ctx, key, () => wgsl(v));
  const buffers: Binding[] = [args.a, args.w, args.y];
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
  const colGroups = Math.ceil(Math.ceil(args.n / 4) / (s.tn4 * s.wgx));
  const rowGroups = v.grouped ? args.rows : Math.ceil(args.rows / (s.tm * s.wgy));
  rec.dispatch(p, uniforms, buffers, [colGroups, rowGroups]);
}

function wgsl(v: MatmulTexVariant): string {
  const { wgx, wgy, tm, tn4 } = v.shape;
  const R = Array.from({ length: tm }, (_, i) => i);
  const C = Array.from({ length: tn4 }, (_, j) => j);
  let b = 4;
  const extra: string[] = [];
  const bind = (decl: string) => extra.push(`@group(0) @binding(${b++}) ${decl};`);
  const wType = v.weights === "bf16" ? "texture_2d<u32>" : "texture_2d<f32>";
  if (v.swiglu) bind(`var wt3: ${wType}`);
  if (v.bias) bind("var<storage, read> bias: array<f32>");
  if (v.scale) bind("var<storage, read> scale: array<f32>");
  if (v.grouped) bind("var<storage, read> tiles: array<u32>");
  if (v.gather) bind("var<storage, read> row_token: array<u32>");
  const rowSetup = v.grouped
    ? `  let t = wg.y * 3u;
  let expert = tiles[t];
  if (expert < p.expert_base || expert - p.expert_base >= p.expert_count) { return; }
  let first = tiles[t + 1u] + lid.y * ${tm}u;
  let end = tiles[t + 2u];
  if (first >= end) { return; }
  let wrow = (expert - p.expert_base) * p.K;`
    : `  let first = (wg.y * ${wgy}u + lid.y) * ${tm}u;
  let end = p.M;
  if (first >= end) { return; }
  let wrow = 0u;`;
  const aRow = (i: number) =>
    v.grouped ? (v.gather ? `row_token[r${i}]` : `r${i}`) : `p.a_row_offset + r${i}`;
  const loadW = (tex: string, pre: string) =>
    C.map((j) =>
      [0, 1, 2, 3].map((q) =>
        `let ${pre}${q}_${j} = load_${tex}(vec2<u32>(c${j}, wrow + k + ${q}u));`
      ).join(" ")
    ).join("\n    ");
  const fma = (acc: string, pre: string) =>
    R.map((i) =>
      C.map((j) =>
        `${acc}${i}_${j} += a${i}.x * ${pre}0_${j} + a${i}.y * ${pre}1_${j} + a${i}.z * ${pre}2_${j} + a${i}.w * ${pre}3_${j};`
      ).join(" ")
    ).join("\n    ");
  const store = R.map((i) =>
    C.map((j) => {
      let val = `acc${i}_${j}`;
      if (v.swiglu) val = `(${val} / (vec4<f32>(1.0) + exp(-${val})) * g${i}_${j})`;
      if (v.scale === "row") val = `(${val} * scale[r${i}])`;
      if (v.scale === "sigmoid") val = `(${val} * (1.0 / (1.0 + exp(-scale[r${i}]))))`;
      return v.outTexture
        ? `if (first + ${i}u < end && n4 + ${j}u < N4) { textureStore(yt, vec2<u32>(p.y_col / 4u + n4 + ${j}u, first + ${i}u), ${
          v.bias ? `${val} + bias4(n4 + ${j}u)` : val
        }); }`
        : `if (first + ${i}u < end) { put(first + ${i}u, (n4 + ${j}u) * 4u, ${val}); }`;
    }).join("\n  ")
  ).join("\n  ");
  return /* wgsl */ `
struct Params { M: u32, N: u32, K: u32, a_row_offset: u32, y_stride: u32, y_col: u32, expert_base: u32, expert_count: u32, alpha: f32, a_col: u32, a_stride: u32, bias_col: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var at: texture_2d<f32>;
@group(0) @binding(2) var wt: ${wType};
${
    v.outTexture
      ? "@group(0) @binding(3) var yt: texture_storage_2d<rgba32float, write>;"
      : "@group(0) @binding(3) var<storage, read_write> y: array<f32>;"
  }
${extra.join("\n")}

${
    ["wt", ...(v.swiglu ? ["wt3"] : [])].map((t) =>
      v.weights === "bf16"
        ? `fn load_${t}(c: vec2<u32>) -> vec4<f32> {
  let u = textureLoad(${t}, c, 0).xy;
  return vec4<f32>(bitcast<f32>(u.x << 16u), bitcast<f32>(u.x & 0xffff0000u), bitcast<f32>(u.y << 16u), bitcast<f32>(u.y & 0xffff0000u));
}`
        : `fn load_${t}(c: vec2<u32>) -> vec4<f32> { return textureLoad(${t}, c, 0); }`
    ).join("\n")
  }

${
    v.outTexture && v.bias
      ? "fn bias4(c: u32) -> vec4<f32> { let b = p.bias_col + 4u * c; return vec4<f32>(bias[b], bias[b + 1u], bias[b + 2u], bias[b + 3u]); }"
      : ""
  }
${
    v.outTexture ? "" : `fn put(row: u32, col: u32, val: vec4<f32>) {
  for (var j = 0u; j < 4u; j++) {
    if (col + j >= p.N) { return; }
    let idx = row * p.y_stride + p.y_col + col + j;
    var o = val[j];
    ${v.bias ? "o += bias[p.bias_col + col + j];" : ""}
    ${v.alpha ? "o = o * p.alpha;" : ""}
    ${v.accumulate ? "y[idx] = y[idx] + o;" : "y[idx] = o;"}
  }
}`
  }

@compute @workgroup_size(${wgx}, ${wgy})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
${rowSetup}
  let N4 = (p.N + 3u) / 4u;
  let n4 = (wg.x * ${wgx}u + lid.x) * ${tn4}u;
  if (n4 >= N4) { return; }
  ${C.map((j) => `let c${j} = min(n4 + ${j}u, N4 - 1u);`).join(" ")}
  ${R.map((i) => `let r${i} = min(first + ${i}u, end - 1u);`).join(" ")}
  ${R.map((i) => `let ar${i} = ${aRow(i)};`).join(" ")}
  ${R.map((i) => C.map((j) => `var acc${i}_${j} = vec4<f32>(0.0);`).join(" ")).join("\n  ")}
  ${
    v.swiglu
      ? R.map((i) => C.map((j) => `var g${i}_${j} = vec4<f32>(0.0);`).join(" ")).join("\n  ")
      : ""
  }
  let a_col4 = p.a_col / 4u;
  for (var k4 = 0u; k4 < p.K / 4u; k4++) {
    let k = k4 * 4u;
    ${R.map((i) => `let a${i} = textureLoad(at, vec2<u32>(a_col4 + k4, ar${i}), 0);`).join(" ")}
    ${loadW("wt", "w")}
    ${fma("acc", "w")}
    ${v.swiglu ? loadW("wt3", "u") : ""}
    ${v.swiglu ? fma("g", "u") : ""}
  }
  ${store}
}
`;
}
