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
import { loadModel } from "./model.ts";
import { TextTokenizer } from "./tokenizer.ts";
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
}

export async function generateCommand(flags: Record<string, unknown>): Promise<void> {
  if (flags.offload === undefined && flags.prefetch !== undefined && flags.prefetch !== "none") {
    throw new UsageError("--prefetch needs --offload POLICY:CAPACITY.");
  }
  if (flags.offload === undefined && flags.budget !== undefined && flags.budget !== "per-layer") {
    throw new UsageError("--budget needs --offload POLICY:CAPACITY.");
  }
  await generate({
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
  for (const p of prompts) {
    encoded.push(
      options.chat
        ? await tokenizer.encodeChat([{ role: "user", content: p.text }])
        : tokenizer.encode(p.text),
    );
  }
  const off = options.offload;
  const model = await loadModel(options.model, { hostExperts: off !== undefined });
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
    for (let i = 0; i < prompts.length; i++) {
      if (writer.completedDocs.has(i)) {
        progress.advance(1, 0);
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
    await writer.close();
    if (off) await writeMeasured(`${options.out}/measured.csv`, measured, off);
    progress.finish();
    return {
      completions,
      generated,
      gpuBytes: model.gpuBytes(),
      expertGpuBytes: model.expertGpuBytes(),
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
