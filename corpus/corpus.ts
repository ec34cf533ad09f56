/**
 * Corpus readers for `capture`: Pile JSONL (`.jsonl`), Zstandard-compressed
 * Pile JSONL (`.jsonl.zst`, as the Pile's `val.jsonl.zst`), or a folder of
 * text files with one sub-folder per domain.
 *
 * Every document gets a stable id: its ordinal position in the corpus (line
 * order for JSONL, sorted path order for folders). Resumed captures skip
 * documents by that id, so the selection must be deterministic: filtering by
 * `domains` and a seeded per-domain sample (`docsPerDomain`, reservoir
 * sampling in one pass) depend only on the corpus and the seed.
 */
import { Decompress } from "fzstd";
import { DataError, messageOf } from "../common/errors.ts";
import { realPathWithin } from "../common/fs.ts";
import { MAX_DOCUMENT_CHARS, readLines } from "../common/lines.ts";
import { Rng } from "../common/random.ts";
import { nearest } from "../common/suggest.ts";

export interface CorpusDoc {
  /** Ordinal position in the corpus: the trace's `doc` id. */
  id: number;
  domain: string;
  text: string;
}

export interface CorpusOptions {
  /** Keep only these domains (default: all). */
  domains?: string[];
  /** Keep a seeded sample of this many documents per domain (default: all). */
  docsPerDomain?: number;
  /** Seed of the sample (default 0). */
  seed?: number;
  /** Domain of a JSONL line without meta.pile_set_name (default: such a line is refused). */
  defaultDomain?: string;
}

/** Reads the corpus at `path` with the selection in `options`, in corpus order. */
export async function* readCorpus(
  path: string,
  options: CorpusOptions = {},
): AsyncGenerator<CorpusDoc> {
  const wanted = options.domains ? new Set(options.domains) : null;
  const all = readRaw(path, options.defaultDomain);
  const selected = (async function* () {
    const seen = new Set<string>();
    for await (const doc of all) {
      seen.add(doc.domain);
      if (!wanted || wanted.has(doc.domain)) yield doc;
    }
    if (wanted) checkDomains(path, [...wanted], seen);
  })();
  if (options.docsPerDomain === undefined) {
    yield* selected;
    return;
  }
  const sample = await sampleByDomain(selected, options.docsPerDomain, options.seed ?? 0);
  yield* sample;
}

/**
 * Refuses --domains names the corpus does not hold (a typo would otherwise
 * capture the other domains alone), naming the corpus's domains and the
 * nearest one. Checked once the whole corpus was read, before any document
 * reaches the model: capture reads the selection first.
 */
function checkDomains(path: string, wanted: string[], seen: Set<string>): void {
  const missing = wanted.filter((d) => !seen.has(d));
  if (missing.length === 0) return;
  const known = [...seen].sort();
  const hints = missing.map((d) => {
    const near = nearest(d, known);
    return near === null ? `"${d}"` : `"${d}" (did you mean ${near}?)`;
  });
  throw new DataError(
    `--domains names ${hints.join(", ")}, which the corpus ${path} does not hold; its domains are ${
      known.length > 0 ? known.join(", ") : "none"
    }.`,
  );
}

/** A uniform sample of `n` documents per domain (reservoir sampling), returned in corpus order. */
async function sampleByDomain(
  docs: AsyncIterable<CorpusDoc>,
  n: number,
  seed: number,
): Promise<CorpusDoc[]> {
  const reservoirs = new Map<string, { seen: number; kept: CorpusDoc[]; rng: Rng }>();
  for await (const doc of docs) {
    let r = reservoirs.get(doc.domain);
    if (!r) {
      // One generator per domain, seeded by seed and domain name, so a domain's
      // sample does not change when other domains are added or filtered out.
      r = { seen: 0, kept: [], rng: new Rng(seed ^ hashString(doc.domain)) };
      reservoirs.set(doc.domain, r);
    }
    r.seen++;
    if (r.kept.length < n) r.kept.push(doc);
    else {
      const j = r.rng.int(r.seen);
      if (j < n) r.kept[j] = doc;
    }
  }
  return [...reservoirs.values()].flatMap((r) => r.kept).sort((a, b) => a.id - b.id);
}

function hashString(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

async function* readRaw(path: string, defaultDomain?: string): AsyncGenerator<CorpusDoc> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (error) {
    throw new DataError(`Cannot read the corpus ${path}: ${messageOf(error)}.`);
  }
  if (info.isDirectory) yield* readFolder(path);
  else if (path.endsWith(".zst")) {
    const file = await Deno.open(path);
    yield* readPileJsonl(path, file.readable.pipeThrough(zstdStream(path)), defaultDomain);
  } else if (path.endsWith(".jsonl") || path.endsWith(".json")) {
    yield* readPileJsonl(path, (await Deno.open(path)).readable, defaultDomain);
  } else {
    throw new DataError(
      `The corpus ${path} must be a .jsonl or .jsonl.zst file or a folder of text files.`,
    );
  }
}

/** Pile JSONL: `{"text": "...", "meta": {"pile_set_name": "..."}}` per line. */
async function* readPileJsonl(
  path: string,
  stream: ReadableStream<Uint8Array>,
  defaultDomain?: string,
): AsyncGenerator<CorpusDoc> {
  let id = 0;
  let lastLine = 0;
  try {
    for await (const { line, number } of readLines(path, stream)) {
      lastLine = number;
      if (line.trim() === "") continue;
      let json: unknown;
      try {
        json = JSON.parse(line);
      } catch (error) {
        throw new DataError(`${path} line ${number} is not valid JSON: ${messageOf(error)}.`);
      }
      const record = json as { text?: unknown; meta?: { pile_set_name?: unknown } };
      if (typeof json !== "object" || json === null || typeof record.text !== "string") {
        throw new DataError(`${path} line ${number} has no string field "text".`);
      }
      const domain = record.meta?.pile_set_name ?? defaultDomain;
      if (typeof domain !== "string") {
        throw new DataError(
          `${path} line ${number} has no string field "meta.pile_set_name"; pass --default-domain NAME to label such lines.`,
        );
      }
      if (record.text.length > MAX_DOCUMENT_CHARS) {
        throw new DataError(
          `${path} line ${number} holds a document of ${
            record.text.length.toLocaleString("en-US")
          } characters, over the limit of ${MAX_DOCUMENT_CHARS.toLocaleString("en-US")}.`,
        );
      }
      yield { id: id++, domain, text: record.text };
    }
  } catch (error) {
    if (error instanceof TypeError) {
      throw new DataError(`${path} line ${lastLine + 1} is not valid UTF-8.`);
    }
    throw error;
  }
}

/**
 * A folder whose sub-folders are domains, each holding text files (sorted by
 * name). Symlinks are followed when they stay inside the folder and refused
 * when they leave it; a file over MAX_DOCUMENT_CHARS is refused unread.
 */
async function* readFolder(path: string): AsyncGenerator<CorpusDoc> {
  const domains: string[] = [];
  for await (const entry of Deno.readDir(path)) {
    if (await entryIs(entry, `${path}/${entry.name}`, path, "folder")) domains.push(entry.name);
  }
  if (domains.length === 0) {
    throw new DataError(`The corpus folder ${path} has no sub-folders; expected one per domain.`);
  }
  domains.sort();
  let id = 0;
  const decoder = new TextDecoder("utf-8", { fatal: true });
  for (const domain of domains) {
    const files: string[] = [];
    for await (const entry of Deno.readDir(`${path}/${domain}`)) {
      if (entry.name.startsWith(".")) continue;
      if (await entryIs(entry, `${path}/${domain}/${entry.name}`, path, "file")) {
        files.push(entry.name);
      }
    }
    files.sort();
    for (const name of files) {
      const file = `${path}/${domain}/${name}`;
      let text: string;
      try {
        // UTF-8 takes at most 4 bytes a character: a larger file is over the limit unread.
        if ((await Deno.stat(file)).size > 4 * MAX_DOCUMENT_CHARS) throw tooLarge(file);
        text = decoder.decode(await Deno.readFile(file));
      } catch (error) {
        if (error instanceof DataError) throw error;
        throw new DataError(
          error instanceof TypeError
            ? `${file} is not valid UTF-8 text.`
            : `Cannot read ${file}: ${messageOf(error)}.`,
        );
      }
      if (text.length > MAX_DOCUMENT_CHARS) throw tooLarge(file);
      yield { id: id++, domain, text };
    }
  }
}

function tooLarge(file: string): DataError {
  return new DataError(
    `${file} is larger than ${
      MAX_DOCUMENT_CHARS.toLocaleString("en-US")
    } characters, the limit for one document.`,
  );
}

/** Whether a folder entry is a `kind`, following a symlink only when it stays inside `root`. */
async function entryIs(
  entry: Deno.DirEntry,
  full: string,
  root: string,
  kind: "file" | "folder",
): Promise<boolean> {
  if (!entry.isSymlink) return kind === "file" ? entry.isFile : entry.isDirectory;
  const real = await realPathWithin(full, [root], `${full} in the corpus`);
  const info = await Deno.stat(real);
  return kind === "file" ? info.isFile : info.isDirectory;
}

/**
 * The most a `.zst` corpus may expand, as decompressed bytes per compressed
 * byte, once past MAX_DOCUMENT_CHARS: text compresses 3 to 10 fold, a
 * decompression bomb (336 KB of zeros that would become 10 GB) 30,000 fold.
 */
export const MAX_ZSTD_RATIO = 1000;

/**
 * Decompresses a Zstandard stream chunk by chunk (fzstd's streaming API),
 * stopping with one sentence when the output outgrows MAX_ZSTD_RATIO times the
 * input read so far (checked per 128 KB block, before it is queued).
 */
export function zstdStream(path: string): TransformStream<Uint8Array, Uint8Array> {
  let decompressor: Decompress;
  let compressed = 0;
  let decompressed = 0;
  let bomb: DataError | null = null;
  return new TransformStream({
    start(controller) {
      decompressor = new Decompress((chunk) => {
        decompressed += chunk.length;
        if (decompressed > MAX_DOCUMENT_CHARS && decompressed > MAX_ZSTD_RATIO * compressed) {
          bomb = new DataError(
            `${path} expands more than ${MAX_ZSTD_RATIO}-fold (${
              compressed.toLocaleString("en-US")
            } compressed bytes became over ${
              decompressed.toLocaleString("en-US")
            }); it looks like a decompression bomb, not a text corpus, so reading stopped.`,
          );
          throw bomb;
        }
        controller.enqueue(chunk);
      });
    },
    transform(chunk) {
      compressed += chunk.length;
      try {
        decompressor.push(chunk);
      } catch (error) {
        if (bomb) throw bomb;
        throw new DataError(`${path} is not valid Zstandard data: ${messageOf(error)}.`);
      }
    },
    flush() {
      try {
        decompressor.push(new Uint8Array(0), true);
      } catch (error) {
        if (bomb) throw bomb;
        throw new DataError(
          `${path} is truncated or not valid Zstandard data: ${messageOf(error)}.`,
        );
      }
    },
  });
}
