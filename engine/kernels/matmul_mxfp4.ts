/**
 * Grouped expert matmul whose weights stay MXFP4 on the GPU, as gpt-oss ships
 * them: W [experts, N rows (outputs), K/32 blocks] where a block is 32 FP4
 * (E2M1) values in 16 bytes, the even element in the low nibble, sharing one
 * E8M0 scale byte: w = fp4(nibble) · 2^(scale − 127). Bytes on the GPU are
 * the checkpoint's (4 bits per weight plus a byte per 32); each invocation
 * decodes the blocks of its output column once for every row of its tile.
 *
 * Rows come from moe_group.ts's tile list (expert, first slot, end slot),
 * at most TILE rows per tile; A rows are `row_token[slot]` (gather, the
 * gate/up projection reading xn) or the slot itself (the down projection
 * reading the hidden rows). Epilogues:
 * - "swiglu-clamp" (gate_up_proj, output rows interleaved gate 2j, up 2j + 1):
 *   g = min(a·W[2j] + b[2j], limit), u = clamp(a·W[2j+1] + b[2j+1], ±limit),
 *   y[slot, j] = (u + 1) · g · σ(1.702 g)   (N/2 outputs)
 * - "bias-scale" (down_proj): y[slot, n] = (a·W[n] + b[n]) · row_weight[slot]
 */
import { pipeline, type Recorder } from "../gpu.ts";

/** Rows per tile of the tile list this kernel walks. */
export const MXFP4_TILE = 8;

export interface MatmulMxfp4Args {
  /** Activations [rows, K] (storage). */
  a: GPUBuffer;
  /** Blocks as u32 words [experts, N, K/32, 4] and scales as packed bytes [experts, N, K/32]. */
  blocks: GPUBuffer;
  scales: GPUBuffer;
  /** [experts, N] */
  bias: GPUBuffer;
  y: GPUBuffer;
  tiles: GPUBuffer;
  /** gather: row_token; bias-scale: row weights. */
  rowToken?: GPUBuffer;
  rowWeight?: GPUBuffer;
  /** Tile-list length. */
  tiles_: number;
  /** Weight rows N and input width K (a multiple of 32). */
  n: number;
  k: number;
  expertBase: number;
  expertCount: number;
  /** swiglu-clamp's limit. */
  limit?: number;
}

export function matmulMxfp4(
  rec: Recorder,
  a: MatmulMxfp4Args,
  epilogue: "swiglu-clamp" | "bias-scale",
): void {
  if (a.k % 32 !== 0) throw new Error("matmulMxfp4: K must be a multiple of 32");
  const swiglu = epilogue === "swiglu-clamp";
  const p = pipeline(rec.ctx, `matmul_mxfp4:${epilogue}`, () => wgsl(swiglu));
  const buffers = [a.a, a.blocks, a.scales, a.bias, a.y, a.tiles];
  buffers.push(swiglu ? a.rowToken! : a.rowWeight!);
  const outputs = swiglu ? a.n / 2 : a.n;
  rec.dispatch(
    p,
    [a.n, a.k, a.expertBase, a.expertCount, { f32: a.limit ?? 0 }],
    buffers,
    [Math.ceil(outputs / 64), a.tiles_],
  );
}

function wgsl(swiglu: boolean): string {
  const cols = swiglu ? 2 : 1; // weight rows per output column
  const acc = (c: number) => `acc${c}`;
  const C = Array.from({ length: cols }, (_, c) => c);
  return /* wgsl */ `
const TILE = ${MXFP4_TILE}u;
struct Params { N: u32, K: u32, expert_base: u32, expert_count: u32, limit: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> blocks: array<u32>;
@group(0) @binding(3) var<storage, read> scales: array<u32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(6) var<storage, read> tiles: array<u32>;
@group(0) @binding(7) var<storage, read> ${swiglu ? "row_token" : "row_weight"}: array<${
    swiglu ? "u32" : "f32"
  }>;

var<private> FP4: array<f32, 16> = array<f32, 16>(
  0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0);

fn scale_of(i: u32) -> f32 {
  let byte = (scales[i / 4u] >> (8u * (i % 4u))) & 0xffu;
  return exp2(f32(byte) - 127.0);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>) {
  let t = wg.y * 3u;
  let expert = tiles[t];
  if (expert < p.expert_base || expert - p.expert_base >= p.expert_count) { return; }
  let first = tiles[t + 1u];
  let rows = min(tiles[t + 2u] - first, TILE);
  let col = gid.x;
  if (col * ${cols}u >= p.N) { return; }
  let e = expert - p.expert_base;
  let groups = p.K / 32u;
  var arow: array<u32, ${MXFP4_TILE}>;
  for (var r = 0u; r < rows; r++) {
    arow[r] = (${swiglu ? "row_token[first + r]" : "first + r"}) * p.K;
  }
  ${C.map((c) => `var ${acc(c)}: array<f32, ${MXFP4_TILE}>;`).join("\n  ")}
  var w: array<f32, 32>;
  for (var g = 0u; g < groups; g++) {
    ${
    C.map((c) => `
    {
      let wrow = e * p.N + col * ${cols}u + ${c}u;
      let s = scale_of(wrow * groups + g);
      let base = (wrow * groups + g) * 4u;
      for (var q = 0u; q < 4u; q++) {
        let word = blocks[base + q];
        for (var b = 0u; b < 8u; b++) { w[q * 8u + b] = FP4[(word >> (4u * b)) & 15u] * s; }
      }
      for (var r = 0u; r < rows; r++) {
        let ab = arow[r] + g * 32u;
        var d = 0.0;
        for (var i = 0u; i < 32u; i++) { d += a[ab + i] * w[i]; }
        ${acc(c)}[r] += d;
      }
    }`).join("")
  }
  }
  for (var r = 0u; r < rows; r++) {
    let slot = first + r;
    ${
    swiglu
      ? `let gate = min(acc0[r] + bias[e * p.N + 2u * col], p.limit);
    let up = clamp(acc1[r] + bias[e * p.N + 2u * col + 1u], -p.limit, p.limit);
    let glu = gate * (1.0 / (1.0 + exp(-gate * 1.702)));
    y[slot * (p.N / 2u) + col] = (up + 1.0) * glu;`
      : `y[slot * p.N + col] = (acc0[r] + bias[e * p.N + col]) * row_weight[slot];`
  }
  }
}
`;
}
