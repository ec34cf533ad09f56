/**
 * moetrace's interchange JSONL (DESIGN.md "Trace format"), the format the
 * transformers recipe (tools/record_transformers.py) writes.
 *
 * Line 1: `{"moetrace_import": 1, "num_layers": M, "num_experts": E, "top_k": k}`
 *   optional: "model" (name), "moe_layers" (indices, default 0..M-1 with
 *   num_layers = M), "num_shared_experts", "hidden_size", "expert_params",
 *   "dtype", "family", "mode" ("teacher-forced" or "generate").
 * Then one document per line:
 *   `{"domain": "ArXiv", "tokens": [T], "experts": [T][M][k], "weights": [T][M][k]?,
 *     "probs": [T][M][E]?, "pieces": [T]?, "phase": [T]?, "request": "id"?, "arrival_step": n?}`
 *   Without "weights" every chosen expert gets 1/k (and unless every document
 *   had weights the manifest says capture.weights_recorded false); without
 *   "pieces" a token's piece is its id in decimal; "phase" is 0 (prompt) or
 *   1 (generated) per token, default 0. The first document decides which
 *   optional columns the trace has ("probs", "request", "arrival_step");
 *   every later document must carry the same ones.
 *
 * Several files are read in order into one trace; their headers must agree.
 */
import { DataError } from "../../common/errors.ts";
import { type ModelFacts, NO_EXPERT } from "../mod.ts";
import { jsonLines } from "./json_lines.ts";
import type { ConfigFacts } from "./model_config.ts";
import { baseName, type ImportedDoc, type ImportSummary, stagedImport } from "./sink.ts";

/** Converts interchange JSONL `files` into a trace at `out`; returns counts. */
export async function importJsonl(
  files: string | string[],
  out: string,
  config: ConfigFacts | null = null,
): Promise<ImportSummary> {
  const list = Array.isArray(files) ? files : [files];
  return await stagedImport(out, async (sink) => {
    let facts: ModelFacts | null = null;
    let mode: Mode = "teacher-forced";
    let columns: Columns | null = null;
    let allWeights = true;
    for (const file of list) {
      let header: { facts: ModelFacts; mode: Mode } | null = null;
      for await (const { json, where } of jsonLines(file)) {
        if (header === null) {
          header = parseHeader(json, where, file, config);
          if (facts && JSON.stringify(header.facts) !== JSON.stringify(facts)) {
            throw new DataError(
              `${where} describes another model than ${
                list[0]
              }'s header; files imported together must share one header.`,
            );
          }
          facts = header.facts;
          mode = header.mode;
          continue;
        }
        const doc = parseDocument(json, where, header.facts, columns);
        if (!sink.opened) {
          columns = columnsOf(doc);
          await sink.open(header.facts, {
            corpus: list.join(","),
            domains: [],
            mode,
            lookahead: 0,
            probs: columns.probs,
            seed: 0,
            tool_version: "import",
            requests: columns.request,
            arrival_steps: columns.arrivalStep,
          });
        }
        allWeights &&= doc.hasWeights;
        await sink.add(doc.doc);
      }
      if (header === null) throw new DataError(`${file} is empty; expected a header line.`);
    }
    return await sink.finish({ import_format: "interchange" }, { weights_recorded: allWeights });
  });
}

type Mode = "teacher-forced" | "generate";

/** Which optional columns the first document had; the rest must match. */
interface Columns {
  probs: boolean;
  request: boolean;
  arrivalStep: boolean;
}

interface ParsedDoc {
  doc: ImportedDoc;
  has: Columns;
  /** Weights may be left out document by document: those get 1/k each. */
  hasWeights: boolean;
}

function columnsOf(parsed: ParsedDoc): Columns {
  return parsed.has;
}

function parseHeader(
  json: unknown,
  where: string,
  file: string,
  config: ConfigFacts | null,
): { facts: ModelFacts; mode: "teacher-forced" | "generate" } {
  if (!isObject(json) || !("moetrace_import" in json)) {
    throw new DataError(
      `${where} must be the header {"moetrace_import": 1, "num_layers": M, "num_experts": E, "top_k": k}.`,
    );
  }
  if (json.moetrace_import !== 1) {
    throw new DataError(
      `${where} has "moetrace_import": ${JSON.stringify(json.moetrace_import)}, expected 1.`,
    );
  }
  const count = (key: string, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    const v = json[key];
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
      throw new DataError(
        `${where} field "${key}" must be an integer in ${min}..${max}, got ${JSON.stringify(v)}.`,
      );
    }
    return v;
  };
  const layers = count("num_layers", 1, 4096);
  const experts = count("num_experts", 1, NO_EXPERT - 1);
  const topK = count("top_k", 1, experts);
  let moeLayers = Array.from({ length: layers }, (_, i) => i);
  let numLayers = layers;
  if (json.moe_layers !== undefined) {
    const m = json.moe_layers;
    if (
      !Array.isArray(m) || m.length !== layers ||
      !m.every((x, i) => Number.isInteger(x) && x >= 0 && (i === 0 || x > m[i - 1]))
    ) {
      throw new DataError(
        `${where} field "moe_layers" must list ${layers} increasing layer indices, got ${
          JSON.stringify(m)
        }.`,
      );
    }
    moeLayers = m as number[];
    numLayers = Math.max(...moeLayers) + 1;
  }
  if (config?.numLayers !== undefined) numLayers = Math.max(numLayers, config.numLayers);
  const optionalCount = (key: string, fallback: number | undefined) =>
    json[key] === undefined ? fallback ?? 0 : count(key, 0);
  const mode = json.mode ?? "teacher-forced";
  if (mode !== "teacher-forced" && mode !== "generate") {
    throw new DataError(
      `${where} field "mode" must be "teacher-forced" or "generate", got ${JSON.stringify(mode)}.`,
    );
  }
  return {
    mode,
    facts: {
      name: typeof json.model === "string" ? json.model : config?.name ?? baseName(file),
      family: typeof json.family === "string" ? json.family : config?.family ?? "imported",
      num_layers: numLayers,
      moe_layers: moeLayers,
      num_experts: experts,
      top_k: topK,
      num_shared_experts: optionalCount("num_shared_experts", config?.numSharedExperts),
      hidden_size: optionalCount("hidden_size", config?.hiddenSize),
      expert_params: optionalCount("expert_params", config?.expertParams),
      dtype: typeof json.dtype === "string" ? json.dtype : config?.dtype ?? "unknown",
    },
  };
}

function parseDocument(
  json: unknown,
  where: string,
  facts: ModelFacts,
  columns: Columns | null,
): ParsedDoc {
  if (!isObject(json)) {
    throw new DataError(`${where} must be a JSON object with "tokens" and "experts".`);
  }
  const M = facts.moe_layers.length;
  const E = facts.num_experts;
  const k = facts.top_k;
  const hasWeights = json.weights !== undefined;
  const has: Columns = {
    probs: json.probs !== undefined,
    request: json.request !== undefined,
    arrivalStep: json.arrival_step !== undefined,
  };
  if (columns) {
    const names: [keyof Columns, string][] = [
      ["probs", "probs"],
      ["request", "request"],
      ["arrivalStep", "arrival_step"],
    ];
    for (const [key, name] of names) {
      if (has[key] !== columns[key]) {
        throw new DataError(
          `${where} ${has[key] ? "has" : "lacks"} field "${name}", which the first document ${
            columns[key] ? "had" : "lacked"
          }; every document must carry the same optional fields.`,
        );
      }
    }
  }
  const domain = json.domain ?? "unknown";
  if (typeof domain !== "string") {
    throw new DataError(`${where} field "domain" must be a string, got ${JSON.stringify(domain)}.`);
  }
  const tokensJson = json.tokens;
  if (!Array.isArray(tokensJson) || tokensJson.length === 0) {
    throw new DataError(`${where} field "tokens" must be a non-empty list of token ids.`);
  }
  const T = tokensJson.length;
  const tokens = new Uint32Array(T);
  tokensJson.forEach((t, i) => {
    if (!Number.isInteger(t) || t < 0 || t > 0xffffffff) {
      throw new DataError(
        `${where} field "tokens[${i}]" must be a non-negative integer, got ${JSON.stringify(t)}.`,
      );
    }
    tokens[i] = t;
  });
  const experts = new Uint16Array(T * M * k);
  const weights = new Float32Array(T * M * k).fill(1 / k);
  readCube(json.experts, "experts", where, [T, M, k], (i, v, path) => {
    if (!Number.isInteger(v) || (v as number) < 0 || (v as number) >= E) {
      throw new DataError(
        `${where} field "experts${path}" must be an expert id in 0..${E - 1}, got ${
          JSON.stringify(v)
        }.`,
      );
    }
    const j = i % k;
    for (let p = i - j; p < i; p++) {
      if (experts[p] === v) {
        throw new DataError(
          `${where} field "experts${
            path.replace(/\[\d+\]$/, "")
          }" chooses expert ${v} twice; top-k experts must differ.`,
        );
      }
    }
    experts[i] = v as number;
  });
  if (hasWeights) {
    readCube(json.weights, "weights", where, [T, M, k], (i, v, path) => {
      weights[i] = finite(v, where, `weights${path}`);
    });
  }
  const doc: ImportedDoc = { domain, tokens, pieces: [], experts, weights };
  if (has.probs) {
    const probs = new Float32Array(T * M * E);
    readCube(json.probs, "probs", where, [T, M, E], (i, v, path) => {
      probs[i] = finite(v, where, `probs${path}`);
    });
    doc.probs = probs;
  }
  if (json.pieces !== undefined) {
    const p = json.pieces;
    if (!Array.isArray(p) || p.length !== T || !p.every((x) => typeof x === "string")) {
      throw new DataError(`${where} field "pieces" must be a list of ${T} strings, one per token.`);
    }
    doc.pieces = p as string[];
  } else {
    doc.pieces = Array.from(tokens, String);
  }
  if (json.phase !== undefined) {
    const p = json.phase;
    if (!Array.isArray(p) || p.length !== T || !p.every((x) => x === 0 || x === 1)) {
      throw new DataError(
        `${where} field "phase" must be a list of ${T} values, each 0 (prompt) or 1 (generated).`,
      );
    }
    doc.phase = Uint8Array.from(p as number[]);
  }
  if (has.request) {
    if (typeof json.request !== "string" && !Number.isInteger(json.request)) {
      throw new DataError(
        `${where} field "request" must be a string or an integer, got ${
          JSON.stringify(json.request)
        }.`,
      );
    }
    doc.request = String(json.request);
  }
  if (has.arrivalStep) {
    const a = json.arrival_step;
    if (!Number.isInteger(a) || (a as number) < 0 || (a as number) > 0xffffffff) {
      throw new DataError(
        `${where} field "arrival_step" must be a non-negative integer, got ${JSON.stringify(a)}.`,
      );
    }
    doc.arrivalStep = a as number;
  }
  return { doc, has, hasWeights };
}

function finite(v: unknown, where: string, name: string): number {
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new DataError(
      `${where} field "${name}" must be a finite number, got ${JSON.stringify(v)}.`,
    );
  }
  return v;
}

const AXES = ["token", "MoE layer", "value"];

/**
 * Walks a nested list of shape `dims` (3 axes), checking every length;
 * `visit` gets each leaf's flat index, value and its "[t][l][j]" path.
 */
function readCube(
  value: unknown,
  name: string,
  where: string,
  dims: [number, number, number],
  visit: (index: number, v: unknown, path: string) => void,
): void {
  const [T, M, K] = dims;
  if (!Array.isArray(value) || value.length !== T) {
    throw new DataError(
      `${where} field "${name}" must have one entry per ${AXES[0]} (${T}), got ${
        Array.isArray(value) ? value.length : JSON.stringify(value)?.slice(0, 40)
      }.`,
    );
  }
  for (let t = 0; t < T; t++) {
    const layers = value[t];
    if (!Array.isArray(layers) || layers.length !== M) {
      throw new DataError(
        `${where} field "${name}[${t}]" must have one entry per ${AXES[1]} (${M}), got ${
          Array.isArray(layers) ? layers.length : JSON.stringify(layers)
        }.`,
      );
    }
    for (let l = 0; l < M; l++) {
      const values = layers[l];
      if (!Array.isArray(values) || values.length !== K) {
        const what = name === "probs" ? `num_experts = ${K}` : `top_k = ${K}`;
        throw new DataError(
          `${where} field "${name}[${t}][${l}]" must list ${what} values, got ${
            JSON.stringify(values)
          }.`,
        );
      }
      const base = (t * M + l) * K;
      for (let j = 0; j < K; j++) visit(base + j, values[j], `[${t}][${l}][${j}]`);
    }
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
