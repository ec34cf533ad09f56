/**
 * What the report reads, checked as it is read: the two output folders
 * (`figures.json`, `analysis.json` / `simulation.json`, CSVs, the token
 * colouring), each file a regular file inside its folder (a symbolic link
 * that leaves the folder could put any readable file into the report), each
 * malformed file one sentence naming it. File contents are never echoed in
 * a message.
 */
import { parse } from "csv-parse/sync";
import { DataError, messageOf } from "../common/errors.ts";

export interface FigureEntry {
  file: string;
  title: string;
  caption: string;
  section: string;
}

export interface Folder {
  dir: string;
  figures: FigureEntry[];
  facts: Record<string, unknown>;
  /** The folder's regular `*.csv` files, sorted. */
  csvs: string[];
}

export type Row = Record<string, string>;

/** A parsed CSV: its path (for messages), header and rows of strings. */
export interface Table {
  path: string;
  columns: string[];
  rows: Row[];
}

/** A value of an object field, or an empty object when it is not an object. */
export function objectField(value: unknown, key: string): Record<string, unknown> {
  const field = isObject(value) ? value[key] : undefined;
  return isObject(field) ? field : {};
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * The text of `dir/name`, or null when it does not exist. A symbolic link is
 * followed only when its target lies inside `dir`; anything else that is not
 * a regular file is refused.
 */
export async function readInput(dir: string, name: string): Promise<string | null> {
  const path = `${dir}/${name}`;
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw new DataError(`Cannot read ${path}: ${messageOf(error)}.`);
  }
  if (info.isSymlink) {
    let inside = false;
    try {
      const [real, realDir] = [await Deno.realPath(path), await Deno.realPath(dir)];
      inside = real.startsWith(`${realDir}/`) && (await Deno.stat(real)).isFile;
    } catch {
      inside = false;
    }
    if (!inside) {
      throw new DataError(
        `${path} is a symbolic link to a file outside ${dir}; the report reads only files inside the folders it is given.`,
      );
    }
  } else if (!info.isFile) {
    throw new DataError(`${path} must be a file, got a folder or special file.`);
  }
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    throw new DataError(`Cannot read ${path}: ${messageOf(error)}.`);
  }
}

async function readJson(dir: string, name: string, command: string): Promise<unknown> {
  const path = `${dir}/${name}`;
  const text = await readInput(dir, name);
  if (text === null) {
    throw new DataError(`${path} does not exist; give the folder \`moetrace ${command}\` wrote.`);
  }
  return parseJson(path, text);
}

/**
 * `text` parsed as JSON, or a sentence naming `path` and where the syntax
 * breaks (never quoting the file: the parser's own message does).
 */
export function parseJson(path: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    const at = /line (\d+) column (\d+)/.exec(messageOf(error));
    throw new DataError(
      `${path} is not valid JSON${at ? ` (line ${at[1]}, column ${at[2]})` : ""}.`,
    );
  }
}

/** csv-parse's error as a clause without the cell it quotes: its kind and the line. */
function csvProblem(error: unknown): string {
  const kind = messageOf(error).split(":")[0]!.trim().toLowerCase();
  const lines = (error as { lines?: unknown }).lines;
  return `${kind}${typeof lines === "number" ? ` at line ${lines}` : ""}`;
}

/** A figure's file: a plain SVG file name in its folder, never a path. */
const FIGURE_FILE = /^[^/\\]+\.svg$/;

/** Reads an analyze or simulate output folder's listing, facts and figure list. */
export async function readFolder(dir: string, factsFile: string, command: string): Promise<Folder> {
  try {
    if (!(await Deno.stat(dir)).isDirectory) {
      throw new DataError(`${dir} must be the folder \`moetrace ${command}\` wrote, got a file.`);
    }
  } catch (error) {
    if (error instanceof DataError) throw error;
    if (error instanceof Deno.errors.NotFound) {
      throw new DataError(`${dir} does not exist; give the folder \`moetrace ${command}\` wrote.`);
    }
    throw new DataError(`Cannot read ${dir}: ${messageOf(error)}.`);
  }
  const list = await readJson(dir, "figures.json", command);
  const where = `${dir}/figures.json`;
  if (!Array.isArray(list)) {
    throw new DataError(`${where} must be a list of {file, title, caption, section}.`);
  }
  const figures = list.map((entry, i): FigureEntry => {
    if (!isObject(entry)) {
      throw new DataError(
        `${where} entry ${i + 1} must be an object {file, title, caption, section}.`,
      );
    }
    const { file, title, caption, section } = entry;
    if (typeof file !== "string" || !FIGURE_FILE.test(file) || file.startsWith(".")) {
      throw new DataError(
        `${where} entry ${i + 1}: file must be the name of an .svg file in ${dir} (no folders).`,
      );
    }
    if (typeof title !== "string") {
      throw new DataError(`${where} entry ${i + 1}: title must be a string.`);
    }
    for (const [key, value] of [["caption", caption], ["section", section]] as const) {
      if (value !== undefined && typeof value !== "string") {
        throw new DataError(`${where} entry ${i + 1}: ${key} must be a string.`);
      }
    }
    return { file, title, caption: caption ?? "", section: section ?? "other" } as FigureEntry;
  });
  const facts = await readJson(dir, factsFile, command);
  if (!isObject(facts)) {
    throw new DataError(
      `${dir}/${factsFile} must hold a JSON object, as \`moetrace ${command}\` writes.`,
    );
  }
  const csvs: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isFile && entry.name.endsWith(".csv")) csvs.push(entry.name);
  }
  csvs.sort();
  return { dir, figures, facts, csvs };
}

/**
 * `dir/name` parsed as CSV with a header, or null when the file does not
 * exist. A file that does not parse, or lacks one of `required`'s columns, is
 * one sentence naming it.
 */
export async function readTable(
  dir: string,
  name: string,
  required: readonly string[] = [],
): Promise<Table | null> {
  const path = `${dir}/${name}`;
  const text = await readInput(dir, name);
  if (text === null) return null;
  let records: string[][];
  try {
    records = parse(text, { skip_empty_lines: true }) as string[][];
  } catch (error) {
    throw new DataError(`${path} is not a valid CSV file: ${csvProblem(error)}.`);
  }
  const [header, ...body] = records;
  if (!header) return { path, columns: [], rows: [] };
  const missing = required.filter((c) => !header.includes(c));
  if (missing.length > 0) {
    throw new DataError(
      `${path} lacks the column${missing.length > 1 ? "s" : ""} ${
        missing.join(", ")
      }, which moetrace writes there.`,
    );
  }
  const rows = body.map((record, i) => {
    if (record.length !== header.length) {
      throw new DataError(
        `${path} line ${i + 2} has ${record.length} fields where the header has ${header.length}.`,
      );
    }
    return Object.fromEntries(header.map((c, j) => [c, record[j]!])) as Row;
  });
  return { path, columns: header, rows };
}

/**
 * The number in `row[column]` of `table`: NaN for an empty cell (a value the
 * statistic does not define), a sentence naming the file, line and column for
 * anything else that is not a finite number.
 */
export function numberIn(table: Table, row: Row, column: string): number {
  const text = row[column] ?? "";
  if (text === "") return NaN;
  const value = Number(text);
  if (!Number.isFinite(value)) {
    const line = table.rows.indexOf(row) + 2;
    throw new DataError(`${table.path} line ${line}: ${column} must be a number.`);
  }
  return value;
}
