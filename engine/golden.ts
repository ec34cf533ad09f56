/**
 * The Hugging Face golden outputs of the fixture checkpoints
 * (fixtures/README.md "Golden outputs", made by fixtures/train/goldens.py
 * with transformers' own modeling code): which fixture models there are,
 * reading a golden file, and comparing a router log with it. golden_test.ts
 * compares the engine's forward with them, capture_test.ts the traces that
 * `capture` writes.
 */
import assert from "node:assert/strict";
import { readAll } from "./safetensors.ts";

export const FIXTURE_MODELS = new URL("../fixtures/models/", import.meta.url).pathname;

/** Tensors of one golden.safetensors by name: p{p}.ids, p{p}.probs, p{p}.topk_ids, ... */
export type Golden = Map<string, { dtype: string; shape: readonly number[]; bytes: Uint8Array }>;

/** The fixture model directories (names under fixtures/models/), sorted. */
export function fixtureModels(): string[] {
  const names: string[] = [];
  for (const entry of Deno.readDirSync(FIXTURE_MODELS)) {
    if (entry.isDirectory) names.push(entry.name);
  }
  return names.sort();
}

/**
 * Reads fixtures/models/NAME/golden.safetensors. A fixture model without
 * its checkpoint or golden is an error naming it: every fixture is pinned.
 */
export async function readGolden(name: string): Promise<Golden> {
  const dir = `${FIXTURE_MODELS}${name}`;
  for (const file of ["model.safetensors", "golden.safetensors"]) {
    try {
      await Deno.stat(`${dir}/${file}`);
    } catch {
      assert.fail(
        `Fixture model ${name} has no ${file}; run \`deno task fixtures\` to make it, or remove fixtures/models/${name}.`,
      );
    }
  }
  return await readAll(`${dir}/golden.safetensors`);
}

export function goldenF32(g: Golden, name: string): Float32Array {
  return new Float32Array(g.get(name)!.bytes.slice().buffer);
}

export function goldenI32(g: Golden, name: string): Int32Array {
  return new Int32Array(g.get(name)!.bytes.slice().buffer);
}

/** A router log in the engine's and the trace's layout: [T, M, k] experts and weights, [T, M, E] probs. */
export interface RoutingRows {
  experts: ArrayLike<number>;
  weights: ArrayLike<number>;
  probs: ArrayLike<number>;
}

/**
 * Compares prompt p's router log with the golden's ([M, T, k] and [M, T, E]
 * layout): top-k ids equal except at near-ties (a tie either order may
 * break): where the golden flags one (`p{p}.near_tie`, the router families:
 * selection scores or group scores within 1e-4), else where the reference's
 * k-th and (k+1)-th probabilities are within 1e-4; weights and probabilities
 * within 1e-4.
 */
export function checkRouting(
  g: Golden,
  p: number,
  log: RoutingRows,
  shape: { moeLayers: number; topK: number; experts: number },
): RoutingAgreement {
  const { moeLayers: M, topK: k, experts: E } = shape;
  const agreement: RoutingAgreement = { pairs: 0, nearTies: 0, maxWeightError: 0, maxProbError: 0 };
  const ids = goldenI32(g, `p${p}.topk_ids`), weights = goldenF32(g, `p${p}.topk_weights`);
  const probs = goldenF32(g, `p${p}.probs`);
  const nearTie = g.has(`p${p}.near_tie`) ? goldenI32(g, `p${p}.near_tie`) : null;
  const T = ids.length / (M * k);
  assert.equal(log.experts.length, T * M * k, `prompt ${p}: ${T} tokens of ${M} layers × ${k}`);
  for (let m = 0; m < M; m++) {
    for (let t = 0; t < T; t++) {
      const ref = probs.subarray((m * T + t) * E, (m * T + t + 1) * E);
      const sorted = [...ref].sort((a, b) => b - a);
      const tie = nearTie ? nearTie[m * T + t] === 1 : k < E && sorted[k - 1]! - sorted[k]! < 1e-4;
      agreement.pairs++;
      if (tie) agreement.nearTies++;
      for (let j = 0; !tie && j < k; j++) {
        const got = log.experts[(t * M + m) * k + j]!, want = ids[(m * T + t) * k + j]!;
        assert.equal(got, want, `prompt ${p} layer ${m} token ${t} choice ${j}`);
        const gw = log.weights[(t * M + m) * k + j]!, ww = weights[(m * T + t) * k + j]!;
        agreement.maxWeightError = Math.max(agreement.maxWeightError, Math.abs(gw - ww));
        assert.ok(
          Math.abs(gw - ww) <= 1e-4,
          `weight ${gw} vs ${ww} at prompt ${p} layer ${m} token ${t}`,
        );
      }
      for (let e = 0; e < E; e++) {
        const gp = log.probs[(t * M + m) * E + e]!;
        agreement.maxProbError = Math.max(agreement.maxProbError, Math.abs(gp - ref[e]!));
        assert.ok(
          Math.abs(gp - ref[e]!) <= 1e-4,
          `prob ${gp} vs ${ref[e]} at prompt ${p} layer ${m} token ${t} expert ${e}`,
        );
      }
    }
  }
  return agreement;
}

/** What checkRouting compared: (token, MoE layer) pairs, how many were near-ties (not compared), the largest errors. */
export interface RoutingAgreement {
  pairs: number;
  nearTies: number;
  maxWeightError: number;
  maxProbError: number;
}

/**
 * The lookahead log's shape: k distinct expert ids where layer l + d has an
 * MoE block, 65535 exactly where it has none or does not exist. (The golden
 * has no reference for which experts: Hugging Face never applies a router to
 * another layer's input.)
 */
export function checkSpecShape(
  spec: ArrayLike<number>,
  facts: { moe_layers: readonly number[]; num_layers: number; top_k: number; num_experts: number },
  lookahead: number,
): void {
  const { moe_layers, num_layers, top_k: k, num_experts: E } = facts;
  const M = moe_layers.length, D = lookahead;
  const T = spec.length / (M * D * k);
  assert.ok(Number.isInteger(T), `spec of ${spec.length} ids is not [T, ${M}, ${D}, ${k}]`);
  for (let t = 0; t < T; t++) {
    for (let m = 0; m < M; m++) {
      for (let d = 1; d <= D; d++) {
        const at = ((t * M + m) * D + d - 1) * k;
        const picks = Array.from({ length: k }, (_, j) => spec[at + j]!);
        const target = moe_layers[m]! + d;
        if (target >= num_layers || !moe_layers.includes(target)) {
          assert.ok(picks.every((x) => x === 65535), `token ${t} layer ${m} distance ${d}`);
        } else {
          assert.equal(new Set(picks).size, k, `token ${t} layer ${m} distance ${d}`);
          assert.ok(picks.every((x) => x < E), `token ${t} layer ${m} distance ${d}`);
        }
      }
    }
  }
}
