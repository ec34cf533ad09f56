/**
 * `moetrace generate`: generates from prompts and logs the router decisions
 * of prompt tokens (phase 0) and generated tokens (phase 1).
 *
 * Prompts come from a text file (one prompt per line) or JSONL with a
 * "prompt" field and an optional "domain" (default "prompts"). With --chat
 * each prompt is a user turn rendered through the model's chat template.
 * Every completion is printed on stdout as it finishes.
 *
 * With `--offload POLICY:CAPACITY [--prefetch speculative] [--budget global]`
 * the routed experts stay in host memory and every token runs through GPU
 * expert slots (offload.ts), and `measured.csv` beside manifest.json holds
 * one row per trace row: for generated tokens (phase 1) the decode step's
 * wall ms, uploads (misses + prefetched) and bytes; for prompt tokens (phase
 * 0, prefilled token by token through the same slots) their uploads and
 * bytes (no ms). Summed, uploads equal `simulate`'s misses + prefetch_issued
 * on this trace with the same policy, capacity and budget. A resumed run
 * starts a fresh cache, so only an uninterrupted run matches.
 */
import { DataError, messageOf, UsageError } from "../common/errors.ts";
import { readLines } from "../common/lines.ts";
import { Progress } from "../common/progress.ts";
import { toTraceDoc } from "./capture.ts";
import { parseGpuMemory } from "./expert_stream.ts";
import { loadModel } from "./model.ts";
import { BoundedEncoder, TextTokenizer } from "./tokenizer.ts";
import { TraceWriter } from "../trace/mod.ts";
import {
  createOffloader,
  type OffloadSettings,
  parseOffload,
  type TokenMeasure,
} from "./offload.ts";
import { writeFileAtomic } from "../common/atomic_write.ts";

export interface GenerateOptions {
  model: string;
  prompts: string;
  out: string;
  chat: boolean;
  maxNewTokens: number;
  /** 0 is greedy. */
  temperature: number;
  seed: number;
  /** Offloaded decode (issue 9); undefined keeps every expert on the GPU. */
  offload?: OffloadSettings;
  /** Bytes of GPU memory the model may hold (--gpu-memory): routed experts stream from host memory (expert_stream.ts). */
  gpuMemory?: number;
  /** Print each completion as a JSON line on stdout (default true; the offload benchmark turns it off). */
  print?: boolean;
}

/** What a `generate` run leaves besides its trace: the completions and the GPU memory it held. */
export interface GenerateSummary {
  completions: string[];
  /** Generated tokens over all prompts (stop tokens included). */
  generated: number;
  /** GPU bytes of the model (and expert slots) at the end of the run. */
  gpuBytes: number;
  /** The part of gpuBytes holding routed expert weights (MoeModel.expertGpuBytes). */
  expertGpuBytes: number;
  /** Prompts already in the trace from an earlier run, skipped. */
  skipped: number;
  /** Prompts in the file. */
  prompts: number;
  /** Of an offloaded run: its settings and totals over this run's tokens (null without --offload). */
  offload: OffloadTotals | null;
  /** With --gpu-memory: the cap, the pool's peak and the expert bytes streamed from host memory. */
  gpu?: { cap: number; peak: number; streamed: number };
}

/** What an offloaded run measured, summed over this run's tokens (measured.csv holds each). */
export interface OffloadTotals {
  settings: OffloadSettings;
  /** Mean wall ms of a decode step (generated tokens), NaN if none was timed. */
  meanMsPerToken: number;
  /** Generated tokens timed. */
  timedTokens: number;
  /** Expert uploads: misses + prefetched, over prompt and generated tokens. */
  uploads: number;
  misses: number;
  prefetched: number;
  uploadBytes: number;
}

/** Sums the measurements of an offloaded run. */
export function offloadTotals(
  measured: readonly TokenMeasure[],
  settings: OffloadSettings,
): OffloadTotals {
  let ms = 0, timed = 0, misses = 0, prefetched = 0, bytes = 0;
  for (const m of measured) {
    if (m.phase === 1 && !Number.isNaN(m.ms)) {
      ms += m.ms;
      timed++;
    }
    misses += m.misses;
    prefetched += m.prefetched;
    bytes += m.bytes;
  }
  return {
    settings,
    meanMsPerToken: timed > 0 ? ms / timed : NaN,
    timedTokens: timed,
    uploads: misses + prefetched,
    misses,
    prefetched,
    uploadBytes: bytes,
  };
}

export async function generateCommand(flags: Record<string, unknown>): Promise<void> {
  if (flags.offload === undefined && flags.prefetch !== undefined && flags.prefetch !== "none") {
    throw new UsageError("--prefetch needs --offload POLICY:CAPACITY.");
  }
  if (flags.offload === undefined && flags.budget !== undefined && flags.budget !== "per-layer") {
    throw new UsageError("--budget needs --offload POLICY:CAPACITY.");
  }
  if (flags.offload !== undefined && flags["gpu-memory"] !== undefined) {
    throw new UsageError(
      "--gpu-memory and --offload cannot be combined: --offload sets the GPU's expert slots itself.",
    );
  }
  const json = flags.json === true;
  const out = flags.out as string;
  const summary = await generate({
    ...(typeof flags["gpu-memory"] === "string"
      ? { gpuMemory: parseGpuMemory(flags["gpu-memory"]) }
      : {}),
    print: !json,
    ...(flags.offload !== undefined
      ? {
        offload: parseOffload(flags.offload as string, {
          prefetch: (flags.prefetch as string) ?? "none",
          budget: (flags.budget as string) ?? "per-layer",
        }),
      }
      : {}),
    model: flags.model as string,
    prompts: flags.prompts as string,
    out: flags.out as string,
    chat: flags.chat as boolean,
    maxNewTokens: flags["max-new-tokens"] as number,
    temperature: flags.temperature as number,
    seed: flags.seed as number,
  });
  const measuredCsv = flags.offload !== undefined ? `${out}/measured.csv` : null;
  if (json) {
    const o = summary.offload;
    console.log(JSON.stringify({
      out,
      measured: measuredCsv,
      prompts: summary.prompts,
      skipped: summary.skipped,
      already_complete: summary.skipped === summary.prompts,
      generated: summary.generated,
      completions: summary.completions,
      gpu_bytes: summary.gpuBytes,
      expert_gpu_bytes: summary.expertGpuBytes,
      ...(summary.gpu
        ? { gpu_bytes_peak: summary.gpu.peak, bytes_streamed: summary.gpu.streamed }
        : {}),
      offload: o && {
        policy: o.settings.policy,
        capacity: o.settings.capacity,
        prefetch: o.settings.prefetch,
        budget: o.settings.budget,
        mean_ms_per_token: Number.isNaN(o.meanMsPerToken) ? null : o.meanMsPerToken,
        timed_tokens: o.timedTokens,
        uploads: o.uploads,
        misses: o.misses,
        prefetched: o.prefetched,
        upload_bytes: o.uploadBytes,
      },
    }));
    return;
  }
  for (const line of generateReport(out, summary)) console.error(line);
}

/** The lines `generate` ends with: where its outputs went and, when offloaded, what it cost. */
export function generateReport(out: string, s: GenerateSummary): string[] {
  if (s.skipped === s.prompts) {
    return [
      `generate: ${out} is already complete (all ${
        plural(s.prompts, "prompt")
      }); nothing to do (choose another --out, or remove it, to generate again).`,
    ];
  }
  const lines = [
    `generate: ${plural(s.prompts - s.skipped, "prompt")}, ${
      plural(s.generated, "token")
    } generated${
      s.skipped ? ` (${plural(s.skipped, "prompt")} already there)` : ""
    }; trace in ${out}${s.offload ? `, per-token measurements in ${out}/measured.csv` : ""}.`,
  ];
  if (s.gpu) {
    lines.push(
      `generate: GPU memory peak ${formatMiB(s.gpu.peak)} of the --gpu-memory ${
        formatMiB(s.gpu.cap)
      }; ${formatMiB(s.gpu.streamed)} of routed experts streamed from host memory.`,
    );
  }
  const o = s.offload;
  if (o) {
    const { policy, capacity, prefetch, budget } = o.settings;
    lines.push(
      `generate: offload ${policy}:${capacity} (${budget}, prefetch ${prefetch}): ${
        Number.isNaN(o.meanMsPerToken)
          ? "no decode step timed"
          : `mean ${o.meanMsPerToken.toFixed(2)} ms per generated token over ${
            plural(o.timedTokens, "token")
          }`
      }; ${o.uploads} expert uploads (${o.misses} misses, ${o.prefetched} prefetched, ${
        formatMiB(o.uploadBytes)
      }); routed experts hold ${formatMiB(s.expertGpuBytes)} of ${
        formatMiB(s.gpuBytes)
      } GPU memory.`,
    );
    if (s.skipped) {
      lines.push(
        `generate: measured.csv holds this run's ${
          s.prompts - s.skipped
        } prompts only (a resumed run starts a fresh cache).`,
      );
    }
  }
  return lines;
}

function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

function formatMiB(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** A prompt with its domain label. */
export interface Prompt {
  text: string;
  domain: string;
}

/** Reads prompts: JSONL objects with "prompt" (and "domain"), or plain lines. */
export async function readPrompts(path: string): Promise<Prompt[]> {
  const prompts: Prompt[] = [];
  try {
    for await (const { line, number } of readLines(path)) {
      if (line.trim() === "") continue;
      if (line.trimStart().startsWith("{")) {
        let json: { prompt?: unknown; domain?: unknown };
        try {
          json = JSON.parse(line);
        } catch (error) {
          throw new DataError(`${path} line ${number} is not valid JSON: ${messageOf(error)}.`);
        }
        if (typeof json.prompt !== "string") {
          throw new DataError(`${path} line ${number} has no string field "prompt".`);
        }
        prompts.push({
          text: json.prompt,
          domain: typeof json.domain === "string" ? json.domain : "prompts",
        });
      } else {
        prompts.push({ text: line, domain: "prompts" });
      }
    }
  } catch (error) {
    if (error instanceof DataError) throw error;
    if (error instanceof TypeError) throw new DataError(`${path} is not valid UTF-8 text.`);
    throw new DataError(`Cannot read the prompts ${path}: ${messageOf(error)}.`);
  }
  if (prompts.length === 0) throw new DataError(`${path} holds no prompts.`);
  return prompts;
}

export async function generate(options: GenerateOptions): Promise<GenerateSummary> {
  const tokenizer = await TextTokenizer.load(options.model);
  const prompts = await readPrompts(options.prompts);
  const encoded: Uint32Array[] = [];
  // Encoded in a worker with a time limit: a stranger's tokenizer.json must not hang generate.
  const encoder = await BoundedEncoder.start(options.model);
  try {
    for (const p of prompts) {
      encoded.push(
        options.chat
          ? await encoder.encode(
            await tokenizer.renderChat([{ role: "user", content: p.text }]),
            false,
          )
          : await encoder.encode(p.text),
      );
    }
  } finally {
    encoder.close();
  }
  const off = options.offload;
  const model = await loadModel(options.model, {
    hostExperts: off !== undefined,
    // under a cap the run state holds only the longest prompt and its new tokens, not 4096 rows
    ...(options.gpuMemory !== undefined
      ? {
        gpuMemory: options.gpuMemory,
        maxBatchTokens: Math.max(1, ...encoded.map((e) => e.length)) + options.maxNewTokens,
      }
      : {}),
  });
  const measured: (TokenMeasure & { doc: number })[] = [];
  const offloader = off ? createOffloader(model, off) : null;
  try {
    const writer = await TraceWriter.open(options.out, {
      model: model.facts,
      capture: {
        corpus: options.prompts,
        domains: [],
        mode: "generate",
        lookahead: off?.prefetch === "speculative" ? 1 : 0,
        probs: false,
        seed: options.seed,
        tool_version: "moetrace generate",
        settings: {
          chat: options.chat,
          max_new_tokens: options.maxNewTokens,
          temperature: options.temperature,
          ...(off
            ? {
              offload: `${off.policy}:${off.capacity}`,
              prefetch: off.prefetch,
              budget: off.budget,
            }
            : {}),
        },
      },
    }, { resume: true, rowsPerShard: 4096 });
    const progress = new Progress("generate", prompts.length, { unit: "tokens" });
    const completions: string[] = [];
    let generated = 0;
    let skipped = 0;
    for (let i = 0; i < prompts.length; i++) {
      if (writer.completedDocs.has(i)) {
        progress.advance(1, 0);
        skipped++;
        continue;
      }
      const genOptions = {
        maxNewTokens: options.maxNewTokens,
        temperature: options.temperature,
        seed: options.seed + i,
        probs: false,
        lookahead: 0,
        stopIds: tokenizer.stopIds,
      };
      let result;
      if (offloader) {
        result = await offloader.generate(encoded[i]!, genOptions);
        for (const m of result.measures) measured.push({ doc: i, ...m });
      } else {
        result = await model.generate(encoded[i]!, genOptions);
      }
      const phase = new Uint8Array(result.tokens.length).fill(1, result.promptLength);
      await writer.add(
        toTraceDoc(
          { id: i, domain: prompts[i]!.domain },
          result.tokens,
          result.log,
          tokenizer,
          phase,
        ),
      );
      const completion = tokenizer.decode(result.tokens.subarray(result.promptLength));
      completions.push(completion);
      generated += result.tokens.length - result.promptLength;
      if (options.print ?? true) {
        console.log(JSON.stringify({ prompt: prompts[i]!.text, completion }));
      }
      progress.advance(1, result.tokens.length - result.promptLength);
    }
    await writer.close({
      gpu_bytes_peak: model.gpuBytesPeak(),
      bytes_streamed: model.bytesStreamed(),
      ...(options.gpuMemory !== undefined ? { gpu_memory: options.gpuMemory } : {}),
    });
    // A rerun with nothing left to do keeps the measurements of the run that did it.
    if (off && skipped < prompts.length) {
      await writeMeasured(`${options.out}/measured.csv`, measured, off);
    }
    progress.finish();
    return {
      completions,
      generated,
      gpuBytes: model.gpuBytes(),
      expertGpuBytes: model.expertGpuBytes(),
      skipped,
      prompts: prompts.length,
      offload: off && skipped < prompts.length ? offloadTotals(measured, off) : null,
      ...(options.gpuMemory !== undefined
        ? {
          gpu: {
            cap: options.gpuMemory,
            peak: model.gpuBytesPeak(),
            streamed: model.bytesStreamed(),
          },
        }
        : {}),
    };
  } finally {
    offloader?.destroy();
    model.destroy();
  }
}

/** measured.csv: one tidy row per generated token of an offloaded run. */
async function writeMeasured(
  path: string,
  rows: (TokenMeasure & { doc: number })[],
  off: OffloadSettings,
): Promise<void> {
  const lines = [
    "doc,phase,token,pos,ms,uploads,misses,prefetched,bytes,policy,capacity,prefetch,budget",
  ];
  for (const r of rows) {
    lines.push(
      [
        r.doc,
        r.phase,
        r.token,
        r.pos,
        Number.isNaN(r.ms) ? "" : r.ms.toFixed(4),
        r.misses + r.prefetched,
        r.misses,
        r.prefetched,
        r.bytes,
        off.policy,
        off.capacity,
        off.prefetch,
        off.budget,
      ].join(","),
    );
  }
  await writeFileAtomic(path, lines.join("\n") + "\n");
}
