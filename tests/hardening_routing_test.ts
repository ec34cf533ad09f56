/**
 * Corrupted routing must not exit 0: config.json numbers that make the
 * forward NaN are refused by name (Infinity shown as Infinity), and a router
 * that sees non-finite or all-equal logits (a weight of 3e38 overflows the
 * RMSNorm after it) stops the capture with the layer and token instead of
 * logging experts [0, 1] with weights [0.5, 0.5] for every token.
 */
import assert from "node:assert/strict";
import { DataError } from "../common/errors.ts";
import { parseConfig } from "../engine/config.ts";
import { loadModel } from "../engine/model.ts";
import { runCli } from "./cli_helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const TINY = `${ROOT}fixtures/models/tiny-moe`;

async function tinyConfig(): Promise<Record<string, unknown>> {
  return JSON.parse(await Deno.readTextFile(`${TINY}/config.json`));
}

/** parseConfig's error for the fixture config with `fields` changed (raw JSON, so 1e999 is Infinity). */
async function configError(fields: string): Promise<string> {
  const text = (await Deno.readTextFile(`${TINY}/config.json`)).replace(/\}\s*$/, `,${fields}}`);
  try {
    parseConfig(JSON.parse(text), "config.json");
  } catch (error) {
    assert.ok(error instanceof DataError, String(error));
    return error.message;
  }
  throw new Error(`config with ${fields} was accepted`);
}

Deno.test("config numbers that make activations NaN are refused, Infinity named as such", async () => {
  assert.equal(
    await configError(`"rms_norm_eps": 1e999`),
    "Field rms_norm_eps in config.json is Infinity, expected a finite positive number.",
  );
  assert.match(await configError(`"rms_norm_eps": 0`), /rms_norm_eps .* is 0, expected/);
  const base = await tinyConfig();
  for (const theta of ["0", "-1", "1e999"]) {
    const c = structuredClone(base) as Record<string, Record<string, unknown>>;
    c.rope_parameters!.rope_theta = JSON.parse(theta === "1e999" ? "1e999" : theta);
    assert.throws(
      () => parseConfig(c, "config.json"),
      (e: Error) =>
        e instanceof DataError &&
        e.message ===
          `Field rope_parameters.rope_theta in config.json is ${
            String(Number(theta))
          }, expected a finite positive number.`,
    );
  }
  const old = structuredClone(base);
  delete old.rope_parameters;
  old.rope_theta = -5;
  assert.throws(() => parseConfig(old, "config.json"), /Field rope_theta in config\.json is -5/);
});

Deno.test("a negative sliding_window or a string rope_scaling is refused, not ignored", async () => {
  const base = await tinyConfig();
  assert.equal(parseConfig({ ...base, sliding_window: null }, "c").window[0], null);
  assert.equal(parseConfig({ ...base, sliding_window: 16 }, "c").window[0], 16);
  for (const w of [-1, 0, 2.5, "4096"]) {
    assert.throws(
      () => parseConfig({ ...base, sliding_window: w }, "config.json"),
      (e: Error) =>
        e instanceof DataError &&
        e.message ===
          `Field sliding_window in config.json is ${
            JSON.stringify(w)
          }, expected a positive integer or null.`,
    );
  }
  const old = structuredClone(base);
  delete old.rope_parameters;
  assert.equal(parseConfig({ ...old, rope_scaling: null }, "c").rope.yarn, null);
  assert.throws(
    () => parseConfig({ ...old, rope_scaling: "linear" }, "config.json"),
    (e: Error) =>
      e instanceof DataError &&
      e.message === 'Field rope_scaling in config.json is "linear", expected an object or null.',
  );
});

/** The fixture checkpoint with row `token` of the embedding set to `value` (a copy in a temp folder). */
async function poisoned(token: number, value: number): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-poisoned-" });
  for await (const entry of Deno.readDir(TINY)) {
    if (entry.isFile) await Deno.copyFile(`${TINY}/${entry.name}`, `${dir}/${entry.name}`);
  }
  const bytes = await Deno.readFile(`${dir}/model.safetensors`);
  const view = new DataView(bytes.buffer);
  const headerLength = Number(view.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
  const embed = header["model.embed_tokens.weight"];
  const hidden = embed.shape[1] as number;
  const start = 8 + headerLength + embed.data_offsets[0] + token * hidden * 4;
  for (let j = 0; j < hidden; j++) view.setFloat32(start + j * 4, value, true);
  await Deno.writeFile(`${dir}/model.safetensors`, bytes);
  return dir;
}

Deno.test("a router that sees overflowed or NaN activations stops with the layer and token", async () => {
  // NaN weights never reach the GPU: the loader refuses them.
  const nan = await poisoned(7, NaN);
  await assert.rejects(loadModel(nan, { maxBatchTokens: 64 }), /NaN or infinite value/);
  await Deno.remove(nan, { recursive: true });
  for (const value of [3e38, -3e38]) {
    const dir = await poisoned(7, value);
    const model = await loadModel(dir, { maxBatchTokens: 64 });
    try {
      // Sequence 1's third token is the poisoned id; sequence 0 is clean.
      await assert.rejects(
        model.route([Uint32Array.from([1, 5, 6]), Uint32Array.from([1, 5, 7, 9])], {
          probs: false,
          lookahead: 0,
        }),
        (e: Error) =>
          e instanceof DataError &&
          e.message.startsWith(
            "The router of layer 0 gave logits that are NaN, infinite or all equal at token 2 of sequence 1:",
          ),
      );
      // The same model routes clean tokens as before: the check does not flag real logits.
      const [log] = await model.route([Uint32Array.from([1, 5, 6])], {
        probs: false,
        lookahead: 0,
      });
      assert.equal(log!.experts.length, 3 * 4 * 2);
    } finally {
      model.destroy();
      await Deno.remove(dir, { recursive: true });
    }
  }
});

Deno.test("capture on a checkpoint that overflows exits 1 without a complete trace", async () => {
  const dir = await poisoned(7, 3e38);
  try {
    // Token ids of the fixture tokenizer are not known here: poison every row.
    const bytes = await Deno.readFile(`${dir}/model.safetensors`);
    const view = new DataView(bytes.buffer);
    const headerLength = Number(view.getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
    const [from, to] = header["model.embed_tokens.weight"].data_offsets;
    for (let at = 8 + headerLength + from; at < 8 + headerLength + to; at += 4) {
      view.setFloat32(at, 3e38, true);
    }
    await Deno.writeFile(`${dir}/model.safetensors`, bytes);
    await Deno.writeTextFile(
      `${dir}/corpus.jsonl`,
      JSON.stringify({ text: "hello world", meta: { pile_set_name: "A" } }) + "\n",
    );
    const result = await runCli([
      "capture",
      "--model",
      dir,
      "--corpus",
      `${dir}/corpus.jsonl`,
      "--out",
      `${dir}/trace`,
    ]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /The router of layer 0 gave logits that are NaN/);
    const manifest = JSON.parse(await Deno.readTextFile(`${dir}/trace/manifest.json`));
    assert.equal(manifest.capture.complete, false);
    assert.equal(manifest.shards.length, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
