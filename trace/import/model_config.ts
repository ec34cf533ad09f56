/**
 * `--model-config config.json`: the architecture facts a router log lacks
 * (expert count, hidden size, expert size, dtype, which layers are MoE),
 * read from a Hugging Face config.json. Only plain fields are read; nothing
 * in the file is run.
 */
import { DataError, messageOf } from "../../common/errors.ts";

/** What a config.json tells an importer; each field is absent when the config does not say. */
export interface ConfigFacts {
  name?: string;
  family?: string;
  numLayers?: number;
  /** Indices of the MoE layers, from first_k_dense_replace / mlp_only_layers / decoder_sparse_step. */
  moeLayers?: number[];
  numExperts?: number;
  topK?: number;
  numSharedExperts?: number;
  hiddenSize?: number;
  /** 3 · hidden · expert FFN width: a gated MLP's gate, up and down matrices (biases left out). */
  expertParams?: number;
  dtype?: string;
}

export async function readModelConfig(path: string): Promise<ConfigFacts> {
  let json: unknown;
  try {
    json = JSON.parse(await Deno.readTextFile(path));
  } catch (error) {
    throw new DataError(`Cannot read --model-config ${path}: ${messageOf(error)}.`);
  }
  return configFacts(json, path);
}

/** The facts in a parsed config.json (the `text_config` of a multimodal one). */
export function configFacts(json: unknown, path: string): ConfigFacts {
  if (!isObject(json)) throw new DataError(`--model-config ${path} must hold a JSON object.`);
  const config = isObject(json.text_config) ? { ...json, ...json.text_config } : json;
  const count = (...keys: string[]): number | undefined => {
    for (const key of keys) {
      const v = config[key];
      if (v === undefined || v === null) continue;
      if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
        throw new DataError(
          `--model-config ${path} field "${key}" must be a non-negative integer, got ${
            JSON.stringify(v)
          }.`,
        );
      }
      return v;
    }
    return undefined;
  };
  const facts: ConfigFacts = {};
  const name = config._name_or_path ?? config.name_or_path;
  if (typeof name === "string" && name !== "") facts.name = name;
  if (typeof config.model_type === "string") facts.family = config.model_type;
  const numLayers = count("num_hidden_layers", "n_layer", "num_layers");
  if (numLayers !== undefined) facts.numLayers = numLayers;
  const numExperts = count(
    "num_local_experts",
    "num_experts",
    "n_routed_experts",
    "moe_num_experts",
  );
  if (numExperts !== undefined) facts.numExperts = numExperts;
  const topK = count("num_experts_per_tok", "moe_top_k", "num_experts_per_token");
  if (topK !== undefined) facts.topK = topK;
  const hidden = count("hidden_size", "d_model", "n_embd");
  if (hidden !== undefined) facts.hiddenSize = hidden;
  const ffn = count("moe_intermediate_size", "expert_intermediate_size", "intermediate_size");
  if (hidden !== undefined && ffn !== undefined) facts.expertParams = 3 * hidden * ffn;
  const shared = count("n_shared_experts", "num_shared_experts");
  const sharedSize = count("shared_expert_intermediate_size");
  if (shared !== undefined) facts.numSharedExperts = shared;
  else if (sharedSize !== undefined) facts.numSharedExperts = sharedSize > 0 ? 1 : 0;
  const quant = isObject(config.quantization_config)
    ? config.quantization_config.quant_method
    : undefined;
  const dtype = typeof quant === "string" ? quant : config.torch_dtype ?? config.dtype;
  if (typeof dtype === "string") facts.dtype = dtype;
  if (numLayers !== undefined) facts.moeLayers = moeLayers(config, numLayers, path, count);
  return facts;
}

function moeLayers(
  config: Record<string, unknown>,
  numLayers: number,
  path: string,
  count: (...keys: string[]) => number | undefined,
): number[] {
  const all = Array.from({ length: numLayers }, (_, i) => i);
  // DeepSeek-V2/V3, Kimi: the first k layers are dense, then every moe_layer_freq-th.
  const firstDense = count("first_k_dense_replace");
  if (firstDense !== undefined) {
    const freq = count("moe_layer_freq") ?? 1;
    return all.filter((i) => i >= firstDense && (freq <= 1 || (i - firstDense) % freq === 0));
  }
  // Qwen2/3-MoE: mlp_only_layers are dense; otherwise every decoder_sparse_step-th layer is MoE.
  const mlpOnly = config.mlp_only_layers;
  if (mlpOnly !== undefined && mlpOnly !== null) {
    if (!Array.isArray(mlpOnly) || !mlpOnly.every((x) => Number.isInteger(x))) {
      throw new DataError(
        `--model-config ${path} field "mlp_only_layers" must be a list of layer indices.`,
      );
    }
  }
  const dense = new Set<number>((mlpOnly as number[] | undefined) ?? []);
  const step = count("decoder_sparse_step") ?? 1;
  return all.filter((i) => !dense.has(i) && (step <= 1 || (i + 1) % step === 0));
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
