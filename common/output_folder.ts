/**
 * Refusing to write into a folder that holds something else: `capture`,
 * `analyze` and `simulate` write many files into `--out`, and mixing them with
 * a user's other files (or another command's output) makes both unreadable.
 * A missing or empty folder, or one holding this command's own kind of output
 * (a trace to resume, an analysis to replace), is accepted; anything else
 * needs `--force`.
 */
import { UsageError } from "./errors.ts";

export interface OutputKind {
  /** The command, for the message. */
  command: string;
  /** What the command writes, e.g. "a trace", for the message. */
  what: string;
  /** A file only this kind of output holds, e.g. "manifest.json". */
  marker: string;
  /**
   * Whether an entry could have been left by an interrupted run of the same
   * command before it wrote `marker` (its own files and temporary files).
   */
  own: (name: string, isDirectory: boolean) => boolean;
}

/** A trace: manifest.json, shards/ and the writer's temporary files. */
export const TRACE_OUTPUT: Omit<OutputKind, "command"> = {
  what: "a trace",
  marker: "manifest.json",
  own: (name, dir) => (dir && name === "shards") || /\.tmp-\d+$/.test(name),
};

/** What analyze and simulate write: tables, figures, README and JSON, counts/. */
export function tablesOutput(what: string, marker: string): Omit<OutputKind, "command"> {
  return {
    what,
    marker,
    own: (name, dir) =>
      (dir && name === "counts") || /\.(csv|svg|html|md|json)(\.tmp-\d+)?$/.test(name),
  };
}

/**
 * Throws a UsageError when `dir` is a file, or a folder holding files that
 * are not `kind`'s output and `force` is off. Hidden entries (".DS_Store")
 * are ignored.
 */
export async function checkOutputFolder(
  dir: string,
  kind: OutputKind,
  force: boolean,
): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(dir);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    throw error;
  }
  if (!info.isDirectory) {
    throw new UsageError(`--out of ${kind.command} must be a folder, got the file "${dir}".`);
  }
  if (force) return;
  const others: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.name === kind.marker) return;
    if (entry.name.startsWith(".")) continue;
    if (!kind.own(entry.name, entry.isDirectory)) others.push(entry.name);
  }
  if (others.length === 0) return;
  others.sort();
  const shown = others.slice(0, 3).join(", ") + (others.length > 3 ? ", …" : "");
  throw new UsageError(
    `--out ${dir} of ${kind.command} holds ${others.length} other ${
      others.length === 1 ? "entry" : "entries"
    } (${shown}) and not ${kind.what}; choose a new or empty folder, or pass --force to write into it anyway.`,
  );
}
