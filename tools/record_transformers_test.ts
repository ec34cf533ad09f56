/**
 * tools/record_transformers.py, run on the tiny checkpoints in
 * fixtures/models with Hugging Face's own code, then imported: the trace's
 * experts, weights and router distribution equal the goldens that
 * fixtures/train/goldens.py computed for the same prompts, the experts in the
 * goldens' order (the router's selection order: Granite returns its outputs
 * in another order, DeepSeek-V3 and GLM-4.5 choose with a bias their weights
 * lack). All models run in one Python process, so torch and transformers
 * load once. Needs torch and
 * transformers from pip's local wheel mirror (installed once into
 * .cache/pyenv-transformers); where they cannot be had the test is ignored
 * with the reason.
 */
import assert from "node:assert/strict";
import { runCli } from "../tests/cli_helpers.ts";
import { pythonEnv, runCommand } from "../tests/python_env.ts";
import { TraceReader } from "../trace/mod.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const PACKAGES = ["torch==2.13.0", "transformers==5.18.0", "safetensors==0.8.0"];
const MODELS = [
  "tiny-olmoe",
  "tiny-mixtral-swa",
  "tiny-qwen2-moe",
  "tiny-qwen3-moe",
  "tiny-granitemoe",
  "tiny-deepseek-v2",
  "tiny-deepseek-v3",
  "tiny-glm4-moe",
];
/**
 * Families whose goldens fixtures/train/goldens.py made in float64 (routers
 * with sigmoid scores, a selection bias, groups or a softmax over the top k):
 * recorded in float64 too, so near ties fall the same way.
 */
const FLOAT64 = new Set([
  "tiny-granitemoe",
  "tiny-deepseek-v2",
  "tiny-deepseek-v3",
  "tiny-glm4-moe",
]);

// One python for every model, so torch and transformers load once (seconds each time).
const DRIVER = `
import json, sys
sys.path.insert(0, sys.argv[1])
import record_transformers
for argv in json.loads(sys.argv[2]):
    record_transformers.main(argv)
`;

/** A python with torch and transformers, or why there is none. */
function pythonWithTransformers(): Promise<{ python: string } | { reason: string }> {
  return pythonEnv("pyenv-transformers", PACKAGES, "torch, transformers, safetensors");
}

/** The tensors of a safetensors file (F32 and I32 only, as the goldens hold). */
function readSafetensors(
  path: string,
): Map<string, { shape: number[]; data: Float32Array | Int32Array }> {
  const bytes = Deno.readFileSync(path);
  const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
  const tensors = new Map<string, { shape: number[]; data: Float32Array | Int32Array }>();
  for (
    const [name, info] of Object.entries(header) as [
      string,
      { dtype: string; shape: number[]; data_offsets: [number, number] },
    ][]
  ) {
    if (name === "__metadata__") continue;
    const [start, end] = info.data_offsets;
    const raw = bytes.slice(8 + headerLength + start, 8 + headerLength + end);
    const data = info.dtype === "I32" ? new Int32Array(raw.buffer) : new Float32Array(raw.buffer);
    tensors.set(name, { shape: info.shape, data });
  }
  return tensors;
}

// Probed once at load, so that a machine without the mirror shows the test as ignored, with why.
const env = await pythonWithTransformers();
if ("reason" in env) console.log(`ignored: ${env.reason}`);

Deno.test({
  name: "record_transformers.py logs what Hugging Face's models decide, and it imports exactly",
  ignore: "reason" in env,
  fn: async (t) => {
    if ("reason" in env) throw new Error(env.reason);
    const dir = await Deno.makeTempDir();
    const runs: string[][] = [];
    for (const model of MODELS) {
      const modelDir = `${ROOT}fixtures/models/${model}`;
      const golden = JSON.parse(await Deno.readTextFile(`${modelDir}/golden.json`));
      const prompts = golden.prompts as { index: number; ids: number[] }[];
      await Deno.writeTextFile(
        `${dir}/${model}.prompts.jsonl`,
        prompts.map((p) => JSON.stringify({ domain: `p${p.index}`, input_ids: p.ids })).join("\n") +
          "\n",
      );
      runs.push([
        "--eager",
        ...(FLOAT64.has(model) ? ["--dtype", "float64"] : []),
        "--model",
        modelDir,
        "--corpus",
        `${dir}/${model}.prompts.jsonl`,
        "--out",
        `${dir}/${model}.jsonl`,
      ]);
    }
    const recorded = await runCommand(env.python, [
      "-c",
      DRIVER,
      `${ROOT}tools`,
      JSON.stringify(runs),
    ]);
    assert.ok(recorded.ok, recorded.output);
    for (const model of MODELS) {
      await t.step(model, async () => {
        const modelDir = `${ROOT}fixtures/models/${model}`;
        const golden = JSON.parse(await Deno.readTextFile(`${modelDir}/golden.json`));
        const tensors = readSafetensors(`${modelDir}/golden.safetensors`);
        const prompts = golden.prompts as { index: number; ids: number[] }[];
        const log = `${dir}/${model}.jsonl`;
        const imported = await runCli(["import", log, "--out", `${dir}/${model}`]);
        assert.equal(imported.code, 0, imported.stderr);
        const reader = await TraceReader.open(`${dir}/${model}`);
        const facts = reader.manifest.model;
        assert.deepEqual(facts.moe_layers, golden.moe_layers);
        assert.equal(facts.num_experts, golden.num_experts);
        assert.equal(facts.top_k, golden.top_k);
        assert.equal(reader.manifest.capture.probs, true);
        assert.equal(reader.manifest.capture.weights_recorded, true);
        const M = facts.moe_layers.length;
        const k = facts.top_k;
        const E = facts.num_experts;
        let p = 0;
        for await (const doc of reader.documents()) {
          const prompt = prompts[p]!;
          assert.deepEqual(Array.from(doc.tokens), prompt.ids);
          const ids = tensors.get(`p${prompt.index}.topk_ids`)!; // [M, T, k]
          const weights = tensors.get(`p${prompt.index}.topk_weights`)!; // [M, T, k]
          const probs = tensors.get(`p${prompt.index}.probs`)!; // [M, T, E]
          const T = prompt.ids.length;
          for (let t = 0; t < T; t++) {
            for (let m = 0; m < M; m++) {
              for (let j = 0; j < k; j++) {
                const at = (t * M + m) * k + j;
                const g = (m * T + t) * k + j;
                assert.equal(
                  doc.experts[at],
                  ids.data[g],
                  `${model} p${p} token ${t} layer ${m} choice ${j}`,
                );
                assert.ok(
                  Math.abs(doc.weights[at]! - weights.data[g]!) < 1e-5,
                  `${model} weight ${t} ${m} ${j}`,
                );
              }
              for (let e = 0; e < E; e++) {
                const got = doc.probs![(t * M + m) * E + e]!;
                const want = probs.data[(m * T + t) * E + e]!;
                assert.ok(
                  Math.abs(got - want) < 1e-5,
                  `${model} prob ${t} ${m} ${e}: ${got} vs ${want}`,
                );
              }
            }
          }
          p++;
        }
        assert.equal(p, prompts.length);
      });
    }
    await Deno.remove(dir, { recursive: true });
  },
});
