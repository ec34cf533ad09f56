/**
 * Router scoring, selection and normalisation, per token, in f32 as the
 * Hugging Face routers compute them (router.ts names the variants):
 *
 *   scoring    "softmax": scores = softmax(logits) over all E (max-subtracted);
 *              "sigmoid": scores = 1 / (1 + exp(−logits));
 *              "softmax-over-k": experts are chosen by logit and the weights are
 *              the softmax of the k chosen logits (the scores, logged as probs,
 *              are then softmax(logits) over all E)
 *   selection  choice scores = scores (+ a selection bias, for choosing only);
 *              with groups, the E experts form G equal groups scored by their
 *              best choice score ("max") or the sum of their best two
 *              ("top2-sum"), and only experts of the `top` best groups compete;
 *              then the k highest choice scores in descending order (ties:
 *              lower id first; for groups, lower group first)
 *   weights    the chosen experts' scores (never the biased ones), divided by
 *              their sum when `normalise`, times `scale`
 *
 * Mode "main" writes the chosen experts and weights for the expert kernels
 * (`choice`, `choice_weight`, [T, k]) and the router log at row
 * `info[t].log_row`: experts/weights [rows, M, k], and with `probs` the scores
 * [rows, M, E]. Mode "spec" (lookahead) only writes the top-k ids to spec
 * [rows, M, D, k] at (m, d − 1). E and the variant are compiled in (model
 * constants); k, groups and the scale are uniforms.
 */
import { pipeline, type Recorder } from "../gpu.ts";

export type Scoring = "softmax" | "sigmoid" | "softmax-over-k";

export interface RouterArgs {
  logits: GPUBuffer;
  info: GPUBuffer;
  tokens: number;
  numExperts: number;
  topK: number;
  /** Number of MoE layers M and this one's index m. */
  numMoe: number;
  moeIndex: number;
  scoring: Scoring;
  /** [E] added to the scores for choosing only (DeepSeek-V3's e_score_correction_bias). */
  selectionBias?: GPUBuffer;
  /** Group-limited selection: G groups of E / G experts, the `top` best compete. */
  groups: { count: number; top: number; score: "max" | "top2-sum" } | null;
  normalise: boolean;
  /** Multiplies the weights (routed_scaling_factor); 1 leaves them bit for bit. */
  scale: number;
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

/** The variant compiled into one pipeline. */
interface Variant {
  e: number;
  scoring: Scoring;
  bias: boolean;
  groups: "max" | "top2-sum" | null;
  spec: boolean;
  probs: boolean;
}

export function routerTopK(rec: Recorder, a: RouterArgs, out: RouterMain | RouterSpec): void {
  const spec = "logSpec" in out;
  const v: Variant = {
    e: a.numExperts,
    scoring: a.scoring,
    bias: a.selectionBias !== undefined,
    groups: a.groups?.score ?? null,
    spec,
    probs: !spec && out.logProbs !== undefined,
  };
  const key = `router_topk:e${v.e}:${v.scoring}:${v.bias ? "bias" : ""}:${v.groups ?? ""}:${
    spec ? "spec" : "main"
  }:${v.probs ? "probs" : ""}`;
  const p = pipeline(rec.ctx, key, () => wgsl(v));
  const buffers = [a.logits, a.info];
  if (a.selectionBias) buffers.push(a.selectionBias);
  if (spec) buffers.push(out.logSpec);
  else {
    buffers.push(out.choice, out.choiceWeight, out.logExperts, out.logWeights);
    if (v.probs) buffers.push(out.logProbs!);
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
      a.groups?.count ?? 1,
      a.groups?.top ?? 1,
      { f32: a.scale },
    ],
    buffers,
    [Math.ceil(a.tokens / 64)],
  );
}

function wgsl(v: Variant): string {
  let b = 3;
  const bind = (decl: string) => `@group(0) @binding(${b++}) ${decl};`;
  const bias = v.bias ? bind("var<storage, read> sel_bias: array<f32>") : "";
  const outputs = v.spec ? [bind("var<storage, read_write> log_spec: array<u32>")] : [
    bind("var<storage, read_write> choice: array<u32>"),
    bind("var<storage, read_write> choice_weight: array<f32>"),
    bind("var<storage, read_write> log_experts: array<u32>"),
    bind("var<storage, read_write> log_weights: array<f32>"),
    v.probs ? bind("var<storage, read_write> log_probs: array<f32>") : "",
  ];
  // sc: the scores (weights, probs); ch: the choice scores
  const softmaxScores = `
  var mx = -3.0e38;
  for (var i = 0u; i < E; i++) { sc[i] = logits[t * E + i]; mx = max(mx, sc[i]); }
  var sum = 0.0;
  for (var i = 0u; i < E; i++) { sc[i] = exp(sc[i] - mx); sum += sc[i]; }
  for (var i = 0u; i < E; i++) { sc[i] = sc[i] / sum; }`;
  const scoring = v.scoring === "softmax"
    ? `${softmaxScores}
  for (var i = 0u; i < E; i++) { ch[i] = sc[i]; }`
    : v.scoring === "sigmoid"
    ? `
  for (var i = 0u; i < E; i++) { sc[i] = 1.0 / (1.0 + exp(-logits[t * E + i])); ch[i] = sc[i]; }`
    : `${v.probs ? softmaxScores : ""}
  for (var i = 0u; i < E; i++) { ch[i] = logits[t * E + i]; }`;
  const groups = v.groups === null ? "" : `
  // group-limited: experts of groups outside the best p.top_groups are taken out
  let per = E / p.groups;
  var gs: array<f32, E>;
  for (var g = 0u; g < p.groups; g++) {
    var a = -3.0e38;
    var b = -3.0e38;
    for (var i = g * per; i < (g + 1u) * per; i++) {
      let x = ch[i];
      if (x > a) { b = a; a = x; } else if (x > b) { b = x; }
    }
    gs[g] = ${v.groups === "max" ? "a" : "a + b"};
  }
  var keep: array<bool, E>;
  for (var j = 0u; j < p.top_groups; j++) {
    var best = 0u;
    var found = false;
    for (var g = 0u; g < p.groups; g++) {
      if (!keep[g] && (!found || gs[g] > gs[best])) { best = g; found = true; }
    }
    keep[best] = true;
  }
  for (var i = 0u; i < E; i++) { taken[i] = !keep[i / per]; }`;
  const weights = v.scoring === "softmax-over-k"
    ? `
  // softmax over the k chosen logits (the first is their maximum)
  var top_sum = 0.0;
  for (var j = 0u; j < p.k; j++) { vals[j] = exp(ch[ids[j]] - ch[ids[0]]); top_sum += vals[j]; }
  for (var j = 0u; j < p.k; j++) { vals[j] = vals[j] / top_sum; }`
    : `
  var top_sum = 0.0;
  for (var j = 0u; j < p.k; j++) { vals[j] = sc[ids[j]]; top_sum += vals[j]; }
  if (p.normalise == 1u) { for (var j = 0u; j < p.k; j++) { vals[j] = vals[j] / top_sum; } }`;
  return /* wgsl */ `
const E = ${v.e}u;
struct Params { T: u32, k: u32, M: u32, m: u32, normalise: u32, D: u32, d: u32, groups: u32, top_groups: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> info: array<u32>;
${bias}
${outputs.join("\n")}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = gid.x;
  if (t >= p.T) { return; }
  let row = info[t * 4u + 2u];
  var sc: array<f32, E>;
  var ch: array<f32, E>;
  var taken: array<bool, E>;
  // A logit that is NaN or ±Inf (exponent bits all set; tested on the bits, as compilers may
  // assume floats are finite), or logits all equal (the router's input was zero: an RMSNorm
  // whose sum of squares overflowed), make every choice meaningless: the log says so with 65535.
  var finite = true;
  var same = true;
  for (var i = 0u; i < E; i++) {
    if ((bitcast<u32>(logits[t * E + i]) & 0x7f800000u) == 0x7f800000u) { finite = false; }
    if (logits[t * E + i] != logits[t * E]) { same = false; }
  }
  finite = finite && (E == 1u || !same);
  ${scoring}
  ${v.probs ? "for (var i = 0u; i < E; i++) { log_probs[(row * p.M + p.m) * E + i] = sc[i]; }" : ""}
  ${v.bias ? "for (var i = 0u; i < E; i++) { ch[i] = ch[i] + sel_bias[i]; }" : ""}
  ${groups}
  var ids: array<u32, 64>;
  var vals: array<f32, 64>;
  for (var j = 0u; j < p.k; j++) {
    var best = 0u;
    var best_v = 0.0;
    var found = false;
    for (var i = 0u; i < E; i++) {
      if (!taken[i] && (!found || ch[i] > best_v)) { best = i; best_v = ch[i]; found = true; }
    }
    taken[best] = true;
    ids[j] = best;
  }
  ${v.spec ? "" : weights}
  for (var j = 0u; j < p.k; j++) {
    ${
    v.spec
      ? "log_spec[((row * p.M + p.m) * p.D + p.d) * p.k + j] = ids[j];"
      : `let w = vals[j] * p.scale;
    choice[t * p.k + j] = ids[j];
    choice_weight[t * p.k + j] = w;
    log_experts[(row * p.M + p.m) * p.k + j] = select(0xFFFFu, ids[j], finite);
    log_weights[(row * p.M + p.m) * p.k + j] = w;`
  }
  }
}
`;
}
