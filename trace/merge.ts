/**
 * `moetrace merge TRACE... --out TRACE [--copy]`: joins the parts of a
 * capture split with `--shard i/n` (on several GPUs or machines) into one
 * trace. It checks that the parts come from the same model, corpus and
 * options, that every part finished, and that together they hold each
 * selected document exactly once; then writes one manifest that lists the
 * parts' shards by paths relative to the new trace (nothing is copied), or
 * with --copy copies the shards into it. The output is staged in
 * `<out>.partial` and renamed into place, so a refused merge leaves nothing.
 */
import { relative, resolve } from "node:path";
import { DataError, UsageError } from "../common/errors.ts";
import { pathExists } from "../common/fs.ts";
import {
  type CaptureFacts,
  type Manifest,
  type ShardEntry,
  TRACE_FORMAT,
  writeManifest,
} from "./manifest.ts";
import { isParquetShard, TraceReader } from "./reader.ts";
import { parseShardSpec, shardRange, type ShardSpec } from "./split.ts";

export async function mergeCommand(
  traces: string[],
  flags: Record<string, unknown>,
): Promise<void> {
  const out = flags.out as string;
  const manifest = await mergeTraces(traces, out, { copy: flags.copy === true });
  const rows = manifest.shards.reduce((n, s) => n + s.rows, 0);
  const docs = manifest.shards.reduce((n, s) => n + s.docs, 0);
  if (flags.json === true) {
    const copied = flags.copy === true;
    console.log(JSON.stringify({ out, parts: traces.length, docs, tokens: rows, copied }));
    return;
  }
  console.error(
    `merge: ${traces.length} parts, ${docs} documents (${rows} tokens) in ${out}` +
      (flags.copy ? " (shards copied)." : " (shards left in place, listed by relative path)."),
  );
}

export interface MergeOptions {
  /** Copy the shards into `out/shards` instead of listing them where they are (default false). */
  copy?: boolean;
}

/** Settings that say which part a trace is; every other setting must agree. */
const PART_SETTINGS = ["shard", "selected_docs"];
/** Capture facts that must agree between parts (besides `settings`). */
const SAME_CAPTURE: (keyof CaptureFacts)[] = [
  "corpus",
  "mode",
  "lookahead",
  "probs",
  "seed",
  "tool_version",
  "weights_recorded",
  "tokens_recorded",
  "requests",
  "arrival_steps",
  "documents",
];

interface Part {
  dir: string;
  reader: TraceReader;
  spec: ShardSpec;
  selected: number;
}

/** Merges the part traces in `dirs` into a new trace at `out`; returns its manifest. */
export async function mergeTraces(
  dirs: string[],
  out: string,
  options: MergeOptions = {},
): Promise<Manifest> {
  if (dirs.length === 0) throw new UsageError("merge needs at least one TRACE.");
  if (await pathExists(out)) {
    throw new DataError(`${out} already exists; choose another --out or remove it first.`);
  }
  const parts: Part[] = [];
  for (const dir of dirs) parts.push(await openPart(dir));
  checkSameCapture(parts);
  checkCoverage(parts);
  await checkDisjoint(parts);
  parts.sort((a, b) => a.spec.index - b.spec.index);

  const staging = `${out}.partial`;
  await Deno.remove(staging, { recursive: true }).catch(() => {});
  await Deno.mkdir(`${staging}/shards`, { recursive: true });
  try {
    const shards: ShardEntry[] = [];
    for (const part of parts) {
      for (const shard of part.reader.manifest.shards) {
        const source = resolve(part.dir, shard.file);
        let file: string;
        if (options.copy) {
          const number = String(shards.length).padStart(5, "0");
          file = isParquetShard(shard.file)
            ? `shards/part-${number}.parquet`
            : `shards/${number}.arrow`;
          await Deno.copyFile(source, `${staging}/${file}`);
        } else {
          // Relative to where the trace will be: `out` and its staging folder are siblings.
          file = relative(resolve(out), source);
        }
        shards.push({ ...shard, file });
      }
    }
    const first = parts[0]!.reader.manifest;
    const settings = { ...first.capture.settings };
    for (const key of PART_SETTINGS) delete settings[key];
    const domains: string[] = [];
    for (const part of parts) {
      for (const d of part.reader.manifest.capture.domains) {
        if (!domains.includes(d)) domains.push(d);
      }
    }
    // The parts' shards carry the parts' ids: the merged trace accepts those (when every part has one).
    const partIds = parts.flatMap((p) => {
      const m = p.reader.manifest;
      return m.trace_id === undefined ? [] : [m.trace_id, ...(m.capture.merged_trace_ids ?? [])];
    });
    const everyPartHasId = parts.every((p) => p.reader.manifest.trace_id !== undefined);
    const manifest: Manifest = {
      format: TRACE_FORMAT,
      ...(everyPartHasId ? { trace_id: crypto.randomUUID() } : {}),
      model: first.model,
      capture: {
        ...first.capture,
        domains,
        settings,
        created: parts.map((p) => p.reader.manifest.capture.created).sort()[0]!,
        updated: new Date().toISOString(),
        complete: true,
        merged_from: parts.map((p) => relative(resolve(out), resolve(p.dir))),
        ...(everyPartHasId ? { merged_trace_ids: partIds } : {}),
      },
      shards,
    };
    await writeManifest(staging, manifest);
    // Every listed shard resolves from the staged manifest as it will from `out`.
    await TraceReader.open(staging);
    await Deno.rename(staging, out);
    return manifest;
  } catch (error) {
    await Deno.remove(staging, { recursive: true }).catch(() => {});
    throw error;
  }
}

async function openPart(dir: string): Promise<Part> {
  const reader = await TraceReader.open(dir);
  const capture = reader.manifest.capture;
  const shard = capture.settings?.shard;
  if (typeof shard !== "string") {
    throw new DataError(
      `${dir} was not captured with --shard i/n; merge joins the parts of one split capture.`,
    );
  }
  let spec: ShardSpec;
  try {
    spec = parseShardSpec(shard, `${dir}/manifest.json field "capture.settings.shard"`);
  } catch (error) {
    throw new DataError((error as Error).message);
  }
  const selected = capture.settings?.selected_docs;
  if (typeof selected !== "number" || !Number.isInteger(selected) || selected < 0) {
    throw new DataError(
      `${dir}/manifest.json field "capture.settings.selected_docs" must be a count, got ${
        JSON.stringify(selected)
      }.`,
    );
  }
  if (!capture.complete) {
    throw new DataError(
      `${dir} is not complete (its capture was interrupted or is still running); run the same capture command again to finish it before merging.`,
    );
  }
  return { dir, reader, spec, selected };
}

/** Same model, corpus and options (settings other than the part's own). */
function checkSameCapture(parts: Part[]): void {
  const first = parts[0]!;
  const a = first.reader.manifest;
  for (const part of parts.slice(1)) {
    const b = part.reader.manifest;
    const differ = (what: string, x: unknown, y: unknown) => {
      if (JSON.stringify(x) !== JSON.stringify(y)) {
        throw new DataError(
          `${part.dir} and ${first.dir} are not parts of one capture: ${what} is ${
            JSON.stringify(y)
          } in the one and ${JSON.stringify(x)} in the other.`,
        );
      }
    };
    differ("format", a.format, b.format);
    for (const key of new Set([...Object.keys(a.model), ...Object.keys(b.model)])) {
      differ(`model.${key}`, (a.model as never)[key], (b.model as never)[key]);
    }
    for (const key of SAME_CAPTURE) differ(`capture.${key}`, a.capture[key], b.capture[key]);
    const sa = a.capture.settings ?? {};
    const sb = b.capture.settings ?? {};
    for (const key of new Set([...Object.keys(sa), ...Object.keys(sb)])) {
      if (key !== "shard") differ(`capture.settings.${key}`, sa[key], sb[key]);
    }
  }
}

/** Parts 0..n−1 each once, each holding the documents of its block of the selection. */
function checkCoverage(parts: Part[]): void {
  const count = parts[0]!.spec.count;
  const byIndex = new Map<number, Part>();
  for (const part of parts) {
    if (part.spec.count !== count) {
      throw new DataError(
        `${part.dir} is part ${part.spec.index}/${part.spec.count} but ${parts[0]!.dir} is part ${
          parts[0]!.spec.index
        }/${count}; the parts of one capture share n.`,
      );
    }
    const twin = byIndex.get(part.spec.index);
    if (twin) {
      throw new DataError(`${twin.dir} and ${part.dir} are both part ${part.spec.index}/${count}.`);
    }
    byIndex.set(part.spec.index, part);
  }
  for (let index = 0; index < count; index++) {
    if (!byIndex.has(index)) {
      throw new DataError(`Part ${index}/${count} is missing; merge needs all ${count} parts.`);
    }
  }
  for (const part of parts) {
    const [start, end] = shardRange(part.selected, part.spec);
    if (part.reader.docs !== end - start) {
      throw new DataError(
        `${part.dir} holds ${part.reader.docs} documents but part ${part.spec.index}/${count} of ${part.selected} selected documents has ${
          end - start
        }.`,
      );
    }
  }
}

/** No document is in two parts (read from the shards' `doc` columns, each shard checked). */
async function checkDisjoint(parts: Part[]): Promise<void> {
  const owner = new Map<number, string>();
  for (const part of parts) {
    for await (const batch of part.reader.batches({ columns: "doc" })) {
      let previous = -1;
      for (const doc of batch.doc) {
        if (doc === previous) continue;
        previous = doc;
        const other = owner.get(doc);
        if (other !== undefined) {
          throw new DataError(
            `Document ${doc} is in both ${other} and ${part.dir}; each part must hold its own block of the selection.`,
          );
        }
        owner.set(doc, part.dir);
      }
    }
  }
}
