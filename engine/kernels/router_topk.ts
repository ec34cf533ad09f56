/**
 * Router top-k, per token, in f32 exactly as the Hugging Face routers:
 * probs = softmax(logits) (max-subtracted), the k largest probabilities in
 * descending order (ties: lower expert id first), weights = those
 * probabilities, divided by their sum when the family renormalises.
 *
 * Mode "main" writes the chosen experts and weights for the expert kernels
 * (`choice`, `choice_weight`, [T, k]) and the router log at row
 * `info[t].log_row`: experts/weights [rows, M, k], and with `probs` the full
 * distribution [rows, M, E]. Mode "spec" (lookahead) only writes the top-k ids
 * to spec [rows, M, D, k] at (m, d − 1). E is compiled in (a model constant).
 */
import { pipeline, type Recorder } from "../gpu.ts";

export interface RouterArgs {
  logits: GPUBuffer;
  info: GPUBuffer;
  tokens: number;
  numExperts: number;
  topK: number;
  /** Number of MoE layers M and this one's index m. */
  numMoe: number;
  moeIndex: number;
  normalise: boolean;
}

export interface RouterMain {
  choice: GPUBuffer;
  choiceWeight: GPUBuffer;
  logExperts: GPUBuffer;
  logWeights: GPUBuffer;
  logProbs?: GPUBuffer;
}

export interface RouterSpec {
  logSpec: GPUBuffer;
  /** D and d (1-based). */
  lookahead: number;
  distance: number;
}

export function routerTopK(rec: Recorder, a: RouterArgs, out: RouterMain | RouterSpec): void {
  const spec = "logSpec" in out;
  const probs = !spec && out.logProbs !== undefined;
  const key = `router_topk:e${a.numExperts}:${spec ? "spec" : "main"}:${probs ? "probs" : ""}`;
  const p = pipeline(rec.ctx, key, () => wgsl(a.numExperts, spec, probs));
  const buffers = [a.logits, a.info];
  if (spec) buffers.push(out.logSpec);
  else {
    buffers.push(out.choice, out.choiceWeight, out.logExperts, out.logWeights);
    if (probs) buffers.push(out.logProbs!);
  }
  rec.dispatch(
    p,
    [
      a.tokens,
      a.topK,
      a.numMoe,
      a.moeIndex,
      a.normalise ? 1 : 0,
      spec ? out.lookahead : 0,
      spec ? out.distance - 1 : 0,
    ],
    buffers,
    [Math.ceil(a.tokens / 64)],
  );
}

function wgsl(e: number, spec: boolean, probs: boolean): string {
  const outputs = spec
    ? "@group(0) @binding(3) var<storage, read_write> log_spec: array<u32>;"
    : `@group(0) @binding(3) var<storage, read_write> choice: array<u32>;
@group(0) @binding(4) var<storage, read_write> choice_weight: array<f32>;
@group(0) @binding(5) var<storage, read_write> log_experts: array<u32>;
@group(0) @binding(6) var<storage, read_write> log_weights: array<f32>;
${probs ? "@group(0) @binding(7) var<storage, read_write> log_probs: array<f32>;" : ""}`;
  return /* wgsl */ `
const E = ${e}u;
struct Params { T: u32, k: u32, M: u32, m: u32, normalise: u32, D: u32, d: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> info: array<u32>;
${outputs}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = gid.x;
  if (t >= p.T) { return; }
  let row = info[t * 4u + 2u];
  var pr: array<f32, E>;
  var mx = -3.0e38;
  for (var i = 0u; i < E; i++) { pr[i] = logits[t * E + i]; mx = max(mx, pr[i]); }
  var sum = 0.0;
  for (var i = 0u; i < E; i++) { pr[i] = exp(pr[i] - mx); sum += pr[i]; }
  for (var i = 0u; i < E; i++) { pr[i] = pr[i] / sum; }
  ${probs ? "for (var i = 0u; i < E; i++) { log_probs[(row * p.M + p.m) * E + i] = pr[i]; }" : ""}
  var taken: array<bool, E>;
  var ids: array<u32, 64>;
  var vals: array<f32, 64>;
  var top_sum = 0.0;
  for (var j = 0u; j < p.k; j++) {
    var best = 0u;
    var best_v = -1.0;
    for (var i = 0u; i < E; i++) {
      if (!taken[i] && pr[i] > best_v) { best = i; best_v = pr[i]; }
    }
    taken[best] = true;
    ids[j] = best;
    vals[j] = best_v;
    top_sum += best_v;
  }
  for (var j = 0u; j < p.k; j++) {
    ${
    spec ? "log_spec[((row * p.M + p.m) * p.D + p.d) * p.k + j] = ids[j];" : `var w = vals[j];
    if (p.normalise == 1u) { w = w / top_sum; }
    choice[t * p.k + j] = ids[j];
    choice_weight[t * p.k + j] = w;
    log_experts[(row * p.M + p.m) * p.k + j] = ids[j];
    log_weights[(row * p.M + p.m) * p.k + j] = w;`
  }
  }
}
`;
}
