/**
 * A checkpoint directory: `config.json`, `model.safetensors` or the shards of
 * `model.safetensors.index.json`, `tokenizer.json`, `tokenizer_config.json`.
 *
 * `openCheckpoint` validates everything before a weight byte is read: every
 * safetensors header (see safetensors.ts), then every tensor the config implies
 * by name, shape and dtype (the Hub layout: one 2-D tensor per expert matrix).
 * Tensors the engine does not use (e.g. rotary caches) are ignored.
 */
import { DataError, messageOf } from "../common/errors.ts";
import { type ModelConfig, parseConfig } from "./config.ts";
import { readHeader, readTensorBytes, type TensorInfo, toFloat32 } from "./safetensors.ts";
import { pathExists } from "../common/fs.ts";

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
}

/** Families whose forward the engine runs (the others' routers are read: router.ts). */
const RUNNABLE = new Set<string>(["mixtral", "olmoe", "qwen2_moe", "qwen3_moe"]);

const FLOAT_DTYPES: Record<string, string> = { F32: "float32", F16: "float16", BF16: "bfloat16" };

/** Prefix of layer l's MoE block tensors, and the names of the three expert matrices. */
export function expertNames(
  config: ModelConfig,
): { block: string; gate: string; up: string; down: string } {
  return config.family === "mixtral"
    ? { block: "block_sparse_moe", gate: "w1", up: "w3", down: "w2" }
    : { block: "mlp", gate: "gate_proj", up: "up_proj", down: "down_proj" };
}

/** Every tensor the config implies, with its shape (Hub layout, linear weights [out, in]). */
export function expectedTensors(config: ModelConfig): ExpectedTensor[] {
  const c = config;
  const h = c.hiddenSize, d = c.headDim, q = c.numHeads * d, kv = c.numKvHeads * d;
  const out: ExpectedTensor[] = [{ name: "model.embed_tokens.weight", shape: [c.vocabSize, h] }];
  const names = expertNames(c);
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    out.push({ name: p + "input_layernorm.weight", shape: [h] });
    out.push({ name: p + "post_attention_layernorm.weight", shape: [h] });
    out.push({ name: p + "self_attn.q_proj.weight", shape: [q, h] });
    out.push({ name: p + "self_attn.k_proj.weight", shape: [kv, h] });
    out.push({ name: p + "self_attn.v_proj.weight", shape: [kv, h] });
    out.push({ name: p + "self_attn.o_proj.weight", shape: [h, q] });
    if (c.qkvBias) {
      out.push({ name: p + "self_attn.q_proj.bias", shape: [q] });
      out.push({ name: p + "self_attn.k_proj.bias", shape: [kv] });
      out.push({ name: p + "self_attn.v_proj.bias", shape: [kv] });
    }
    if (c.qkNorm !== "none") {
      out.push({ name: p + "self_attn.q_norm.weight", shape: [c.qkNorm === "whole" ? q : d] });
      out.push({ name: p + "self_attn.k_norm.weight", shape: [c.qkNorm === "whole" ? kv : d] });
    }
    if (!c.isMoe[l]) {
      out.push({ name: p + "mlp.gate_proj.weight", shape: [c.denseFfn, h] });
      out.push({ name: p + "mlp.up_proj.weight", shape: [c.denseFfn, h] });
      out.push({ name: p + "mlp.down_proj.weight", shape: [h, c.denseFfn] });
      continue;
    }
    const b = p + names.block + ".";
    out.push({ name: b + "gate.weight", shape: [c.numExperts, h] });
    const f = c.expertFfn, r = c.decomposedRank;
    for (let e = 0; e < c.numExperts; e++) {
      const x = `${b}experts.${e}.`;
      if (r === null) {
        out.push({ name: x + names.gate + ".weight", shape: [f, h] });
        out.push({ name: x + names.up + ".weight", shape: [f, h] });
        out.push({ name: x + names.down + ".weight", shape: [h, f] });
      } else {
        out.push({ name: x + names.gate + ".u", shape: [f, r] }, {
          name: x + names.gate + ".v",
          shape: [r, h],
        });
        out.push({ name: x + names.up + ".u", shape: [f, r] }, {
          name: x + names.up + ".v",
          shape: [r, h],
        });
        out.push({ name: x + names.down + ".u", shape: [h, r] }, {
          name: x + names.down + ".v",
          shape: [r, f],
        });
      }
    }
    if (c.sharedFfn > 0) {
      const s = b + "shared_expert.";
      out.push({ name: s + "gate_proj.weight", shape: [c.sharedFfn, h] });
      out.push({ name: s + "up_proj.weight", shape: [c.sharedFfn, h] });
      out.push({ name: s + "down_proj.weight", shape: [h, c.sharedFfn] });
      out.push({ name: b + "shared_expert_gate.weight", shape: [1, h] });
    }
  }
  out.push({ name: "model.norm.weight", shape: [h] });
  if (!c.tieEmbeddings) out.push({ name: "lm_head.weight", shape: [c.vocabSize, h] });
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
  const single = `${dir}/model.safetensors`;
  if (await pathExists(single)) return [single];
  const indexPath = `${dir}/model.safetensors.index.json`;
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
    if (typeof s !== "string" || s.includes("/") || s.includes("\\")) {
      throw new DataError(
        `${indexPath} lists shard ${JSON.stringify(s)}, expected a file name in ${dir}.`,
      );
    }
  }
  return shards.map((s) => `${dir}/${s}`);
}

/** Reads config and headers and checks every expected tensor; reads no weights. */
export async function openCheckpoint(dir: string): Promise<Checkpoint> {
  const configPath = `${dir}/config.json`;
  const config = parseConfig(await readJson(configPath), configPath);
  if (!RUNNABLE.has(config.family)) {
    throw new DataError(
      `Field model_type in ${configPath} is ${
        JSON.stringify(config.family)
      }: its router is read, but the engine does not run its forward yet.`,
    );
  }
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
        }] from config.json.`,
      );
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
