/**
 * Where every importer writes: a trace staged in `<out>.partial` and renamed
 * to `<out>` only when the whole log was read, so bad input leaves no partial
 * trace. The model facts are settled here from what the log says and what
 * `--model-config` adds.
 */
import { DataError } from "../../common/errors.ts";
import { clearFolderBut, LOCK_FILE, pathExists } from "../../common/fs.ts";
import {
  type CaptureFacts,
  type Manifest,
  type ModelFacts,
  NO_EXPERT,
  readManifest,
  type TraceDoc,
  TraceWriter,
  writeManifest,
} from "../mod.ts";
import type { ConfigFacts } from "./model_config.ts";

export type CaptureInit = Omit<CaptureFacts, "created" | "updated" | "complete">;

/** A document as an importer makes it; the sink numbers documents in order. */
export type ImportedDoc = Omit<TraceDoc, "doc">;

export interface ImportSummary {
  docs: number;
  tokens: number;
}

/** A trace being imported into `<out>.partial`. */
export class StagedImport {
  readonly out: string;
  readonly staging: string;
  #writer: TraceWriter | null = null;
  #docs = 0;
  #tokens = 0;
  #maxExpert = -1;
  #expertsInferred = false;

  private constructor(out: string) {
    this.out = out;
    this.staging = `${out}.partial`;
  }

  /** Refuses an existing `out` and clears a stale staging folder. */
  static async begin(out: string): Promise<StagedImport> {
    if (await pathExists(out)) {
      throw new DataError(`${out} already exists; choose another --out or remove it first.`);
    }
    const staged = new StagedImport(out);
    // All but the lock `moetrace import` holds in it (see command.ts).
    await clearFolderBut(staged.staging, LOCK_FILE);
    return staged;
  }

  get opened(): boolean {
    return this.#writer !== null;
  }

  get manifest(): Readonly<Manifest> {
    if (!this.#writer) throw new Error("StagedImport.manifest before open");
    return this.#writer.manifest;
  }

  /**
   * Opens the trace. With `expertsInferred` the expert count is not known yet:
   * the trace is opened for any id and num_experts becomes the largest id
   * seen + 1 when it is finished (recorded in capture.settings).
   */
  async open(
    model: ModelFacts,
    capture: CaptureInit,
    options: { expertsInferred?: boolean } = {},
  ): Promise<void> {
    this.#expertsInferred = options.expertsInferred ?? false;
    const facts = this.#expertsInferred ? { ...model, num_experts: NO_EXPERT - 1 } : model;
    this.#writer = await TraceWriter.open(this.staging, { model: facts, capture });
  }

  async add(doc: ImportedDoc): Promise<void> {
    if (!this.#writer) throw new Error("StagedImport.add before open");
    if (this.#expertsInferred) {
      // Only an inferred expert count needs the largest id (a pass over T·M·k ids).
      const experts = doc.experts;
      let max = this.#maxExpert;
      for (let i = 0; i < experts.length; i++) if (experts[i]! > max) max = experts[i]!;
      this.#maxExpert = max;
    }
    await this.#writer.add({ ...doc, doc: this.#docs });
    this.#docs++;
    this.#tokens += doc.tokens.length;
  }

  /**
   * Records shards written straight into the staging trace (an SGLang
   * import's shard makers), whose documents are numbered in order from this
   * import's next one: `shards[i].docs` documents, `tokens` rows in all.
   */
  async addShards(
    shards: { file: string; rows: number; docs: number; bytes: number; fingerprint: string }[],
    domains: readonly string[],
  ): Promise<void> {
    if (!this.#writer) throw new Error("StagedImport.addShards before open");
    const numbered = shards.map((shard) => {
      const docs = Array.from({ length: shard.docs }, (_, i) => this.#docs + i);
      this.#docs += shard.docs;
      this.#tokens += shard.rows;
      return { ...shard, docs };
    });
    await this.#writer.adoptShards(numbered, domains);
  }

  /** The next document's number: documents are numbered 0, 1, … in the order they are added. */
  get nextDoc(): number {
    return this.#docs;
  }

  /**
   * Closes the trace, settles inferred facts, adds `settings` (to
   * capture.settings) and `capture` facts learnt while reading, and renames
   * the trace into place.
   */
  async finish(
    settings: Record<string, unknown> = {},
    capture: Partial<CaptureInit> = {},
  ): Promise<ImportSummary> {
    if (!this.#writer || this.#docs === 0) {
      throw new DataError(`The input holds no routed tokens; nothing was written to ${this.out}.`);
    }
    await this.#writer.close();
    const manifest = await readManifest(this.staging);
    if (this.#expertsInferred) {
      manifest.model.num_experts = Math.max(this.#maxExpert + 1, manifest.model.top_k);
      settings = { ...settings, num_experts_inferred: true };
    }
    Object.assign(manifest.capture, capture);
    manifest.capture.settings = { ...manifest.capture.settings, ...settings };
    await writeManifest(this.staging, manifest);
    await Deno.rename(this.staging, this.out);
    return { docs: this.#docs, tokens: this.#tokens };
  }

  async abort(): Promise<void> {
    await Deno.remove(this.staging, { recursive: true }).catch(() => {});
  }
}

/** Runs `body` on a staged import; any failure removes the staging folder. */
export async function stagedImport(
  out: string,
  body: (sink: StagedImport) => Promise<ImportSummary>,
): Promise<ImportSummary> {
  const sink = await StagedImport.begin(out);
  try {
    return await body(sink);
  } catch (error) {
    await sink.abort();
    throw error;
  }
}

/** The layers of a log's layer axis that are MoE layers, and their model indices. */
export interface LayerPlan {
  /** Positions along the log's layer axis to keep, in order. */
  keep: number[];
  /** The model layer index of each kept position (the trace's moe_layers). */
  moeLayers: number[];
  numLayers: number;
}

/**
 * Matches a log's layer axis (length `axis`) to `--model-config`: a log with
 * every decoder layer keeps the MoE ones; a log with only MoE layers maps
 * onto them; without a config every position is a MoE layer.
 */
export function planLayers(axis: number, config: ConfigFacts | null, where: string): LayerPlan {
  const all = Array.from({ length: axis }, (_, i) => i);
  if (!config?.moeLayers || config.numLayers === undefined) {
    return { keep: all, moeLayers: all, numLayers: axis };
  }
  const moe = config.moeLayers;
  if (axis === config.numLayers) return { keep: moe, moeLayers: moe, numLayers: axis };
  if (axis === moe.length) return { keep: all, moeLayers: moe, numLayers: config.numLayers };
  throw new DataError(
    `${where} has ${axis} layers per token, but --model-config says ${config.numLayers} layers of which ${moe.length} are MoE layers.`,
  );
}

/** Model facts from the log's shape plus whatever `--model-config` says. */
export function modelFacts(
  shape: { plan: LayerPlan; topK: number; numExperts?: number; name: string },
  config: ConfigFacts | null,
): ModelFacts {
  return {
    name: config?.name ?? shape.name,
    family: config?.family ?? "imported",
    num_layers: shape.plan.numLayers,
    moe_layers: shape.plan.moeLayers,
    num_experts: config?.numExperts ?? shape.numExperts ?? NO_EXPERT - 1,
    top_k: shape.topK,
    num_shared_experts: config?.numSharedExperts ?? 0,
    hidden_size: config?.hiddenSize ?? 0,
    expert_params: config?.expertParams ?? 0,
    dtype: config?.dtype ?? "unknown",
  };
}

/** 1/k placeholder weights (a view of one shared buffer the writer recognises). */
export { placeholderWeights } from "../schema.ts";

/** The base name of a path, for a model name when nothing better is known. */
export function baseName(path: string): string {
  return path.replace(/\/+$/, "").replace(/^.*\//, "");
}
