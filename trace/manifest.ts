/**
 * The trace manifest (DESIGN.md "Trace format"): the architecture facts,
 * capture facts and shard list of a trace directory, read and validated
 * before any shard is touched.
 */
import { createHash } from "node:crypto";
import { normalize } from "node:path";
import { DataError, messageOf } from "../common/errors.ts";
import { writeFileAtomic } from "../common/atomic_write.ts";
import { realPathWithin } from "../common/fs.ts";
import { hasControlCharacters, jsonErrorMessage } from "../common/text.ts";

export const TRACE_FORMAT = "moetrace-trace/1";
export const TOOL_VERSION = "0.1.0";
/** Marks a speculative pick for a layer l+d that does not exist. */
export const NO_EXPERT = 65535;
/** Rows per shard unless the writer is told otherwise; about 20 MB for 32 layers × top-2. */
export const DEFAULT_ROWS_PER_SHARD = 65536;

/** Architecture facts that analysis and simulation need. */
export interface ModelFacts {
  name: string;
  /** config.json `model_type`, e.g. `mixtral`, or `synthetic` / `imported`. */
  family: string;
  num_layers: number;
  /** Indices of the MoE layers, in order; the trace's layer axis follows it. */
  moe_layers: number[];
  num_experts: number;
  top_k: number;
  num_shared_experts: number;
  hidden_size: number;
  /** Parameters of one routed expert (all its matrices). */
  expert_params: number;
  /** Weight dtype of the checkpoint, e.g. `float32`, `bfloat16`. */
  dtype: string;
  /**
   * What the `probs` column holds: the router's scores over all experts,
   * `softmax` (Mixtral, Qwen, DeepSeek-V2, Granite and gpt-oss, whose weights
   * are a softmax over the chosen k) or `sigmoid` (DeepSeek-V3, GLM-4.5, whose
   * probs do not sum to 1). Absent means softmax (traces made before it).
   */
  router_scores?: "softmax" | "sigmoid";
  /** The router in words, e.g. "sigmoid + selection bias, top-8 of 256 in 4 of 8 groups (top2-sum), renormalised, × 2.5". */
  router?: string;
}

/** How the trace was made. */
export interface CaptureFacts {
  /** Corpus path or prompts file the tokens came from. */
  corpus: string;
  /** Domains in the order they were first captured. */
  domains: string[];
  mode: "teacher-forced" | "generate";
  /** D: speculative picks for layers l+1..l+D are stored in `spec` when D > 0. */
  lookahead: number;
  /** Whether the full router distribution is stored in `probs`. */
  probs: boolean;
  seed: number;
  tool_version: string;
  created: string;
  updated: string;
  /** True once the producer finished; false while a capture is running or was interrupted. */
  complete: boolean;
  /** Producer-specific settings (flags of the command that made the trace). */
  settings?: Record<string, unknown>;
  /**
   * False when the log had no gate weights: the `weights` column then holds
   * 1/k for every choice and weight statistics must be skipped. Absent means
   * true (every trace made before this field existed recorded its weights).
   */
  weights_recorded?: boolean;
  /** False when the log had no token ids: the `token` column then holds 0. Absent means true. */
  tokens_recorded?: boolean;
  /** Bytes the engine held on the GPU at its peak in the last capture run (absent in traces made before it was recorded). */
  gpu_bytes_peak?: number;
  /** Bytes of routed experts the last run streamed from host memory (0 unless --gpu-memory made it stream). */
  bytes_streamed?: number;
  /** The last run's --gpu-memory cap in bytes, when given. */
  gpu_memory?: number;
  /** Rows carry a `request` column (the serving request id of their document). */
  requests?: boolean;
  /** Rows carry an `arrival_step` column (the serving step their document's request arrived). */
  arrival_steps?: boolean;
  /** How document boundaries were found, for traces imported from logs that do not record them. */
  documents?: string;
  /** The part traces `moetrace merge` joined into this one, relative to it, in part order. */
  merged_from?: string[];
  /** The trace ids of those parts (and of their own parts): the ids its shards may carry. */
  merged_trace_ids?: string[];
}

export interface ShardEntry {
  /** Path relative to the trace directory. */
  file: string;
  rows: number;
  docs: number;
  /** File size in bytes (checked before decoding, when present). */
  bytes?: number;
  /**
   * SHA-256 of the file's first FINGERPRINT_HEAD bytes and last
   * FINGERPRINT_TAIL bytes, hex: they hold the Arrow schema, dictionaries,
   * message headers and footer, whose corruption could make the Arrow decoder
   * allocate without bound. Checked before decoding, when present.
   */
  fingerprint?: string;
}

export const FINGERPRINT_HEAD = 2 * 2 ** 20;
export const FINGERPRINT_TAIL = 64 * 2 ** 10;

/** The fingerprint of a shard's bytes (see ShardEntry.fingerprint). */
export function shardFingerprint(bytes: Uint8Array): Promise<string> {
  return partsFingerprint([bytes]);
}

/** `shardFingerprint` of the file that `parts` make end to end (hashed where they lie, not joined). */
export function partsFingerprint(parts: readonly Uint8Array[]): Promise<string> {
  const size = parts.reduce((n, p) => n + p.length, 0);
  const headLength = Math.min(size, FINGERPRINT_HEAD);
  const tailFrom = Math.max(headLength, size - FINGERPRINT_TAIL);
  const hash = createHash("sha256");
  // Bytes [0, headLength) and [tailFrom, size) of the file, from the parts they lie in.
  let at = 0;
  for (const part of parts) {
    const end = at + part.length;
    for (const [from, to] of [[0, headLength], [tailFrom, size]] as const) {
      const a = Math.max(from, at);
      const b = Math.min(to, end);
      if (a < b) hash.update(part.subarray(a - at, b - at));
    }
    at = end;
  }
  return Promise.resolve(hash.digest("hex"));
}

/** The Arrow schema metadata key under which every shard carries its trace's id. */
export const TRACE_ID_KEY = "moetrace:trace_id";

export interface Manifest {
  format: string;
  /**
   * A random id given when the trace is created; every shard carries it in
   * its Arrow schema metadata (TRACE_ID_KEY), so a shard copied in from
   * another trace is refused. Absent in traces made before it existed.
   */
  trace_id?: string;
  model: ModelFacts;
  capture: CaptureFacts;
  shards: ShardEntry[];
}

/** Widths of the list columns, derived from the manifest. */
export interface RowShape {
  layers: number;
  topK: number;
  experts: number;
  lookahead: number;
  probs: boolean;
  /** A `request` column (dictionary<utf8>); absent means false. */
  requests?: boolean;
  /** An `arrival_step` column (u32); absent means false. */
  arrivalSteps?: boolean;
  /**
   * False when capture.weights_recorded is false: a shard whose weights are
   * all the 1/k placeholder is written without a `weights` column, and
   * readers give every choice 1/k (shards with a column read as they are).
   * Absent means true.
   */
  weights?: false;
  /** The trace ids a shard may carry (the trace's and its merged parts'); absent: not checked. */
  traceIds?: string[];
}

export function rowShape(manifest: Manifest): RowShape {
  const shape: RowShape = {
    layers: manifest.model.moe_layers.length,
    topK: manifest.model.top_k,
    experts: manifest.model.num_experts,
    lookahead: manifest.capture.lookahead,
    probs: manifest.capture.probs,
  };
  if (manifest.capture.requests) shape.requests = true;
  if (manifest.capture.arrival_steps) shape.arrivalSteps = true;
  if (manifest.capture.weights_recorded === false) shape.weights = false;
  if (manifest.trace_id !== undefined) {
    shape.traceIds = [manifest.trace_id, ...(manifest.capture.merged_trace_ids ?? [])];
  }
  return shape;
}

/** Reads and validates `DIR/manifest.json`. */
export async function readManifest(dir: string): Promise<Manifest> {
  const path = `${dir}/manifest.json`;
  let text: string;
  try {
    // A manifest.json that is a symlink out of the trace is refused unread.
    if ((await Deno.lstat(path)).isSymlink) await realPathWithin(path, [dir], path);
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof DataError) throw error;
    if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory) {
      throw new DataError(`${dir} is not a trace: ${path} does not exist.`);
    }
    throw new DataError(`Cannot read ${path}: ${messageOf(error)}.`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new DataError(`${path} is not valid JSON: ${jsonErrorMessage(error)}.`);
  }
  return validateManifest(json, path);
}

/** Checks the shape of a parsed manifest; `where` names it in errors. */
export function validateManifest(json: unknown, where: string): Manifest {
  if (!isObject(json)) throw new DataError(`${where} must hold a JSON object.`);
  if (json.format !== TRACE_FORMAT) {
    throw new DataError(
      `${where} has format ${JSON.stringify(json.format)}, expected "${TRACE_FORMAT}".`,
    );
  }
  if (json.trace_id !== undefined && !isTraceId(json.trace_id)) {
    throw new DataError(
      `${where} field "trace_id" must be an id of 8 to 64 letters, digits or dashes when present.`,
    );
  }
  const model = json.model;
  if (!isObject(model)) throw new DataError(`${where} field "model" must be an object.`);
  for (const key of ["num_layers", "num_experts", "top_k", "hidden_size", "expert_params"]) {
    requireCount(model[key], `${where} field "model.${key}"`, key === "num_layers" ? 1 : 0);
  }
  requireCount(model.num_shared_experts, `${where} field "model.num_shared_experts"`, 0);
  const numExperts = model.num_experts as number;
  const topK = model.top_k as number;
  if (numExperts < 1 || numExperts >= NO_EXPERT) {
    throw new DataError(
      `${where} field "model.num_experts" must be in 1..65534, got ${numExperts}.`,
    );
  }
  if (topK < 1 || topK > numExperts) {
    throw new DataError(
      `${where} field "model.top_k" must be in 1..num_experts (${numExperts}), got ${topK}.`,
    );
  }
  const moeLayers = model.moe_layers;
  if (
    !Array.isArray(moeLayers) || moeLayers.length === 0 ||
    !moeLayers.every((l, i) =>
      Number.isInteger(l) && l >= 0 && l < (model.num_layers as number) &&
      (i === 0 || l > moeLayers[i - 1])
    )
  ) {
    throw new DataError(
      `${where} field "model.moe_layers" must be a non-empty increasing list of layer indices below num_layers.`,
    );
  }
  for (const key of ["name", "family", "dtype"]) {
    if (typeof model[key] !== "string") {
      throw new DataError(`${where} field "model.${key}" must be a string.`);
    }
  }
  if (
    model.router_scores !== undefined && model.router_scores !== "softmax" &&
    model.router_scores !== "sigmoid"
  ) {
    throw new DataError(
      `${where} field "model.router_scores" must be "softmax" or "sigmoid" when present, got ${
        JSON.stringify(model.router_scores)
      }.`,
    );
  }
  if (model.router !== undefined && typeof model.router !== "string") {
    throw new DataError(`${where} field "model.router" must be a string when present.`);
  }
  const capture = json.capture;
  if (!isObject(capture)) throw new DataError(`${where} field "capture" must be an object.`);
  if (capture.mode !== "teacher-forced" && capture.mode !== "generate") {
    throw new DataError(
      `${where} field "capture.mode" must be "teacher-forced" or "generate", got ${
        JSON.stringify(capture.mode)
      }.`,
    );
  }
  requireCount(capture.lookahead, `${where} field "capture.lookahead"`, 0);
  if (typeof capture.probs !== "boolean") {
    throw new DataError(`${where} field "capture.probs" must be true or false.`);
  }
  for (const key of ["weights_recorded", "tokens_recorded", "requests", "arrival_steps"]) {
    if (capture[key] !== undefined && typeof capture[key] !== "boolean") {
      throw new DataError(`${where} field "capture.${key}" must be true or false when present.`);
    }
  }
  if (capture.documents !== undefined && typeof capture.documents !== "string") {
    throw new DataError(`${where} field "capture.documents" must be a string when present.`);
  }
  if (
    capture.merged_from !== undefined &&
    !(Array.isArray(capture.merged_from) &&
      capture.merged_from.every((d) => typeof d === "string"))
  ) {
    throw new DataError(
      `${where} field "capture.merged_from" must be a list of strings when present.`,
    );
  }
  if (
    capture.merged_trace_ids !== undefined &&
    !(Array.isArray(capture.merged_trace_ids) && capture.merged_trace_ids.every(isTraceId))
  ) {
    throw new DataError(
      `${where} field "capture.merged_trace_ids" must be a list of trace ids when present.`,
    );
  }
  if (!Array.isArray(capture.domains) || !capture.domains.every((d) => typeof d === "string")) {
    throw new DataError(`${where} field "capture.domains" must be a list of strings.`);
  }
  const shards = json.shards;
  if (!Array.isArray(shards)) throw new DataError(`${where} field "shards" must be a list.`);
  // A merged trace lists its parts' shards where they are; no other shard may leave the trace.
  const parts = ((capture.merged_from ?? []) as string[]).map((d) => normalize(d));
  const listed = new Map<string, number>();
  shards.forEach((shard, i) => {
    if (
      !isObject(shard) || typeof shard.file !== "string" || shard.file === "" ||
      shard.file.startsWith("/") || [...shard.file].some((c) => c < " ")
    ) {
      throw new DataError(
        `${where} field "shards[${i}].file" must be a file path relative to the trace, got ${
          JSON.stringify(isObject(shard) ? shard.file : shard)
        }.`,
      );
    }
    const file = normalize(shard.file);
    if (file === "." || file.endsWith("/") || file.endsWith("/.") || file.endsWith("/..")) {
      throw new DataError(
        `${where} field "shards[${i}].file" must name a file, got ${JSON.stringify(shard.file)}.`,
      );
    }
    if (
      (file === ".." || file.startsWith("../")) &&
      !parts.some((part) => file.startsWith(part.endsWith("/") ? part : `${part}/`))
    ) {
      throw new DataError(
        `${where} field "shards[${i}].file" is ${
          JSON.stringify(shard.file)
        }, which lies outside the trace; only a merged trace lists shards of its parts (capture.merged_from).`,
      );
    }
    const earlier = listed.get(file);
    if (earlier !== undefined) {
      throw new DataError(
        `${where} lists the shard ${
          JSON.stringify(shard.file)
        } twice (shards[${earlier}] and shards[${i}]); its documents would be counted twice.`,
      );
    }
    listed.set(file, i);
    requireCount(shard.rows, `${where} field "shards[${i}].rows"`, 0);
    requireCount(shard.docs, `${where} field "shards[${i}].docs"`, 0);
    if (shard.bytes !== undefined) {
      requireCount(shard.bytes, `${where} field "shards[${i}].bytes"`, 0);
    }
    if (shard.fingerprint !== undefined && typeof shard.fingerprint !== "string") {
      throw new DataError(`${where} field "shards[${i}].fingerprint" must be a string.`);
    }
  });
  return json as unknown as Manifest;
}

/**
 * Why a domain name cannot be used, or null: "all" names the rows of every
 * domain together in analysis outputs, and control characters would reach
 * terminals (escape sequences) and SVG figures (invalid XML).
 */
export function domainNameProblem(name: string): string | null {
  if (name === "") return "is empty";
  if (name === "all") return 'is "all", which names the rows of every domain together';
  if (hasControlCharacters(name)) return "holds control characters";
  return null;
}

function isTraceId(value: unknown): value is string {
  return typeof value === "string" && /^[0-9A-Za-z-]{8,64}$/.test(value);
}

/**
 * Checks that every shard the manifest of the trace in `dir` lists exists and
 * that its real path (symlinks resolved) lies in the trace or, for a merged
 * trace, in one of its parts: a symlinked shard or shards folder pointing
 * elsewhere is refused before a byte of it is read.
 */
export async function checkShardFiles(dir: string, manifest: Manifest): Promise<void> {
  const roots = [dir, ...(manifest.capture.merged_from ?? []).map((d) => `${dir}/${d}`)];
  for (const shard of manifest.shards) {
    await realPathWithin(
      `${dir}/${shard.file}`,
      roots,
      `Shard ${shard.file} listed in ${dir}/manifest.json`,
    );
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function requireCount(value: unknown, what: string, min: number): void {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min) {
    throw new DataError(`${what} must be an integer ≥ ${min}, got ${JSON.stringify(value)}.`);
  }
}

/** Writes `DIR/manifest.json` atomically. */
export async function writeManifest(dir: string, manifest: Manifest): Promise<void> {
  await writeFileAtomic(`${dir}/manifest.json`, JSON.stringify(manifest, null, 2) + "\n");
}
