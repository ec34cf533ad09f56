/**
 * Routing returned with each response by a serving engine, saved one
 * response per line (JSONL):
 *
 * - vLLM with `--enable-return-routed-experts`: `prompt_routed_experts`
 *   [prompt_len][moe_layers][top_k] at response level, `routed_experts`
 *   [gen_len][moe_layers][top_k] on each choice, token ids from
 *   `prompt_token_ids` and each choice's `token_ids` when present. Each
 *   choice is its own document: its prompt rows (phase 0), then its
 *   generated rows (phase 1). The last generated token never went through
 *   the model, so `routed_experts` may hold one row fewer than `token_ids`.
 * - SGLang with `return_routed_experts`: `meta_info.routed_experts`, base64
 *   of int32 values that reshape to (−1, num_hidden_layers,
 *   num_experts_per_tok), so `--model-config` is required; rows are the
 *   prompt's tokens then the generated ones but the last
 *   (`meta_info.prompt_tokens` tells them apart); token ids from `input_ids`
 *   (when the request was saved with the response) and `output_ids`. A line
 *   may also hold a list of responses (a batch request).
 *
 * The response id is kept as each document's request; a file's documents
 * take the file's name (without extension) as their domain.
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

export type ResponseFormat = "vllm" | "sglang-response";

/** One document's routing before the layer plan is applied. */
interface RawDoc {
  where: string;
  request: string;
  /** [R][L][k] expert ids. */
  rows: Int32Array;
  R: number;
  L: number;
  k: number;
  /** The first `prompt` rows are prompt tokens; the rest were generated. */
  prompt: number;
  /** [R] token ids, or null where the response did not carry them. */
  tokens: Uint32Array | null;
  /** Field named in id errors, e.g. `choices[0].routed_experts`. */
  describe: (row: number, layer: number) => string;
}

export async function importResponses(
  files: string[],
  out: string,
  config: ConfigFacts | null,
  format: ResponseFormat,
): Promise<ImportSummary> {
  if (
    format === "sglang-response" && (config?.numLayers === undefined || config.topK === undefined)
  ) {
    throw new DataError(
      `SGLang's routed_experts is a flat base64 array that reshapes to (tokens, num_hidden_layers, num_experts_per_tok); pass --model-config config.json to say those two numbers.`,
    );
  }
  return await stagedImport(out, async (sink) => {
    let plan: LayerPlan | null = null;
    let shape: { L: number; k: number; where: string } | null = null;
    let tokensRecorded = true;
    for (const file of files) {
      const domain = baseName(file).replace(/\.[^.]*$/, "");
      for await (const { json, where } of jsonLines(file)) {
        const raws = format === "vllm" ? vllmDocs(json, where) : sglangDocs(json, where, config!);
        for (const raw of raws) {
          if (!shape) {
            shape = { L: raw.L, k: raw.k, where: raw.where };
            plan = planLayers(raw.L, config, raw.where);
            if (config?.topK !== undefined && config.topK !== raw.k) {
              throw new DataError(
                `${raw.where} routes each token to ${raw.k} experts, but --model-config says num_experts_per_tok ${config.topK}.`,
              );
            }
            const facts = modelFacts({ plan, topK: raw.k, name: baseName(files[0]!) }, config);
            await sink.open(facts, {
              corpus: files.join(","),
              domains: [],
              mode: "generate",
              lookahead: 0,
              probs: false,
              seed: 0,
              tool_version: "import",
              weights_recorded: false,
              requests: true,
              documents: format === "vllm"
                ? "one per choice of each saved response: the prompt's rows, then the choice's"
                : "one per saved response",
            }, { expertsInferred: config?.numExperts === undefined });
          }
          if (raw.L !== shape.L || raw.k !== shape.k) {
            throw new DataError(
              `${raw.where} has ${raw.L} layers × top-${raw.k} per token, but ${shape.where} has ${shape.L} × top-${shape.k}; one import holds one model.`,
            );
          }
          if (raw.R === 0) continue;
          const experts = keptExperts(
            raw.rows,
            raw.R,
            raw.L,
            raw.k,
            plan!.keep,
            config?.numExperts,
            raw.describe,
          );
          tokensRecorded &&= raw.tokens !== null;
          const tokens = raw.tokens ?? new Uint32Array(raw.R);
          const phase = new Uint8Array(raw.R);
          phase.fill(1, raw.prompt);
          await sink.add({
            domain,
            tokens,
            pieces: raw.tokens ? Array.from(tokens, String) : new Array<string>(raw.R).fill(""),
            phase,
            experts,
            weights: new Float32Array(experts.length).fill(1 / raw.k),
            request: raw.request,
          });
        }
      }
    }
    return await sink.finish({ import_format: format }, { tokens_recorded: tokensRecorded });
  });
}

function vllmDocs(json: unknown, where: string): RawDoc[] {
  if (!isObject(json)) throw new DataError(`${where} must be a saved response (a JSON object).`);
  const choices = json.choices;
  if (!Array.isArray(choices) || choices.length === 0) {
    throw new DataError(`${where} field "choices" must be a non-empty list.`);
  }
  const request = typeof json.id === "string" ? json.id : `${where}`;
  const promptValue = json.prompt_routed_experts;
  const prompt = promptValue === null || promptValue === undefined
    ? null
    : readIdCube(promptValue, where, "prompt_routed_experts", null);
  const promptIds = readTokenIds(json.prompt_token_ids, where, "prompt_token_ids");
  if (prompt && promptIds && promptIds.length !== prompt.dims[0]) {
    throw new DataError(
      `${where} has ${promptIds.length} prompt_token_ids but ${
        prompt.dims[0]
      } rows of prompt_routed_experts; expected one row per prompt token.`,
    );
  }
  return choices.map((choice, c) => {
    const at = `choices[${c}]`;
    if (!isObject(choice)) throw new DataError(`${where} field "${at}" must be an object.`);
    if (choice.routed_experts === null || choice.routed_experts === undefined) {
      throw new DataError(
        `${where} field "${at}.routed_experts" is missing; was the server started with --enable-return-routed-experts?`,
      );
    }
    const inner: [number, number] | null = prompt && prompt.dims[0] > 0
      ? [prompt.dims[1], prompt.dims[2]]
      : null;
    const gen = readIdCube(choice.routed_experts, where, `${at}.routed_experts`, inner);
    const [G, L, k] = gen.dims[0] > 0 || !prompt ? gen.dims : [0, prompt.dims[1], prompt.dims[2]];
    if (L === 0) throw new DataError(`${where} has no routed rows in its prompt or ${at}.`);
    const ids = readTokenIds(choice.token_ids, where, `${at}.token_ids`);
    if (ids && ids.length !== G && ids.length !== G + 1) {
      throw new DataError(
        `${where} field "${at}.token_ids" has ${ids.length} tokens but "${at}.routed_experts" has ${G} rows; expected as many or one more (the last token has no forward pass).`,
      );
    }
    const P = prompt ? prompt.dims[0] : 0;
    const rows = new Int32Array((P + G) * L * k);
    if (prompt) rows.set(prompt.data);
    rows.set(gen.data, P * L * k);
    let tokens: Uint32Array | null = null;
    if (ids && (promptIds || P === 0)) {
      tokens = new Uint32Array(P + G);
      if (promptIds) tokens.set(promptIds);
      tokens.set(ids.subarray(0, G), P);
    }
    return {
      where: `${where} ${at}`,
      request,
      rows,
      R: P + G,
      L,
      k,
      prompt: P,
      tokens,
      describe: (row: number, layer: number) =>
        row < P
          ? `${where} field "prompt_routed_experts[${row}][${layer}]"`
          : `${where} field "${at}.routed_experts[${row - P}][${layer}]"`,
    };
  });
}

function sglangDocs(json: unknown, where: string, config: ConfigFacts): RawDoc[] {
  const items = Array.isArray(json) ? json : [json];
  return items.map((item, i) => {
    const at = Array.isArray(json) ? `${where} item ${i}` : where;
    if (!isObject(item) || !isObject(item.meta_info)) {
      throw new DataError(`${at} must be a saved SGLang response with "meta_info".`);
    }
    const meta = item.meta_info;
    const encoded = meta.routed_experts;
    if (typeof encoded !== "string") {
      throw new DataError(
        `${at} field "meta_info.routed_experts" must be a base64 string; was the request sent with return_routed_experts?`,
      );
    }
    let bytes: Uint8Array;
    try {
      bytes = (Uint8Array as unknown as { fromBase64(s: string): Uint8Array }).fromBase64(encoded);
    } catch {
      throw new DataError(`${at} field "meta_info.routed_experts" is not valid base64.`);
    }
    const L = config.numLayers!;
    const k = config.topK!;
    const rowBytes = 4 * L * k;
    if (bytes.length % rowBytes !== 0) {
      throw new DataError(
        `${at} field "meta_info.routed_experts" holds ${
          bytes.length / 4
        } int32 values, not a multiple of num_hidden_layers × num_experts_per_tok = ${L * k}.`,
      );
    }
    const R = bytes.length / rowBytes;
    const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
    const rows = new Int32Array(aligned.buffer, aligned.byteOffset, R * L * k);
    const promptTokens = meta.prompt_tokens;
    if (!Number.isInteger(promptTokens) || (promptTokens as number) < 0) {
      throw new DataError(`${at} field "meta_info.prompt_tokens" must be a count.`);
    }
    const P = Math.min(promptTokens as number, R);
    const inputIds = readTokenIds(item.input_ids, at, "input_ids");
    const outputIds = readTokenIds(item.output_ids, at, "output_ids");
    let tokens: Uint32Array | null = null;
    if (inputIds && outputIds) {
      if (inputIds.length !== promptTokens || outputIds.length < R - P) {
        throw new DataError(
          `${at} has ${inputIds.length} input_ids and ${outputIds.length} output_ids for ${R} routed rows of which ${promptTokens} are the prompt's.`,
        );
      }
      tokens = new Uint32Array(R);
      tokens.set(inputIds.subarray(0, P));
      tokens.set(outputIds.subarray(0, R - P), P);
    }
    const request = typeof meta.id === "string" ? meta.id : at;
    return {
      where: at,
      request,
      rows,
      R,
      L,
      k,
      prompt: P,
      tokens,
      describe: (row: number, layer: number) =>
        `${at} field "meta_info.routed_experts" row ${row} layer ${layer}`,
    };
  });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
