/**
 * Mirrors the rows of this pass's tokens from the K and V stores (storage
 * buffers [rows, nkv·d] written by qkv_prepare.ts) into rgba32f textures
 * [nkv·d/4 texels, rows] at row `info[t].kv_row`, so that attention reads keys
 * and values through the texture unit (see matmul_tex.ts for why). Decode
 * steps mirror only their own row, so the texture always holds the whole
 * sequence without copies. One invocation per (token, texel).
 */
import { pipeline, type Recorder } from "../gpu.ts";

export interface KvTextureArgs {
  kCache: GPUBuffer;
  vCache: GPUBuffer;
  info: GPUBuffer;
  kTex: GPUTextureView;
  vTex: GPUTextureView;
  tokens: number;
  /** nkv·d / 4 */
  texels: number;
}

export function kvTexture(rec: Recorder, a: KvTextureArgs): void {
  const p = pipeline(rec.ctx, "kv_texture", () => WGSL);
  rec.dispatch(p, [a.tokens, a.texels], [a.kCache, a.vCache, a.info, a.kTex, a.vTex], [
    Math.ceil(a.texels / 64),
    a.tokens,
  ]);
}

const WGSL = /* wgsl */ `
struct Params { T: u32, W: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> kc: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> vc: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> info: array<u32>;
@group(0) @binding(4) var kt: texture_storage_2d<rgba32float, write>;
@group(0) @binding(5) var vt: texture_storage_2d<rgba32float, write>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let j = gid.x;
  let t = gid.y;
  if (j >= p.W || t >= p.T) { return; }
  let row = info[t * 4u + 1u];
  textureStore(kt, vec2<u32>(j, row), kc[row * p.W + j]);
  textureStore(vt, vec2<u32>(j, row), vc[row * p.W + j]);
}
`;
