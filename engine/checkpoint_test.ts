/**
 * Corrupted checkpoints give one-sentence DataErrors naming the file or
 * tensor, the expected and the received value. Each case copies
 * fixtures/models/tiny-mixtral-swa into a temp dir and breaks one thing.
 */
import assert from "node:assert/strict";
import { DataError } from "../common/errors.ts";
import { openCheckpoint, readFloat32 } from "./checkpoint.ts";
import { describeCheckpoint } from "./inspect.ts";
import { loadModel } from "./model.ts";
import { readHeader, toHalfBits, writeSafetensors } from "./safetensors.ts";

Deno.env.set("XDG_RUNTIME_DIR", Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp");
const FIXTURE = new URL("../fixtures/models/tiny-mixtral-swa/", import.meta.url).pathname;
const WEIGHTS = "model.safetensors";

async function copyFixture(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-ckpt-test-" });
  for (const f of ["config.json", WEIGHTS, "tokenizer.json", "tokenizer_config.json"]) {
    await Deno.copyFile(`${FIXTURE}${f}`, `${dir}/${f}`);
  }
  return dir;
}

/** Splits a safetensors file into its header object and data section. */
// deno-lint-ignore no-explicit-any
async function parts(file: string): Promise<{ header: Record<string, any>; data: Uint8Array }> {
  const bytes = await Deno.readFile(file);
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  return {
    header: JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))),
    data: bytes.subarray(8 + n),
  };
}

async function writeParts(file: string, header: Record<string, unknown>, data: Uint8Array) {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  await Deno.writeFile(file, out);
}

async function expectError(
  mutate: (dir: string) => Promise<void>,
  pattern: RegExp,
): Promise<void> {
  const dir = await copyFixture();
  try {
    await mutate(dir);
    await assert.rejects(() => openCheckpoint(dir), (e: unknown) => {
      assert.ok(e instanceof DataError, `expected a DataError, got ${e}`);
      assert.match(e.message, pattern);
      // one sentence: a single final full stop, no line breaks
      assert.ok(!e.message.includes("\n"));
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("the intact fixture opens and describes itself", async () => {
  const ck = await openCheckpoint(FIXTURE);
  assert.equal(ck.config.family, "mixtral");
  assert.deepEqual(ck.config.window, [7, 7]);
  const d = await describeCheckpoint(FIXTURE);
  assert.equal(d.family, "mixtral");
  assert.equal(d.experts, 6);
  assert.equal(d.top_k, 3);
  assert.equal(d.dtype, "float32");
});

Deno.test("truncated safetensors file", async () => {
  await expectError(
    async (dir) => {
      const bytes = await Deno.readFile(`${dir}/${WEIGHTS}`);
      await Deno.writeFile(`${dir}/${WEIGHTS}`, bytes.subarray(0, bytes.length - 1000));
    },
    /^Tensor \S+ in .*model\.safetensors has data_offsets \[\d+, \d+\], expected 0 ≤ begin ≤ end ≤ \d+ \(the data section's size\)\.$/,
  );
});

Deno.test("file shorter than its header", async () => {
  await expectError(
    async (dir) => {
      const bytes = await Deno.readFile(`${dir}/${WEIGHTS}`);
      await Deno.writeFile(`${dir}/${WEIGHTS}`, bytes.subarray(0, 100));
    },
    /^Safetensors file .*model\.safetensors declares a \d+-byte header, expected at most 92 \(file is 100 bytes\)\.$/,
  );
});

Deno.test("header offsets past the end of the file", async () => {
  await expectError(
    async (dir) => {
      const { header, data } = await parts(`${dir}/${WEIGHTS}`);
      header["model.norm.weight"].data_offsets = [data.length, data.length + 216];
      await writeParts(`${dir}/${WEIGHTS}`, header, data);
    },
    /^Tensor model\.norm\.weight in .*model\.safetensors has data_offsets \[\d+, \d+\], expected 0 ≤ begin ≤ end ≤ \d+ \(the data section's size\)\.$/,
  );
});

Deno.test("overlapping tensors", async () => {
  await expectError(
    async (dir) => {
      const { header, data } = await parts(`${dir}/${WEIGHTS}`);
      const a = header["model.layers.1.input_layernorm.weight"].data_offsets;
      header["model.layers.0.input_layernorm.weight"].data_offsets = [a[0] + 4, a[1] + 4];
      await writeParts(`${dir}/${WEIGHTS}`, header, data);
    },
    /^Tensor \S+ in .*model\.safetensors overlaps tensor \S+: it starts at data offset \d+, expected at least \d+\.$/,
  );
});

Deno.test("unknown dtype", async () => {
  await expectError(
    async (dir) => {
      const { header, data } = await parts(`${dir}/${WEIGHTS}`);
      header["lm_head.weight"].dtype = "F12";
      await writeParts(`${dir}/${WEIGHTS}`, header, data);
    },
    /^Tensor lm_head\.weight in .*model\.safetensors has dtype "F12", expected one of F64, F32, F16, BF16, /,
  );
});

Deno.test("wrong dtype for a weight", async () => {
  await expectError(
    async (dir) => {
      const { header, data } = await parts(`${dir}/${WEIGHTS}`);
      header["model.norm.weight"].dtype = "I32";
      await writeParts(`${dir}/${WEIGHTS}`, header, data);
    },
    /^Tensor model\.norm\.weight in .*model\.safetensors has dtype I32, expected F32, F16 or BF16\.$/,
  );
});

Deno.test("size that disagrees with shape × dtype", async () => {
  await expectError(
    async (dir) => {
      const { header, data } = await parts(`${dir}/${WEIGHTS}`);
      header["model.norm.weight"].dtype = "F16";
      await writeParts(`${dir}/${WEIGHTS}`, header, data);
    },
    /^Tensor model\.norm\.weight in .*model\.safetensors has 216 bytes of data, expected 108 for shape \[54\] of F16\.$/,
  );
});

Deno.test("a missing expert tensor", async () => {
  await expectError(
    async (dir) => {
      const { header, data } = await parts(`${dir}/${WEIGHTS}`);
      delete header["model.layers.1.block_sparse_moe.experts.3.w2.weight"];
      await writeParts(`${dir}/${WEIGHTS}`, header, data);
    },
    /^Tensor model\.layers\.1\.block_sparse_moe\.experts\.3\.w2\.weight is missing from .*model\.safetensors, expected shape \[54, 38\] from config\.json\.$/,
  );
});

Deno.test("a config that disagrees with the weights", async () => {
  await expectError(
    async (dir) => {
      const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
      config.intermediate_size = 40;
      await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
    },
    /^Tensor model\.layers\.0\.block_sparse_moe\.experts\.0\.w1\.weight in .*model\.safetensors has shape \[38, 54\], expected \[40, 54\] from config\.json\.$/,
  );
});

Deno.test("a config field of the wrong type", async () => {
  await expectError(
    async (dir) => {
      const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
      config.num_local_experts = "six";
      await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
    },
    /^Field num_local_experts in .*config\.json is "six", expected a positive integer of at most \d+\.$/,
  );
});

Deno.test("an absurd size is refused before anything is allocated", async () => {
  await expectError(
    async (dir) => {
      const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
      config.num_hidden_layers = 1e300;
      await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
    },
    /^Field num_hidden_layers in .*config\.json is 1e\+300, expected a positive integer of at most 1024\.$/,
  );
});

Deno.test("an unsupported family", async () => {
  await expectError(
    async (dir) => {
      const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
      config.model_type = "llama4";
      await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
    },
    /^Field model_type in .*config\.json is "llama4", expected one of mixtral, olmoe, qwen2_moe, qwen3_moe, granitemoe, deepseek_v2, deepseek_v3, glm4_moe, gpt_oss \(not supported: llama4, phimoe, jamba, dbrx, jetmoe, minimax, qwen3_next\)\.$/,
  );
});

Deno.test("sharded checkpoints load through the index, and a missing shard is named", async () => {
  const dir = await copyFixture();
  try {
    const { header, data } = await parts(`${dir}/${WEIGHTS}`);
    const names = Object.keys(header).filter((n) => n !== "__metadata__").sort();
    const half = Math.floor(names.length / 2);
    const weightMap: Record<string, string> = {};
    for (const [i, group] of [names.slice(0, half), names.slice(half)].entries()) {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      const tensors: Record<string, { shape: number[]; dtype: string; bytes: Uint8Array }> = {};
      for (const n of group) {
        const [b, e] = header[n].data_offsets;
        tensors[n] = { shape: header[n].shape, dtype: header[n].dtype, bytes: data.slice(b, e) };
        weightMap[n] = file;
      }
      await writeSafetensors(`${dir}/${file}`, tensors);
    }
    await Deno.remove(`${dir}/${WEIGHTS}`);
    await Deno.writeTextFile(
      `${dir}/model.safetensors.index.json`,
      JSON.stringify({ metadata: {}, weight_map: weightMap }),
    );
    const ck = await openCheckpoint(dir);
    assert.equal(ck.files.length, 2);
    assert.equal((await readHeader(`${dir}/model-00001-of-00002.safetensors`)).size, half);
    await Deno.remove(`${dir}/model-00002-of-00002.safetensors`);
    await assert.rejects(
      () => openCheckpoint(dir),
      /^DataError: Cannot open safetensors file .*model-00002-of-00002\.safetensors/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("f16 and bf16 checkpoints load as their exact f32 values", async () => {
  const { toFloat32 } = await import("./safetensors.ts");
  const { header, data } = await parts(`${FIXTURE}${WEIGHTS}`);
  for (const dtype of ["F16", "BF16"]) {
    const dir = await copyFixture();
    try {
      const tensors: Record<string, { shape: number[]; dtype: string; bytes: Uint8Array }> = {};
      const widened: Record<string, Float32Array> = {};
      for (const [name, h] of Object.entries(header)) {
        if (name === "__metadata__") continue;
        const [b, e] = h.data_offsets;
        const f = new Float32Array(data.slice(b, e).buffer);
        const bits = new Uint16Array(f.length);
        for (let i = 0; i < f.length; i++) {
          bits[i] = dtype === "F16"
            ? toHalfBits(f[i]!)
            : new Uint32Array(new Float32Array([f[i]!]).buffer)[0]! >>> 16;
        }
        const bytes = new Uint8Array(bits.buffer);
        tensors[name] = { shape: h.shape, dtype, bytes };
        widened[name] = toFloat32(bytes, dtype, name);
      }
      await writeSafetensors(`${dir}/${WEIGHTS}`, tensors);
      const ck = await openCheckpoint(dir);
      assert.equal(ck.dtype, dtype === "F16" ? "float16" : "bfloat16");
      const { readFloat32 } = await import("./checkpoint.ts");
      const norm = await readFloat32(ck, "model.norm.weight");
      const original = new Float32Array(
        data.slice(...header["model.norm.weight"].data_offsets as [number, number]).buffer,
      );
      for (let i = 0; i < norm.length; i++) {
        // widening is exact, and the 16-bit value is within its rounding of the f32 one
        assert.equal(norm[i], widened["model.norm.weight"]![i]);
        assert.ok(
          Math.abs(norm[i]! - original[i]!) <=
            Math.abs(original[i]!) * (dtype === "F16" ? 2 ** -11 : 2 ** -7),
        );
      }
      // end to end: the 16-bit checkpoint computes what an f32 one with the widened values does
      const same = `${dir}/widened`;
      await Deno.mkdir(same);
      await Deno.copyFile(`${dir}/config.json`, `${same}/config.json`);
      const f32: Record<string, { shape: number[]; data: Float32Array }> = {};
      for (const [name, t] of Object.entries(tensors)) {
        f32[name] = { shape: t.shape, data: widened[name]! };
      }
      await writeSafetensors(`${same}/${WEIGHTS}`, f32);
      const a = await loadModel(dir), b = await loadModel(same);
      try {
        const ids = Uint32Array.from([1, 54, 260, 378, 490, 86, 405, 286, 371, 269]);
        assert.deepEqual(Array.from(await a.logits(ids)), Array.from(await b.logits(ids)));
        assert.equal(a.facts.dtype, dtype === "F16" ? "float16" : "bfloat16");
      } finally {
        a.destroy();
        b.destroy();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

Deno.test("a NaN or infinite weight is refused by tensor name", async () => {
  const source = new URL("../fixtures/models/tiny-olmoe/", import.meta.url).pathname;
  const dir = await Deno.makeTempDir({ prefix: "moetrace-nan-" });
  for (const name of ["config.json", "model.safetensors"]) {
    await Deno.copyFile(`${source}${name}`, `${dir}/${name}`);
  }
  const checkpoint = await openCheckpoint(dir);
  const name = "model.layers.1.mlp.experts.4.up_proj.weight";
  const info = checkpoint.tensors.get(name)!;
  const bytes = await Deno.readFile(`${dir}/model.safetensors`);
  // Element 7 of that tensor becomes +Inf (f32 bits 0x7f800000, little-endian).
  new DataView(bytes.buffer).setUint32(info.begin + 7 * 4, 0x7f800000, true);
  await Deno.writeFile(`${dir}/model.safetensors`, bytes);
  await assert.rejects(
    () => readFloat32(checkpoint, name),
    (e) =>
      e instanceof DataError &&
      e.message ===
        `Tensor ${name} in ${dir}/model.safetensors has a NaN or infinite value at element 7; expected finite weights.`,
  );
  await Deno.remove(dir, { recursive: true });
});
