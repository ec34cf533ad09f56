/**
 * The output of OLMoE's `scripts/run_moe_analysis.py` (allenai/OLMoE): JSONL
 * rows `{"input_ids": [T], "predicted_token_ids": [T], "exp_ids": [T][k][L]}`,
 * one per 2048-token chunk of concatenated C4 text. Note the axis order:
 * `exp_ids` is token × choice × layer (the script stacks each layer's top-k
 * on the last axis), where moetrace's is token × layer × choice. Choices are
 * in descending router logit, first choice first. Each row becomes one
 * document of the file's domain (its name without extension); router weights
 * are not in the file, so the trace says weights were not recorded.
 */
import { DataError } from "../../common/errors.ts";
import { jsonLines } from "./json_lines.ts";
import type { ConfigFacts } from "./model_config.ts";
import { keptExperts, readIdCube, readTokenIds } from "./cube.ts";
import {
  baseName,
  type ImportSummary,
  type LayerPlan,
  modelFacts,
  planLayers,
  stagedImport,
} from "./sink.ts";

export async function importOlmoe(
  files: string[],
  out: string,
  config: ConfigFacts | null,
): Promise<ImportSummary> {
  return await stagedImport(out, async (sink) => {
    let plan: LayerPlan | null = null;
    let shape: { k: number; L: number; where: string } | null = null;
    for (const file of files) {
      const domain = baseName(file).replace(/\.[^.]*$/, "");
      for await (const { json, where } of jsonLines(file)) {
        if (typeof json !== "object" || json === null || Array.isArray(json)) {
          throw new DataError(`${where} must be an object with "input_ids" and "exp_ids".`);
        }
        const row = json as Record<string, unknown>;
        const tokens = readTokenIds(row.input_ids, where, "input_ids");
        if (!tokens || tokens.length === 0) {
          throw new DataError(`${where} field "input_ids" must be a non-empty list of token ids.`);
        }
        const cube = readIdCube(row.exp_ids, where, "exp_ids", shape ? [shape.k, shape.L] : null);
        const [T, k, L] = cube.dims;
        if (T !== tokens.length) {
          throw new DataError(
            `${where} field "exp_ids" has ${T} rows but "input_ids" has ${tokens.length} tokens; expected [tokens][top_k][layers].`,
          );
        }
        if (!shape) {
          shape = { k, L, where };
          plan = planLayers(L, config, where);
          if (config?.topK !== undefined && config.topK !== k) {
            throw new DataError(
              `${where} field "exp_ids" has ${k} choices per token ([tokens][top_k][layers]), but --model-config says num_experts_per_tok ${config.topK}.`,
            );
          }
          const facts = modelFacts({ plan, topK: k, name: baseName(files[0]!) }, config);
          await sink.open(facts, {
            corpus: files.join(","),
            domains: [],
            mode: "teacher-forced",
            lookahead: 0,
            probs: false,
            seed: 0,
            tool_version: "import",
            weights_recorded: false,
            documents:
              "one per row of run_moe_analysis.py's output (a fixed-length chunk of concatenated text)",
          }, { expertsInferred: config?.numExperts === undefined });
        }
        // [T][k][L] → [T][L][k]
        const transposed = new Int32Array(cube.data.length);
        for (let t = 0; t < T; t++) {
          const base = t * k * L;
          for (let j = 0; j < k; j++) {
            for (let l = 0; l < L; l++) transposed[base + l * k + j] = cube.data[base + j * L + l]!;
          }
        }
        const experts = keptExperts(
          transposed,
          T,
          L,
          k,
          plan!.keep,
          config?.numExperts,
          (t, l) => `${where} field "exp_ids[${t}][..][${l}]"`,
        );
        await sink.add({
          domain,
          tokens,
          pieces: Array.from(tokens, String),
          experts,
          weights: new Float32Array(experts.length).fill(1 / k),
        });
      }
    }
    return await sink.finish({
      import_format: "olmoe",
      exp_ids_axes: "[tokens][top_k][layers], transposed to [tokens][layers][top_k]",
    });
  });
}
