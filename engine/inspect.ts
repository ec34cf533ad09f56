/**
 * `moetrace inspect TRACE|MODEL`: a one-screen summary of a trace
 * (trace/inspect.ts) or of a checkpoint directory (its config and tensor
 * headers; no GPU is needed).
 */
import { basename } from "node:path";
import { DataError } from "../common/errors.ts";
import { pathIsFile } from "../common/fs.ts";
import { printable } from "../common/text.ts";
import { describeTrace, summariseTrace } from "../trace/inspect.ts";
import { openCheckpoint } from "./checkpoint.ts";
import { expertParams, moeLayers } from "./config.ts";
import { describeRouter, routerFor } from "./router.ts";

export async function inspectCommand(
  path: string,
  flags: Record<string, unknown> = {},
): Promise<void> {
  // Names in a trace or config.json are strangers' text: no escape sequence reaches the terminal.
  console.log(
    flags.json === true ? JSON.stringify(await inspectJson(path)) : printable(await inspect(path)),
  );
}

/** What `inspect --json` prints: the trace's facts and counts, or the model's facts. */
export async function inspectJson(path: string): Promise<Record<string, unknown>> {
  if (await pathIsFile(`${path}/manifest.json`)) return { ...await summariseTrace(path) };
  if (await pathIsFile(`${path}/config.json`)) {
    return { kind: "model", path, ...await describeCheckpoint(path) };
  }
  throw notTraceNorModel(path);
}

/** The summary text for a trace directory or a model directory. */
export async function inspect(path: string): Promise<string> {
  if (await pathIsFile(`${path}/manifest.json`)) return await describeTrace(path);
  if (await pathIsFile(`${path}/config.json`)) return await describeModel(path);
  throw notTraceNorModel(path);
}

function notTraceNorModel(path: string): DataError {
  return new DataError(
    `${path} is neither a trace (no manifest.json) nor a model directory (no config.json).`,
  );
}

async function describeModel(dir: string): Promise<string> {
  const facts = await describeCheckpoint(dir);
  const width = Math.max(...Object.keys(facts).map((k) => k.length));
  return [`model      ${dir}`, ...Object.entries(facts).map(([k, v]) => `${k.padEnd(width)}  ${v}`)]
    .join("\n");
}

export async function describeCheckpoint(
  dir: string,
): Promise<Record<string, string | number | boolean>> {
  const ck = await openCheckpoint(dir);
  const c = ck.config;
  let params = 0;
  for (const info of ck.tensors.values()) params += info.shape.reduce((a, b) => a * b, 1);
  return {
    name: basename(dir),
    family: c.family,
    weight_decomposed: c.decomposedRank !== null,
    layers: c.numLayers,
    moe_layers: moeLayers(c).join(","),
    experts: c.numExperts,
    top_k: c.topK,
    router: describeRouter(routerFor(c, `${dir}/config.json`)),
    router_scores: routerFor(c, `${dir}/config.json`).probs,
    renormalised_topk: c.normTopK,
    shared_experts: c.numSharedExperts,
    shared_expert_ffn: c.sharedFfn,
    hidden_size: c.hiddenSize,
    heads: c.numHeads,
    kv_heads: c.numKvHeads,
    head_dim: c.headDim,
    expert_ffn: c.expertFfn,
    vocab_size: c.vocabSize,
    sliding_window: c.window.some((x) => x !== null)
      ? String(c.window.map((x) => x ?? "full").join(","))
      : "none",
    parameters: params,
    expert_params: expertParams(c),
    dtype: ck.dtype,
    files: ck.files.length,
    bytes: ck.files.reduce((a, f) => a + f.bytes, 0),
  };
}
