/**
 * Next-token choice on the GPU, so that decoding needs no readback: from the
 * logits row of token `row`, greedy (temperature 0: the first maximum, as
 * argmax) or a sample of softmax(logits / temperature) by inverse CDF with a
 * uniform number u hashed from (seed, position): the first id whose
 * cumulative sum of exp((logit − max) / T) exceeds u · the total (the maximum
 * when rounding leaves none). The id is written to
 * tokens[info[row].token_index + 1].
 *
 * One workgroup of 256 invocations, each owning a contiguous block of
 * ceil(V / 256) ids (no invocation loops over the whole vocabulary: llvmpipe
 * stops a loop at 65,535 iterations, and real vocabularies reach 201,088).
 * Each finds its block's first maximum and then its block's sum of exp; one
 * invocation combines the 256 results in id order (the first of the maxima;
 * the cumulative sums before each block), so that the block whose interval
 * holds u · total is found exactly, and that block's owner scans its ids,
 * comparing with the same sums. (Combining the 256 in a tree took as long on
 * lavapipe, with 8 barriers instead of 1.)
 */
import { pipeline, type Recorder } from "../gpu.ts";

export interface SampleArgs {
  logits: GPUBuffer;
  info: GPUBuffer;
  tokens: GPUBuffer;
  vocab: number;
  /** Row of `info` whose token the logits belong to; logits row 0. */
  row: number;
  temperature: number;
  seed: number;
}

/** Invocations of the one workgroup; V may reach 256 · 65535 ids. */
const WG = 256;

export function sample(rec: Recorder, a: SampleArgs): void {
  if (a.vocab < 1 || a.vocab > WG * 65535) {
    throw new Error(`sample: vocabulary of ${a.vocab} ids, expected 1 to ${WG * 65535}`);
  }
  const p = pipeline(rec.ctx, "sample", () => WGSL);
  rec.dispatch(
    p,
    [a.vocab, a.row, { f32: a.temperature }, a.seed >>> 0],
    [a.logits, a.info, a.tokens],
    [1],
  );
}

const WGSL = /* wgsl */ `
struct Params { V: u32, row: u32, temperature: f32, seed: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> info: array<u32>;
@group(0) @binding(3) var<storage, read_write> tokens: array<u32>;

const WG = ${WG}u;
const NONE = 0xffffffffu;
var<workgroup> best_v: array<f32, WG>;
var<workgroup> best_i: array<u32, WG>;
/** Block sums of exp, then (after the scan) the cumulative sum before each block; [WG] is the total. */
var<workgroup> cum: array<f32, ${WG + 1}>;
var<workgroup> pick: u32;

fn hash(x: u32) -> u32 {
  var v = x * 747796405u + 2891336453u;
  v = ((v >> ((v >> 28u) + 4u)) ^ v) * 277803737u;
  return (v >> 22u) ^ v;
}

@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) t: u32) {
  let per = (p.V + WG - 1u) / WG;
  let lo = min(t * per, p.V);
  let hi = min(lo + per, p.V);

  // this block's first maximum; then the first of the blocks' maxima, in id order
  var mi = NONE;
  var mv = 0.0;
  if (lo < hi) {
    mi = lo;
    mv = logits[lo];
    for (var i = lo + 1u; i < hi; i++) { let v = logits[i]; if (v > mv) { mv = v; mi = i; } }
  }
  best_v[t] = mv;
  best_i[t] = mi;
  workgroupBarrier();
  if (t == 0u) {
    var bv = best_v[0];
    var bi = best_i[0];
    for (var b = 1u; b < WG; b++) {
      if (best_i[b] != NONE && best_v[b] > bv) { bv = best_v[b]; bi = best_i[b]; }
    }
    best_v[0] = bv;
    pick = bi;
  }
  workgroupBarrier();
  let mx = best_v[0];

  if (p.temperature > 0.0) {
    var local = 0.0;
    for (var i = lo; i < hi; i++) { local += exp((logits[i] - mx) / p.temperature); }
    cum[t + 1u] = local;
    workgroupBarrier();
    if (t == 0u) {
      // cum[b] = sum of blocks before b, in id order; cum[WG] the total
      cum[0] = 0.0;
      for (var b = 1u; b <= WG; b++) { cum[b] = cum[b - 1u] + cum[b]; }
    }
    workgroupBarrier();
    let pos = info[p.row * 4u];
    let u = f32(hash(hash(p.seed) ^ (pos * 2654435769u)) >> 8u) / 16777216.0;
    let goal = u * cum[WG];
    let before = cum[t];
    // the one block with before <= goal < cum[t + 1] = before + local (as computed above)
    if (before <= goal && goal < cum[t + 1u]) {
      var c = 0.0;
      for (var i = lo; i < hi; i++) {
        c += exp((logits[i] - mx) / p.temperature);
        if (before + c > goal) { pick = i; break; }
      }
    }
    workgroupBarrier();
  }
  if (t == 0u) { tokens[info[p.row * 4u + 3u] + 1u] = pick; }
}
`;
