/**
 * `moetrace import FILE --out TRACE`: interchange JSONL → trace (DESIGN.md).
 *
 * Line 1: `{"moetrace_import": 1, "num_layers": M, "num_experts": E, "top_k": k}`
 *   optional: "model" (name), "moe_layers" (indices, default 0..M-1 with
 *   num_layers = M), "hidden_size", "expert_params", "dtype".
 * Then one document per line:
 *   `{"domain": "ArXiv", "tokens": [T], "experts": [T][M][k], "weights": [T][M][k]?, "pieces": [T]?}`
 *   Without "weights" every chosen expert gets 1/k; without "pieces" a
 *   token's piece is its id in decimal.
 *
 * The trace is built in `<out>.partial` beside --out and renamed when
 * every line has been read, so a malformed line leaves no partial output.
 */
import { DataError, messageOf } from "../common/errors.ts";
import { readLines } from "../common/lines.ts";
import { type ModelFacts, NO_EXPERT, type TraceDoc, TraceWriter } from "./mod.ts";
import { pathExists } from "../common/fs.ts";

export async function importCommand(file: string, flags: Record<string, unknown>): Promise<void> {
  const out = flags.out as string;
  const summary = await importJsonl(file, out);
  console.error(`Imported ${summary.docs} documents, ${summary.tokens} tokens into ${out}.`);
}

interface Header {
  facts: ModelFacts;
}

/** Converts `file` into a trace at `out`; returns counts. */
export async function importJsonl(
  file: string,
  out: string,
): Promise<{ docs: number; tokens: number }> {
  if (await pathExists(out)) {
    throw new DataError(`${out} already exists; choose another --out or remove it first.`);
  }
  let stream: ReadableStream<Uint8Array>;
  try {
    stream = (await Deno.open(file)).readable;
  } catch (error) {
    throw new DataError(`Cannot read ${file}: ${messageOf(error)}.`);
  }
  const staging = `${out}.partial`;
  await Deno.remove(staging, { recursive: true }).catch(() => {});
  let writer: TraceWriter | null = null;
  let header: Header | null = null;
  let docs = 0;
  let tokens = 0;
  try {
    for await (const { line, number } of readLinesReported(file, stream)) {
      const where = `${file} line ${number}`;
      if (line.trim() === "") continue;
      let json: unknown;
      try {
        json = JSON.parse(line);
      } catch (error) {
        throw new DataError(`${where} is not valid JSON: ${messageOf(error)}.`);
      }
      if (header === null) {
        header = parseHeader(json, where, file);
        writer = await TraceWriter.open(staging, {
          model: header.facts,
          capture: {
            corpus: file,
            domains: [],
            mode: "teacher-forced",
            lookahead: 0,
            probs: false,
            seed: 0,
            tool_version: "import",
          },
        });
        continue;
      }
      const doc = parseDocument(json, where, header.facts, docs);
      await writer!.add(doc);
      docs++;
      tokens += doc.tokens.length;
    }
    if (header === null) throw new DataError(`${file} is empty; expected a header line.`);
    await writer!.close();
    await Deno.rename(staging, out);
    return { docs, tokens };
  } catch (error) {
    await Deno.remove(staging, { recursive: true }).catch(() => {});
    throw error;
  }
}

async function* readLinesReported(file: string, stream: ReadableStream<Uint8Array>) {
  let last = 0;
  try {
    for await (const item of readLines(file, stream)) {
      last = item.number;
      yield item;
    }
  } catch (error) {
    if (error instanceof TypeError) {
      throw new DataError(`${file} line ${last + 1} is not valid UTF-8.`);
    }
    throw error;
  }
}

function parseHeader(json: unknown, where: string, file: string): Header {
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
      !Array.isArray(m) || m.length !== layers || !m.every((x) => Number.isInteger(x) && x >= 0)
    ) {
      throw new DataError(
        `${where} field "moe_layers" must list ${layers} layer indices, got ${JSON.stringify(m)}.`,
      );
    }
    moeLayers = m as number[];
    numLayers = Math.max(...moeLayers) + 1;
  }
  const optionalCount = (key: string) => (json[key] === undefined ? 0 : count(key, 0));
  return {
    facts: {
      name: typeof json.model === "string" ? json.model : file.replace(/^.*\//, ""),
      family: "imported",
      num_layers: numLayers,
      moe_layers: moeLayers,
      num_experts: experts,
      top_k: topK,
      num_shared_experts: optionalCount("num_shared_experts"),
      hidden_size: optionalCount("hidden_size"),
      expert_params: optionalCount("expert_params"),
      dtype: typeof json.dtype === "string" ? json.dtype : "unknown",
    },
  };
}

function parseDocument(json: unknown, where: string, facts: ModelFacts, docId: number): TraceDoc {
  if (!isObject(json)) {
    throw new DataError(`${where} must be a JSON object with "tokens" and "experts".`);
  }
  const M = facts.moe_layers.length;
  const E = facts.num_experts;
  const k = facts.top_k;
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
  readCube(json.experts, "experts", where, T, M, k, (t, l, j, v) => {
    if (!Number.isInteger(v) || (v as number) < 0 || (v as number) >= E) {
      throw new DataError(
        `${where} field "experts[${t}][${l}][${j}]" must be an expert id in 0..${E - 1}, got ${
          JSON.stringify(v)
        }.`,
      );
    }
    const base = (t * M + l) * k;
    for (let i = 0; i < j; i++) {
      if (experts[base + i] === v) {
        throw new DataError(
          `${where} field "experts[${t}][${l}]" chooses expert ${v} twice; top-k experts must differ.`,
        );
      }
    }
    experts[base + j] = v as number;
  });
  if (json.weights !== undefined) {
    readCube(json.weights, "weights", where, T, M, k, (t, l, j, v) => {
      if (typeof v !== "number" || !Number.isFinite(v)) {
        throw new DataError(
          `${where} field "weights[${t}][${l}][${j}]" must be a finite number, got ${
            JSON.stringify(v)
          }.`,
        );
      }
      weights[(t * M + l) * k + j] = v;
    });
  }
  let pieces: string[];
  if (json.pieces !== undefined) {
    const p = json.pieces;
    if (!Array.isArray(p) || p.length !== T || !p.every((x) => typeof x === "string")) {
      throw new DataError(`${where} field "pieces" must be a list of ${T} strings, one per token.`);
    }
    pieces = p as string[];
  } else {
    pieces = Array.from(tokens, String);
  }
  return { doc: docId, domain, tokens, pieces, experts, weights };
}

/** Walks a [T][M][k] nested list, checking every length; `visit` gets each leaf. */
function readCube(
  value: unknown,
  name: string,
  where: string,
  T: number,
  M: number,
  k: number,
  visit: (t: number, l: number, j: number, v: unknown) => void,
): void {
  if (!Array.isArray(value) || value.length !== T) {
    throw new DataError(
      `${where} field "${name}" must have one entry per token (${T}), got ${
        Array.isArray(value) ? value.length : JSON.stringify(value)?.slice(0, 40)
      }.`,
    );
  }
  for (let t = 0; t < T; t++) {
    const layers = value[t];
    if (!Array.isArray(layers) || layers.length !== M) {
      throw new DataError(
        `${where} field "${name}[${t}]" must have one entry per MoE layer (${M}), got ${
          Array.isArray(layers) ? layers.length : JSON.stringify(layers)
        }.`,
      );
    }
    for (let l = 0; l < M; l++) {
      const choices = layers[l];
      if (!Array.isArray(choices) || choices.length !== k) {
        throw new DataError(
          `${where} field "${name}[${t}][${l}]" must list top_k = ${k} values, got ${
            JSON.stringify(choices)
          }.`,
        );
      }
      for (let j = 0; j < k; j++) visit(t, l, j, choices[j]);
    }
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
