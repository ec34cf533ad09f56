/**
 * `moetrace import FILE... --out TRACE [--from FORMAT] [--model-config config.json]`:
 * router logs recorded elsewhere → a trace. Without --from the format is
 * told from each file's first bytes (a zip is a torch.save file) or its
 * first JSON line's fields.
 */
import { DataError, messageOf, UsageError } from "../../common/errors.ts";
import {
  type FolderLock,
  LOCK_FILE,
  lockFolder,
  pathExists,
  removeIfOnly,
  removeIfOnlySync,
} from "../../common/fs.ts";
import { importJsonl } from "./interchange.ts";
import { firstJsonLine } from "./json_lines.ts";
import { type ConfigFacts, readModelConfig } from "./model_config.ts";
import { importOlmoe } from "./olmoe.ts";
import { importResponses } from "./responses.ts";
import { importSglangPt } from "./sglang_pt.ts";
import type { ImportSummary } from "./sink.ts";
import { looksLikeLegacyTorch, looksLikeZip } from "./torch_zip.ts";

export const IMPORT_FORMATS = [
  "interchange",
  "sglang-pt",
  "sglang-response",
  "vllm",
  "olmoe",
] as const;
export type ImportFormat = typeof IMPORT_FORMATS[number];

export async function importCommand(
  files: string[],
  flags: Record<string, unknown>,
): Promise<void> {
  const out = flags.out as string;
  const config = typeof flags["model-config"] === "string"
    ? await readModelConfig(flags["model-config"])
    : null;
  const format = (flags.from as ImportFormat | undefined) ?? await detectFormats(files);
  const lock = await lockStaging(out);
  // Ctrl-C exits at once (see common/interrupt.ts): the staging folder made for the lock goes too.
  const tidy = () => removeIfOnlySync(`${out}.partial`, LOCK_FILE);
  globalThis.addEventListener("unload", tidy);
  let summary: ImportSummary;
  try {
    await clearOutput(out, flags.force === true);
    summary = await importFiles(files, out, format, config);
    // The lock file travelled into the trace with the staging folder's rename; it is no part of it.
    await Deno.remove(`${out}/${LOCK_FILE}`).catch(() => {});
  } finally {
    globalThis.removeEventListener("unload", tidy);
    lock.release();
    // A run that stopped before the trace was staged leaves no folder holding only its lock.
    await removeIfOnly(`${out}.partial`, LOCK_FILE);
  }
  if (flags.json === true) {
    console.log(JSON.stringify({ out, format, files, docs: summary.docs, tokens: summary.tokens }));
    return;
  }
  console.error(
    `Imported ${summary.docs} documents, ${summary.tokens} tokens (${format}) into ${out}.`,
  );
}

/**
 * Takes the lock of the staging folder `<out>.partial` (see lockFolder): two
 * imports into one --out would clear and fill the same staging folder. A
 * lock left by a killed import is taken over; a staging name that is a file
 * or a link is removed first (the lock must be in the folder itself).
 */
async function lockStaging(out: string): Promise<FolderLock> {
  const staging = `${out}.partial`;
  const info = await Deno.lstat(staging).catch(() => null);
  try {
    if (info !== null && !info.isDirectory) await Deno.remove(staging);
    await Deno.mkdir(staging, { recursive: true });
  } catch (error) {
    throw new DataError(`Cannot create the staging folder ${staging}: ${messageOf(error)}.`);
  }
  return await lockFolder(staging, "import");
}

/**
 * The import is staged beside `out` and renamed into place, which needs `out`
 * gone: an empty folder is removed, anything else only with --force (after
 * the formats were told apart, so a wrong FILE leaves it alone).
 */
async function clearOutput(out: string, force: boolean): Promise<void> {
  if (!await pathExists(out)) return;
  let empty = false;
  try {
    empty = (await Deno.stat(out)).isDirectory &&
      (await Array.fromAsync(Deno.readDir(out))).length === 0;
  } catch {
    // Unreadable: left to the refusal below.
  }
  if (!empty && !force) {
    throw new UsageError(
      `--out ${out} of import already exists; choose a new folder, or pass --force to replace it.`,
    );
  }
  await Deno.remove(out, { recursive: true });
}

/** Imports `files` of one format into a trace at `out`. */
export async function importFiles(
  files: string[],
  out: string,
  format: ImportFormat,
  config: ConfigFacts | null = null,
): Promise<ImportSummary> {
  switch (format) {
    case "interchange":
      return await importJsonl(files, out, config);
    case "sglang-pt":
      return await importSglangPt(files, out, config);
    case "sglang-response":
    case "vllm":
      return await importResponses(files, out, config, format);
    case "olmoe":
      return await importOlmoe(files, out, config);
  }
}

/** The one format all `files` are in; files of different formats are refused. */
export async function detectFormats(files: string[]): Promise<ImportFormat> {
  if (files.length === 0) throw new UsageError("import needs at least one FILE.");
  const formats = await Promise.all(files.map(detectFormat));
  const other = formats.findIndex((f) => f !== formats[0]);
  if (other > 0) {
    throw new DataError(
      `${files[other]} looks like ${formats[other]} but ${files[0]} like ${
        formats[0]
      }; import one format at a time, or say which with --from.`,
    );
  }
  return formats[0]!;
}

/** Tells a file's format from its first bytes or its first JSON line. */
export async function detectFormat(file: string): Promise<ImportFormat> {
  let head: Uint8Array;
  try {
    using handle = await Deno.open(file);
    head = new Uint8Array(8);
    const n = await handle.read(head) ?? 0;
    head = head.subarray(0, n);
  } catch (error) {
    throw new DataError(`Cannot read ${file}: ${error instanceof Error ? error.message : error}.`);
  }
  // An empty file goes to the interchange reader, which names what it lacks.
  if (head.length === 0) return "interchange";
  if (looksLikeZip(head) || looksLikeLegacyTorch(head)) return "sglang-pt";
  const json = await firstJsonLine(file);
  const first = Array.isArray(json) ? json[0] : json;
  if (typeof first === "object" && first !== null && !Array.isArray(first)) {
    const keys = first as Record<string, unknown>;
    if ("moetrace_import" in keys) return "interchange";
    if ("exp_ids" in keys) return "olmoe";
    if ("meta_info" in keys) return "sglang-response";
    if ("choices" in keys || "prompt_routed_experts" in keys) return "vllm";
    // A document line without its header: the interchange reader says what is missing.
    if ("tokens" in keys || "experts" in keys) return "interchange";
  }
  throw new DataError(
    `Cannot tell the format of ${file} from its first line; pass --from with one of ${
      IMPORT_FORMATS.join(", ")
    }.`,
  );
}
