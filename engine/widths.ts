/**
 * Random checkpoints at the real widths of published MoE models (issue 17,
 * `bench widths`): each shape takes the hidden size, head layout, expert
 * count, top-k, expert and shared widths and vocabulary of its model from
 * that model's config.json, with the depth cut so that it fits in host
 * memory here (two layers, so that a router reads the output of routed
 * experts; DeepSeek-V2-Lite three, its first being dense; Mixtral-8x7B one,
 * whose 2.8 GB of experts per layer transformers would hold in float32), on top of the config of the fixture of its family
 * (fixtures/models/tiny-*), whose other fields transformers and the engine
 * already read alike.
 *
 * Weights are written as the published ones are stored (bf16; gpt-oss's
 * experts as MXFP4 blocks and scales), drawn uniform with the variance of
 * N(0, 1/in) for linear weights (embeddings N(0, 1)'s, norms U(0.5, 1.5)),
 * from a seeded generator, one tensor at a time straight into the file, so
 * a multi-gigabyte checkpoint never sits in memory whole.
 */
import { Rng } from "../common/random.ts";
import { expectedTensors } from "./checkpoint.ts";
import { parseConfig } from "./config.ts";

const FIXTURES = new URL("../fixtures/models/", import.meta.url).pathname;

/** One model's widths: its fixture family and the config.json fields that differ from the fixture's. */
export interface WidthShape {
  name: string;
  fixture: string;
  config: Record<string, unknown>;
}

/** The shapes of issue 17, from each model's published config.json. */
export const WIDTH_SHAPES: readonly WidthShape[] = [
  {
    name: "OLMoE-1B-7B",
    fixture: "tiny-olmoe",
    config: {
      hidden_size: 2048,
      intermediate_size: 1024,
      num_attention_heads: 16,
      num_key_value_heads: 16,
      num_experts: 64,
      num_experts_per_tok: 8,
      vocab_size: 50304,
      clip_qkv: null,
      max_position_embeddings: 4096,
      num_hidden_layers: 2,
    },
  },
  {
    name: "Qwen3-30B-A3B",
    fixture: "tiny-qwen3-moe",
    config: {
      hidden_size: 2048,
      head_dim: 128,
      num_attention_heads: 32,
      num_key_value_heads: 4,
      intermediate_size: 6144,
      moe_intermediate_size: 768,
      num_local_experts: 128,
      num_experts: 128,
      num_experts_per_tok: 8,
      vocab_size: 151936,
      max_position_embeddings: 40960,
      num_hidden_layers: 2,
    },
  },
  {
    name: "Qwen1.5-MoE-A2.7B",
    fixture: "tiny-qwen2-moe",
    config: {
      hidden_size: 2048,
      num_attention_heads: 16,
      num_key_value_heads: 16,
      intermediate_size: 5632,
      moe_intermediate_size: 1408,
      shared_expert_intermediate_size: 5632,
      num_experts: 60,
      num_experts_per_tok: 4,
      vocab_size: 151936,
      mlp_only_layers: [],
      layer_types: ["full_attention", "full_attention"],
      max_position_embeddings: 8192,
      num_hidden_layers: 2,
    },
  },
  {
    name: "DeepSeek-V2-Lite",
    fixture: "tiny-deepseek-v2",
    config: {
      hidden_size: 2048,
      num_attention_heads: 16,
      num_key_value_heads: 16,
      kv_lora_rank: 512,
      q_lora_rank: null,
      qk_nope_head_dim: 128,
      qk_rope_head_dim: 64,
      qk_head_dim: 192,
      head_dim: 64,
      v_head_dim: 128,
      intermediate_size: 10944,
      moe_intermediate_size: 1408,
      n_routed_experts: 64,
      n_shared_experts: 2,
      num_experts_per_tok: 6,
      first_k_dense_replace: 1,
      topk_method: "greedy",
      n_group: 1,
      topk_group: 1,
      routed_scaling_factor: 1.0,
      vocab_size: 102400,
      max_position_embeddings: 4096,
      num_hidden_layers: 3,
    },
  },
  {
    name: "gpt-oss-20b",
    fixture: "tiny-gpt-oss",
    config: {
      hidden_size: 2880,
      head_dim: 64,
      num_attention_heads: 64,
      num_key_value_heads: 8,
      intermediate_size: 2880,
      num_local_experts: 32,
      num_experts_per_tok: 4,
      vocab_size: 201088,
      sliding_window: 128,
      layer_types: ["sliding_attention", "full_attention"],
      max_position_embeddings: 4096,
      num_hidden_layers: 2,
    },
  },
  {
    name: "Mixtral-8x7B",
    fixture: "tiny-mixtral-swa",
    config: {
      hidden_size: 4096,
      intermediate_size: 14336,
      num_attention_heads: 32,
      num_key_value_heads: 8,
      num_local_experts: 8,
      num_experts_per_tok: 2,
      vocab_size: 32000,
      sliding_window: null,
      max_position_embeddings: 32768,
      num_hidden_layers: 1,
    },
  },
];

/** The shape's config.json: its fixture's, with the shape's fields and bf16 weights. */
export async function widthConfig(shape: WidthShape): Promise<Record<string, unknown>> {
  const base = JSON.parse(await Deno.readTextFile(`${FIXTURES}${shape.fixture}/config.json`));
  return { ...base, ...shape.config, dtype: "bfloat16", torch_dtype: "bfloat16" };
}

/**
 * config.json text for `config`, keeping the fields the fixture wrote as
 * floats floats (transformers' strict config classes refuse `0` for a float
 * field such as DeepSeek-V2's attention_dropout, and JSON.stringify writes 0.0
 * as 0).
 */
export async function widthConfigText(
  shape: WidthShape,
  config: Record<string, unknown>,
): Promise<string> {
  const text = await Deno.readTextFile(`${FIXTURES}${shape.fixture}/config.json`);
  const floats = new Set(
    [...text.matchAll(/"(\w+)":\s*-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?/g)]
      .filter((m) => /[.eE]/.test(m[0].split(":")[1]!))
      .map((m) => m[1]!),
  );
  return JSON.stringify(config, null, 2).replace(
    /"(\w+)": (-?\d+)(?=,?\n)/g,
    (all, key: string, value: string) => floats.has(key) ? `"${key}": ${value}.0` : all,
  );
}

/** Bytes of the checkpoint `config` implies (bf16 weights, MXFP4 tensors as stored). */
export function checkpointBytes(config: Record<string, unknown>): number {
  let bytes = 0;
  for (const t of expectedTensors(parseConfig(config, "config.json"))) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    bytes += t.dtype === "U8" ? n : 2 * n;
  }
  return bytes;
}

/**
 * Writes `configText` (`config` as config.json) and a random bf16 model.safetensors of every
 * tensor it implies, tensor by tensor (≤ one tensor in memory), then renames
 * the folder's marker `complete` into place so a killed run is redone.
 */
export async function writeWidthCheckpoint(
  dir: string,
  config: Record<string, unknown>,
  configText: string,
  seed = 1,
): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${dir}/config.json`, configText);
  const tensors = expectedTensors(parseConfig(config, `${dir}/config.json`));
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const bytes = t.dtype === "U8" ? n : 2 * n;
    header[t.name] = {
      dtype: t.dtype === "U8" ? "U8" : "BF16",
      shape: t.shape,
      data_offsets: [offset, offset + bytes],
    };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const head = new TextEncoder().encode(json);
  const file = await Deno.open(`${dir}/model.safetensors`, {
    write: true,
    create: true,
    truncate: true,
  });
  const rng = new Rng(seed);
  try {
    const length = new Uint8Array(8);
    new DataView(length.buffer).setBigUint64(0, BigInt(head.length), true);
    await writeAll(file, length);
    await writeAll(file, head);
    for (const t of tensors) await writeAll(file, randomTensor(rng, t));
  } finally {
    file.close();
  }
  await Deno.writeTextFile(`${dir}/complete`, "");
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await file.write(bytes.subarray(at));
}

/** One tensor's bytes: bf16 bits (the top half of an f32), or MXFP4 nibbles and E8M0 scales. */
function randomTensor(
  rng: Rng,
  t: { name: string; shape: number[]; dtype?: string },
): Uint8Array {
  const n = t.shape.reduce((a, b) => a * b, 1);
  if (t.dtype === "U8") {
    // scales 2^-5..2^-2 so that the weights are of order 1/√in, as writeRandomCheckpoint draws them
    const bytes = new Uint8Array(n);
    const scales = t.name.endsWith("_scales");
    for (let i = 0; i < n; i++) {
      bytes[i] = scales ? 122 + (rng.nextU32() & 3) : rng.nextU32() & 255;
    }
    return bytes;
  }
  const bits = new Uint16Array(n);
  const f = new Float32Array(1), u = new Uint32Array(f.buffer);
  // uniform on [-a, a] has variance a²/3: a = √3 σ
  const vector = t.shape.length === 1;
  const bias = t.name.endsWith(".bias");
  const sigma = bias ? 0.1 : t.name.includes("embed") ? 1 : 1 / Math.sqrt(t.shape[1] ?? 1);
  const a = Math.sqrt(3) * sigma;
  for (let i = 0; i < n; i++) {
    const r = rng.nextU32() / 4294967296;
    f[0] = vector && !bias ? 0.5 + r : (2 * r - 1) * a;
    bits[i] = (u[0]! + 0x8000) >>> 16; // round to nearest (ties away): any bf16 is a fair draw
  }
  return new Uint8Array(bits.buffer);
}
