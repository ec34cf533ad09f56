/**
 * A random Mixtral checkpoint of a given shape in a directory (benchmarks,
 * tests): weights drawn as the fixtures' are (linear ~ N(0, 1/in), embeddings
 * ~ N(0, 1), norms ~ U(0.5, 1.5)) from a seeded generator, f32.
 */
import { Rng } from "../common/random.ts";
import { expectedTensors } from "./checkpoint.ts";
import { parseConfig } from "./config.ts";
import { writeSafetensors } from "./safetensors.ts";

export interface RandomMixtralShape {
  /** Defaults: the tiny-moe shape (fixtures/train/train.py). */
  hidden?: number; // 192
  ffn?: number; // 384
  layers?: number; // 4
  heads?: number; // 6
  kvHeads?: number; // 2
  experts?: number; // 8
  topK?: number; // 2
  vocab?: number; // 4096
  seed?: number; // 1
  slidingWindow?: number | null; // null (full attention)
}

export async function writeRandomMixtral(
  dir: string,
  shape: RandomMixtralShape = {},
): Promise<void> {
  const config = {
    architectures: ["MixtralForCausalLM"],
    model_type: "mixtral",
    hidden_size: shape.hidden ?? 192,
    intermediate_size: shape.ffn ?? 384,
    num_hidden_layers: shape.layers ?? 4,
    num_attention_heads: shape.heads ?? 6,
    num_key_value_heads: shape.kvHeads ?? 2,
    num_local_experts: shape.experts ?? 8,
    num_experts_per_tok: shape.topK ?? 2,
    vocab_size: shape.vocab ?? 4096,
    max_position_embeddings: 1024,
    rms_norm_eps: 1e-5,
    rope_parameters: { rope_type: "default", rope_theta: 10000.0 },
    sliding_window: shape.slidingWindow ?? null,
    hidden_act: "silu",
    tie_word_embeddings: false,
    bos_token_id: 1,
    eos_token_id: 2,
    dtype: "float32",
  };
  await writeRandomCheckpoint(dir, config, shape.seed ?? 1);
}

/**
 * Any family: writes `config` as config.json and one random tensor for every
 * tensor the config implies (checkpoint.ts expectedTensors), f32 (MXFP4
 * blocks and scales: random bytes).
 */
export async function writeRandomCheckpoint(
  dir: string,
  config: Record<string, unknown>,
  seed = 1,
): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config, null, 2));
  const rng = new Rng(seed);
  const tensors: Parameters<typeof writeSafetensors>[1] = {};
  for (const t of expectedTensors(parseConfig(config, "config.json"))) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (t.dtype === "U8") {
      // MXFP4: random nibbles; scales 2^-5..2^-2 so that the weights are of order 1/√in
      const bytes = new Uint8Array(n);
      const scales = t.name.endsWith("_scales");
      for (let i = 0; i < n; i++) {
        bytes[i] = scales ? 122 + Math.floor(rng.next() * 4) : Math.floor(rng.next() * 256);
      }
      tensors[t.name] = { shape: t.shape, dtype: "U8", bytes };
      continue;
    }
    const data = new Float32Array(n);
    if (t.name.endsWith(".bias")) { for (let i = 0; i < n; i++) data[i] = 0.1 * rng.normal(); }
    else if (t.shape.length === 1) { for (let i = 0; i < n; i++) data[i] = 0.5 + rng.next(); }
    else {
      const scale = t.name.includes("embed") ? 1 : 1 / Math.sqrt(t.shape[1]!);
      for (let i = 0; i < n; i++) data[i] = rng.normal() * scale;
    }
    tensors[t.name] = { shape: t.shape, data };
  }
  await writeSafetensors(`${dir}/model.safetensors`, tensors);
}
