/**
 * A checkpoint directory: `config.json`, `model.safetensors` or the shards of
 * `model.safetensors.index.json`, `tokenizer.json`, `tokenizer_config.json`.
 *
 * `openCheckpoint` validates everything before a weight byte is read: every
 * safetensors header (see safetensors.ts), then every tensor the config implies
 * by name, shape and dtype (each family's Hub layout: one 2-D tensor per expert
 * matrix, granitemoe's fused expert tensors, gpt_oss's MXFP4 blocks and scales).
 * Tensors the engine does not use (e.g. rotary caches) are ignored.
 */
import { DataError, messageOf } from "../common/errors.ts";
import { type ModelConfig, parseConfig } from "./config.ts";
import { readHeader, readTensorBytes, type TensorInfo, toFloat32 } from "./safetensors.ts";
import { modelFileWithin, pathExists } from "../common/fs.ts";

export interface Checkpoint {
  readonly dir: string;
  readonly config: ModelConfig;
  /** Every tensor of every shard, by name. */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** Weight files with their sizes in bytes. */
  readonly files: readonly { path: string; bytes: number }[];
  /** Weight dtype (`float32`, `float16`, `bfloat16`), the dtype of most expected tensors. */
  readonly dtype: string;
}

export interface ExpectedTensor {
  name: string;
  shape: number[];
  /** Integer tensors (MXFP4 blocks and scales) give their dtype; the rest are F32, F16 or BF16. */
  dtype?: "U8";
  /** The config.json fields the shape comes from, named when a tensor disagrees. */
  fields?: string;
}

const FLOAT_DTYPES: Record<string, string> = { F32: "float32", F16: "float16", BF16: "bfloat16" };

/** Names of layer l's MoE block tensors in each family's Hub layout. */
export interface MoeNames {
  /** [E, H] router weight, and its biases where the family has them. */
  router: string;
  logitBias?: string;
  selectionBias?: string;
  /** One expert's matrix prefix (per-expert layout): `${prefix}.weight`, or `.u`/`.v` when weight-decomposed. */
  expert(e: number, which: "gate" | "up" | "down"): string;
  /**
   * Fused layouts: granitemoe `input_linear.weight` [E, 2F, H] (gate rows
   * first) and `output_linear.weight` [E, H, F]; gpt_oss's MXFP4
   * `experts.gate_up_proj` / `experts.down_proj` prefixes.
   */
  gateUp: string;
  down: string;
  /** Shared experts: `${shared}.{gate,up,down}_proj.weight`, and qwen2_moe's `shared_expert_gate.weight`. */
  shared?: string;
  sharedGate?: string;
}

export function moeNames(c: ModelConfig, l: number): MoeNames {
  const f = c.family;
  const block = `model.layers.${l}.${
    f === "mixtral" || f === "granitemoe" ? "block_sparse_moe" : "mlp"
  }.`;
  const which = f === "mixtral"
    ? { gate: "w1", up: "w3", down: "w2" }
    : { gate: "gate_proj", up: "up_proj", down: "down_proj" };
  const router = f === "granitemoe"
    ? "router.layer.weight"
    : f === "gpt_oss"
    ? "router.weight"
    : "gate.weight";
  const names: MoeNames = {
    router: block + router,
    expert: (e, w) => `${block}experts.${e}.${which[w]}`,
    gateUp: block + (f === "granitemoe" ? "input_linear.weight" : "experts.gate_up_proj"),
    down: block + (f === "granitemoe" ? "output_linear.weight" : "experts.down_proj"),
  };
  if (c.routing.logitBias) names.logitBias = block + "router.bias";
  if (c.routing.selectionBias) names.selectionBias = block + "gate.e_score_correction_bias";
  if (c.sharedFfn > 0) {
    names.shared = block + (f === "qwen2_moe" ? "shared_expert" : "shared_experts");
    if (c.sharedGate) names.sharedGate = block + "shared_expert_gate.weight";
  }
  return names;
}

/** Every tensor the config implies, with its shape (Hub layout, linear weights [out, in]). */
export function expectedTensors(config: ModelConfig): ExpectedTensor[] {
  const c = config;
  const h = c.hiddenSize;
  const out: ExpectedTensor[] = [{ name: "model.embed_tokens.weight", shape: [c.vocabSize, h] }];
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    out.push({ name: p + "input_layernorm.weight", shape: [h] });
    out.push({ name: p + "post_attention_layernorm.weight", shape: [h] });
    out.push(...(c.mla ? mlaTensors(c, p + "self_attn.") : attentionTensors(c, p + "self_attn.")));
    if (!c.isMoe[l]) {
      out.push({ name: p + "mlp.gate_proj.weight", shape: [c.denseFfn, h] });
      out.push({ name: p + "mlp.up_proj.weight", shape: [c.denseFfn, h] });
      out.push({ name: p + "mlp.down_proj.weight", shape: [h, c.denseFfn] });
      continue;
    }
    out.push(...moeTensors(c, l));
  }
  out.push({ name: "model.norm.weight", shape: [h] });
  if (!c.tieEmbeddings) out.push({ name: "lm_head.weight", shape: [c.vocabSize, h] });
  return out;
}

/** q, k, v, o (and their biases, q/k norms, sinks) of standard attention. */
function attentionTensors(c: ModelConfig, p: string): ExpectedTensor[] {
  const h = c.hiddenSize, d = c.headDim, q = c.numHeads * d, kv = c.numKvHeads * d;
  const out: ExpectedTensor[] = [
    { name: p + "q_proj.weight", shape: [q, h] },
    { name: p + "k_proj.weight", shape: [kv, h] },
    { name: p + "v_proj.weight", shape: [kv, h] },
    { name: p + "o_proj.weight", shape: [h, q] },
  ];
  if (c.qkvBias) {
    out.push({ name: p + "q_proj.bias", shape: [q] });
    out.push({ name: p + "k_proj.bias", shape: [kv] });
    out.push({ name: p + "v_proj.bias", shape: [kv] });
  }
  if (c.oBias) out.push({ name: p + "o_proj.bias", shape: [h] });
  if (c.qkNorm !== "none") {
    out.push({ name: p + "q_norm.weight", shape: [c.qkNorm === "whole" ? q : d] });
    out.push({ name: p + "k_norm.weight", shape: [c.qkNorm === "whole" ? kv : d] });
  }
  if (c.sinks) out.push({ name: p + "sinks", shape: [c.numHeads] });
  return out;
}

/** Multi-head latent attention's projections and norms. */
function mlaTensors(c: ModelConfig, p: string): ExpectedTensor[] {
  const m = c.mla!, h = c.hiddenSize, qk = c.numHeads * c.headDim;
  const latent = m.kvLoraRank + m.ropeDim;
  const out: ExpectedTensor[] = [];
  if (m.qLoraRank === null) out.push({ name: p + "q_proj.weight", shape: [qk, h] });
  else {
    out.push({ name: p + "q_a_proj.weight", shape: [m.qLoraRank, h] });
    if (m.bias) out.push({ name: p + "q_a_proj.bias", shape: [m.qLoraRank] });
    out.push({ name: p + "q_a_layernorm.weight", shape: [m.qLoraRank] });
    out.push({ name: p + "q_b_proj.weight", shape: [qk, m.qLoraRank] });
  }
  out.push({ name: p + "kv_a_proj_with_mqa.weight", shape: [latent, h] });
  if (m.bias) out.push({ name: p + "kv_a_proj_with_mqa.bias", shape: [latent] });
  out.push({ name: p + "kv_a_layernorm.weight", shape: [m.kvLoraRank] });
  out.push({
    name: p + "kv_b_proj.weight",
    shape: [c.numHeads * (m.nopeDim + c.vHeadDim), m.kvLoraRank],
  });
  out.push({ name: p + "o_proj.weight", shape: [h, c.numHeads * c.vHeadDim] });
  if (c.oBias) out.push({ name: p + "o_proj.bias", shape: [h] });
  return out;
}

/** Layer l's router, routed experts and shared experts. */
function moeTensors(c: ModelConfig, l: number): ExpectedTensor[] {
  const names = moeNames(c, l);
  const h = c.hiddenSize, E = c.numExperts, f = c.expertFfn, r = c.decomposedRank;
  const out: ExpectedTensor[] = [{ name: names.router, shape: [E, h] }];
  if (names.logitBias) out.push({ name: names.logitBias, shape: [E] });
  if (names.selectionBias) out.push({ name: names.selectionBias, shape: [E] });
  if (c.expertFormat === "fused") {
    out.push({ name: names.gateUp, shape: [E, 2 * f, h] });
    out.push({ name: names.down, shape: [E, h, f] });
  } else if (c.expertFormat === "mxfp4") {
    // blocks of 32 values along each matrix's input, 16 bytes each, one E8M0 scale per block
    const up = `num_local_experts ${E}, 2 × intermediate_size ${
      2 * f
    } rows, hidden_size ${h} / 32 blocks`;
    const dn = `num_local_experts ${E}, hidden_size ${h} rows, intermediate_size ${f} / 32 blocks`;
    const u8 = "U8" as const;
    out.push({
      name: names.gateUp + "_blocks",
      shape: [E, 2 * f, h / 32, 16],
      dtype: u8,
      fields: up + " of 16 bytes",
    });
    out.push({ name: names.gateUp + "_scales", shape: [E, 2 * f, h / 32], dtype: u8, fields: up });
    out.push({ name: names.gateUp + "_bias", shape: [E, 2 * f] });
    out.push({
      name: names.down + "_blocks",
      shape: [E, h, f / 32, 16],
      dtype: u8,
      fields: dn + " of 16 bytes",
    });
    out.push({ name: names.down + "_scales", shape: [E, h, f / 32], dtype: u8, fields: dn });
    out.push({ name: names.down + "_bias", shape: [E, h] });
  } else {
    for (let e = 0; e < E; e++) {
      for (const which of ["gate", "up", "down"] as const) {
        const x = names.expert(e, which);
        const [o, i] = which === "down" ? [h, f] : [f, h];
        if (r === null) out.push({ name: x + ".weight", shape: [o, i] });
        else out.push({ name: x + ".u", shape: [o, r] }, { name: x + ".v", shape: [r, i] });
      }
    }
  }
  if (names.shared) {
    const fs = c.sharedFfn;
    out.push({ name: names.shared + ".gate_proj.weight", shape: [fs, h] });
    out.push({ name: names.shared + ".up_proj.weight", shape: [fs, h] });
    out.push({ name: names.shared + ".down_proj.weight", shape: [h, fs] });
  }
  if (names.sharedGate) out.push({ name: names.sharedGate, shape: [1, h] });
  return out;
}

async function readJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw new DataError(`Cannot read ${path}: ${messageOf(error)}.`);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new DataError(`${path} is not valid JSON: ${messageOf(error)}.`);
  }
}

/** Weight file paths of a checkpoint directory (single file or index shards). */
async function weightFiles(dir: string): Promise<string[]> {
  const single = await modelFileWithin(dir, "model.safetensors");
  if (await pathExists(single)) return [single];
  const indexPath = await modelFileWithin(dir, "model.safetensors.index.json");
  if (!(await pathExists(indexPath))) {
    throw new DataError(
      `Checkpoint directory ${dir} has neither model.safetensors nor model.safetensors.index.json.`,
    );
  }
  const index = await readJson(indexPath) as { weight_map?: Record<string, string> };
  if (typeof index?.weight_map !== "object" || index.weight_map === null) {
    throw new DataError(`${indexPath} has no weight_map object.`);
  }
  const shards = [...new Set(Object.values(index.weight_map))].sort();
  for (const s of shards) {
    if (
      typeof s !== "string" || s === "" || s === "." || s === ".." || s.includes("/") ||
      s.includes("\\")
    ) {
      throw new DataError(
        `${indexPath} lists shard ${JSON.stringify(s)}, expected a file name in ${dir}.`,
      );
    }
    // A missing shard is named when it is opened; a folder would fail there as a stack trace.
    await modelFileWithin(dir, s);
    const info = await Deno.stat(`${dir}/${s}`).catch(() => null);
    if (info && !info.isFile) {
      throw new DataError(`${indexPath} lists shard ${JSON.stringify(s)}, which is not a file.`);
    }
  }
  return shards.map((s) => `${dir}/${s}`);
}

/** Reads config and headers and checks every expected tensor; reads no weights. */
export async function openCheckpoint(dir: string): Promise<Checkpoint> {
  const configPath = await modelFileWithin(dir, "config.json");
  const config = parseConfig(await readJson(configPath), configPath);
  const paths = await weightFiles(dir);
  const tensors = new Map<string, TensorInfo>();
  const files: { path: string; bytes: number }[] = [];
  for (const path of paths) {
    const header = await readHeader(path);
    files.push({ path, bytes: (await Deno.stat(path)).size });
    for (const [name, info] of header) {
      if (tensors.has(name)) {
        throw new DataError(
          `Tensor ${name} appears in both ${tensors.get(name)!.file} and ${path}.`,
        );
      }
      tensors.set(name, info);
    }
  }
  const where = paths.length === 1 ? paths[0]! : `the shards of ${dir}`;
  const dtypeCounts = new Map<string, number>();
  for (const want of expectedTensors(config)) {
    const got = tensors.get(want.name);
    if (got === undefined) {
      throw new DataError(
        `Tensor ${want.name} is missing from ${where}, expected shape [${
          want.shape.join(", ")
        }] from config.json.`,
      );
    }
    if (got.shape.length !== want.shape.length || got.shape.some((v, i) => v !== want.shape[i])) {
      throw new DataError(
        `Tensor ${want.name} in ${got.file} has shape [${got.shape.join(", ")}], expected [${
          want.shape.join(", ")
        }] from config.json${want.fields ? ` (${want.fields})` : ""}.`,
      );
    }
    if (want.dtype !== undefined) {
      if (got.dtype !== want.dtype) {
        throw new DataError(
          `Tensor ${want.name} in ${got.file} has dtype ${got.dtype}, expected ${want.dtype}.`,
        );
      }
      continue;
    }
    if (!(got.dtype in FLOAT_DTYPES)) {
      throw new DataError(
        `Tensor ${want.name} in ${got.file} has dtype ${got.dtype}, expected F32, F16 or BF16.`,
      );
    }
    dtypeCounts.set(got.dtype, (dtypeCounts.get(got.dtype) ?? 0) + 1);
  }
  const main = [...dtypeCounts.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] ?? "F32";
  return { dir, config, tensors, files, dtype: FLOAT_DTYPES[main]! };
}

/** One validated tensor as f32 (f16 and bf16 are widened exactly). */
export async function readFloat32(checkpoint: Checkpoint, name: string): Promise<Float32Array> {
  const info = checkpoint.tensors.get(name);
  if (info === undefined) throw new DataError(`Tensor ${name} is missing from ${checkpoint.dir}.`);
  return toFloat32(await readTensorBytes(info), info.dtype, name);
}
