/**
 * `moetrace capture`: runs a checkpoint teacher-forced over a corpus and
 * writes every router decision to a trace.
 *
 * Documents are tokenized, cut to --max-tokens, and packed into batches of
 * about --batch-tokens tokens; each batch is one `route()` call (one GPU
 * readback). The trace writer flushes whole-document shards, so Ctrl-C or a
 * kill loses at most the documents of the shard in progress, and running the
 * same command again resumes: documents already in the trace are skipped by
 * their corpus id. With --shard i/n it captures the i-th of n contiguous
 * blocks of the selection (trace/split.ts), for `moetrace merge` to join.
 */
import { DataError } from "../common/errors.ts";
import {
  LOCK_FILE,
  lockFolder,
  pathExists,
  removeIfOnly,
  requireFolderOrAbsent,
} from "../common/fs.ts";
import { checkOutputFolder, TRACE_OUTPUT } from "../common/output_folder.ts";
import { Progress } from "../common/progress.ts";
import { type CorpusDoc, readCorpus } from "../corpus/corpus.ts";
import { mib, parseGpuMemory } from "./expert_stream.ts";
import { loadModel } from "./model.ts";
import type { RouterLog } from "./router_log.ts";
import { BoundedEncoder, encodePrefix, TextTokenizer } from "./tokenizer.ts";
import { type TraceDoc, TraceWriter } from "../trace/mod.ts";
import { formatShardSpec, parseShardSpec, shardRange, type ShardSpec } from "../trace/split.ts";

/** Rows per shard unless --shard-rows says otherwise. */
const DEFAULT_SHARD_ROWS = 16384;

export interface CaptureOptions {
  model: string;
  corpus: string;
  out: string;
  /** Keep only these domains (default: all). */
  domains?: string[];
  /** Seeded sample of this many documents per domain (default: all). */
  docsPerDomain?: number;
  /** Tokens per document, BOS included; the rest is cut (default 512). */
  maxTokens: number;
  /** Tokens per forward batch (default 2048). */
  batchTokens: number;
  /** Store the full router distribution (default false). */
  probs: boolean;
  /** Store speculative picks for layers l+1..l+D (default 0). */
  lookahead: number;
  seed: number;
  /** Rows per trace shard (default 16384: a resumed capture repeats at most this many tokens). */
  rowsPerShard?: number;
  /** Print progress on stderr (default true). */
  progress?: boolean;
  /** Capture only this part of the selection (default: all of it). */
  shard?: ShardSpec;
  /** Domain of corpus lines without meta.pile_set_name (default: refused). */
  defaultDomain?: string;
  /** Bytes of GPU memory the model may hold (--gpu-memory): routed experts stream from host memory. */
  gpuMemory?: number;
}

/** What a capture run added, and its GPU memory (the manifest records the last two as capture.gpu_bytes_peak and bytes_streamed). */
export interface CaptureResult {
  newDocs: number;
  newTokens: number;
  skippedDocs: number;
  gpuBytesPeak: number;
  bytesStreamed: number;
}

export async function captureCommand(flags: Record<string, unknown>): Promise<void> {
  const options: CaptureOptions = {
    model: flags.model as string,
    corpus: flags.corpus as string,
    out: flags.out as string,
    maxTokens: flags["max-tokens"] as number,
    batchTokens: flags["batch-tokens"] as number,
    probs: flags.probs as boolean,
    lookahead: flags.lookahead as number,
    seed: flags.seed as number,
    rowsPerShard: flags["shard-rows"] as number,
  };
  if (flags.domains) options.domains = flags.domains as string[];
  if (flags["docs-per-domain"] !== undefined) {
    options.docsPerDomain = flags["docs-per-domain"] as number;
  }
  if (typeof flags.shard === "string") options.shard = parseShardSpec(flags.shard);
  if (typeof flags["default-domain"] === "string") {
    options.defaultDomain = flags["default-domain"];
  }
  if (typeof flags["gpu-memory"] === "string") {
    options.gpuMemory = parseGpuMemory(flags["gpu-memory"]);
  }
  await checkOutputFolder(
    options.out,
    { command: "capture", ...TRACE_OUTPUT },
    flags.force === true,
  );
  const result = await capture(options);
  if (flags.json === true) {
    console.log(JSON.stringify({
      out: options.out,
      new_docs: result.newDocs,
      new_tokens: result.newTokens,
      skipped_docs: result.skippedDocs,
      gpu_bytes_peak: result.gpuBytesPeak,
      bytes_streamed: result.bytesStreamed,
    }));
    return;
  }
  console.error(
    `capture: ${result.newDocs} documents (${result.newTokens} tokens) written to ${options.out}` +
      (result.skippedDocs ? `, ${result.skippedDocs} already there` : "") +
      `. GPU memory peak ${mib(result.gpuBytesPeak)}, ${
        mib(result.bytesStreamed)
      } of experts streamed from host memory.`,
  );
}

/** Runs the capture; returns what this run added. */
export async function capture(options: CaptureOptions): Promise<CaptureResult> {
  await requireFolderOrAbsent(options.out, "--out");
  const created = !(await pathExists(options.out));
  await Deno.mkdir(options.out, { recursive: true });
  // Two captures into one trace would interleave their shards and manifests.
  const lock = await lockFolder(options.out, "capture");
  try {
    return await captureLocked(options);
  } finally {
    lock.release();
    // A run that failed before writing its trace leaves no folder holding only the lock.
    if (created) await removeIfOnly(options.out, LOCK_FILE);
  }
}

async function captureLocked(options: CaptureOptions): Promise<CaptureResult> {
  const tokenizer = await TextTokenizer.load(options.model);
  // The selection is read before the model loads, so corpus mistakes are
  // reported at once and the progress bar knows its total.
  const corpusOptions = {
    ...(options.domains ? { domains: options.domains } : {}),
    ...(options.docsPerDomain !== undefined ? { docsPerDomain: options.docsPerDomain } : {}),
    ...(options.defaultDomain !== undefined ? { defaultDomain: options.defaultDomain } : {}),
    seed: options.seed,
  };
  const selection: CorpusDoc[] = [];
  for await (const doc of readCorpus(options.corpus, corpusOptions)) selection.push(doc);
  if (selection.length === 0) {
    throw new DataError(
      `The corpus ${options.corpus} has no documents${
        options.domains ? ` in the domains ${options.domains.join(", ")}` : ""
      }.`,
    );
  }
  const docs = options.shard
    ? selection.slice(...shardRange(selection.length, options.shard))
    : selection;
  // One document longer than --batch-tokens runs as a batch of its own.
  const model = await loadModel(options.model, {
    maxBatchTokens: Math.max(options.batchTokens, options.maxTokens),
    ...(options.gpuMemory !== undefined ? { gpuMemory: options.gpuMemory } : {}),
  });
  let encoder: BoundedEncoder | null = null;
  try {
    const moeLayers = model.facts.moe_layers.length;
    if (options.lookahead >= moeLayers) {
      throw new DataError(
        `--lookahead must be below the model's ${moeLayers} MoE layers, got ${options.lookahead}.`,
      );
    }
    const writer = await TraceWriter.open(options.out, {
      model: model.facts,
      capture: {
        corpus: options.corpus,
        domains: [],
        mode: "teacher-forced",
        lookahead: options.lookahead,
        probs: options.probs,
        seed: options.seed,
        tool_version: "moetrace capture",
        settings: {
          max_tokens: options.maxTokens,
          domains: options.domains ?? null,
          docs_per_domain: options.docsPerDomain ?? null,
          // Which documents share a shard depends on both: a resumed run must cut them alike.
          shard_rows: options.rowsPerShard ?? DEFAULT_SHARD_ROWS,
          batch_tokens: options.batchTokens,
          ...(options.defaultDomain !== undefined ? { default_domain: options.defaultDomain } : {}),
          // Only on parts, so a whole capture's settings (and resuming older traces) are unchanged.
          ...(options.shard
            ? { shard: formatShardSpec(options.shard), selected_docs: selection.length }
            : {}),
        },
      },
    }, { resume: true, rowsPerShard: options.rowsPerShard ?? DEFAULT_SHARD_ROWS });
    const todo = docs.filter((d) => !writer.completedDocs.has(d.id));
    const skippedDocs = docs.length - todo.length;
    const progress = options.progress === false
      ? null
      : new Progress("capture", docs.length, { unit: "tokens" });
    progress?.advance(skippedDocs, 0);
    let newTokens = 0;
    let batch: { doc: CorpusDoc; ids: Uint32Array }[] = [];
    let batchTokens = 0;
    const runBatch = async () => {
      if (batch.length === 0) return;
      const logs = await model.route(batch.map((b) => b.ids), {
        probs: options.probs,
        lookahead: options.lookahead,
      });
      for (let i = 0; i < batch.length; i++) {
        await writer.add(toTraceDoc(batch[i]!.doc, batch[i]!.ids, logs[i]!, tokenizer));
      }
      progress?.advance(batch.length, batchTokens);
      newTokens += batchTokens;
      batch = [];
      batchTokens = 0;
    };
    // Tokenized in a worker stopped after TOKENIZE_TIMEOUT_MS a call, and only as far as
    // --max-tokens needs: a stranger's tokenizer.json or document must not hang the capture.
    encoder = await BoundedEncoder.start(options.model);
    for (const doc of todo) {
      const ids = await encodePrefix((text) => encoder!.encode(text), doc.text, options.maxTokens);
      if (batchTokens + ids.length > options.batchTokens) await runBatch();
      batch.push({ doc, ids });
      batchTokens += ids.length;
    }
    await runBatch();
    const gpu = { gpuBytesPeak: model.gpuBytesPeak(), bytesStreamed: model.bytesStreamed() };
    await writer.close({
      gpu_bytes_peak: gpu.gpuBytesPeak,
      bytes_streamed: gpu.bytesStreamed,
      ...(options.gpuMemory !== undefined ? { gpu_memory: options.gpuMemory } : {}),
    });
    progress?.finish();
    return { newDocs: todo.length, newTokens, skippedDocs, ...gpu };
  } finally {
    encoder?.close();
    model.destroy();
  }
}

/** One document's router log as a trace document. */
export function toTraceDoc(
  doc: { id: number; domain: string },
  ids: Uint32Array,
  log: RouterLog,
  tokenizer: TextTokenizer,
  phase?: Uint8Array,
): TraceDoc {
  const traceDoc: TraceDoc = {
    doc: doc.id,
    domain: doc.domain,
    tokens: ids,
    pieces: Array.from(ids, (id) => tokenizer.piece(id)),
    experts: log.experts,
    weights: log.weights,
  };
  if (phase) traceDoc.phase = phase;
  if (log.probs) traceDoc.probs = log.probs;
  if (log.spec) traceDoc.spec = log.spec;
  return traceDoc;
}
