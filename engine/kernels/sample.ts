/**
 * Next-token choice on the GPU, so that decoding needs no readback: from the
 * logits row of token `row`, greedy (temperature 0: the first maximum, as
 * argmax) or a sample of softmax(logits / temperature) by inverse CDF with a
 * uniform number hashed from (seed, position); the id is written to
 * tokens[info[row].token_index + 1].
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

export function sample(rec: Recorder, a: SampleArgs): void {
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

fn hash(x: u32) -> u32 {
  var v = x * 747796405u + 2891336453u;
  v = ((v >> ((v >> 28u) + 4u)) ^ v) * 277803737u;
  return (v >> 22u) ^ v;
}

@compute @workgroup_size(1)
fn main() {
  var best = 0u;
  var mx = logits[0];
  for (var i = 1u; i < p.V; i++) { if (logits[i] > mx) { mx = logits[i]; best = i; } }
  let pos = info[p.row * 4u];
  if (p.temperature > 0.0) {
    var sum = 0.0;
    for (var i = 0u; i < p.V; i++) { sum += exp((logits[i] - mx) / p.temperature); }
    let u = f32(hash(hash(p.seed) ^ (pos * 2654435769u)) >> 8u) / 16777216.0;
    let goal = u * sum;
    var c = 0.0;
    for (var i = 0u; i < p.V; i++) {
      c += exp((logits[i] - mx) / p.temperature);
      if (c > goal) { best = i; break; }
    }
  }
  tokens[info[p.row * 4u + 3u] + 1u] = best;
}
`;
