/**
 * Writes that never leave a half-written file under its final name: the data
 * goes to `<path>.tmp-<pid>` and is renamed over `path` once complete.
 */
import { DataError, messageOf } from "./errors.ts";

/**
 * Writes `data` to `path` through a temporary name. The temporary file is
 * created new (an existing one, or a symlink planted under its name, is
 * removed first rather than written through), and a full disk or any other
 * write failure removes it and is reported as one sentence: no partial file
 * is left under either name.
 */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const tmp = `${path}.tmp-${Deno.pid}`;
  await Deno.remove(tmp).catch(() => {});
  try {
    if (typeof data === "string") await Deno.writeTextFile(tmp, data, { createNew: true });
    else await Deno.writeFile(tmp, data, { createNew: true });
    await Deno.rename(tmp, path);
  } catch (error) {
    await Deno.remove(tmp).catch(() => {});
    throw writeError(path, error);
  }
}

/**
 * Writes byte ranges end to end to `path` through a temporary name, as
 * `writeFileAtomic` does one buffer: a shard encoded as parts (some of them
 * views of its columns) is written without being joined into a fresh buffer.
 * Synchronous: its callers, the threads making an import's shards, have
 * nothing else to do meanwhile, and an asynchronous file operation costs a
 * hop to another thread (the first one in a worker took 20–40 ms).
 */
export function writePartsAtomic(path: string, parts: readonly Uint8Array[]): void {
  const tmp = `${path}.tmp-${Deno.pid}`;
  try {
    Deno.removeSync(tmp);
  } catch {
    // None left over.
  }
  try {
    using file = Deno.openSync(tmp, { write: true, createNew: true });
    // Small parts (page headers, levels) gathered into one write; large ones written as they are.
    const staged = new Uint8Array(1 << 16);
    let held = 0;
    const put = (bytes: Uint8Array) => {
      for (let done = 0; done < bytes.length;) done += file.writeSync(bytes.subarray(done));
    };
    for (const part of parts) {
      const direct = part.length >= staged.length >> 2;
      // What is staged goes first, before a part written directly or one that does not fit.
      if (direct || part.length > staged.length - held) {
        put(staged.subarray(0, held));
        held = 0;
      }
      if (direct) put(part);
      else {
        staged.set(part, held);
        held += part.length;
      }
    }
    put(staged.subarray(0, held));
    Deno.renameSync(tmp, path);
  } catch (error) {
    try {
      Deno.removeSync(tmp);
    } catch {
      // Never created.
    }
    throw writeError(path, error);
  }
}

/**
 * A write failure as a user error: a full disk or quota, a read-only file
 * system, a missing folder or a missing permission is something the user can
 * fix, named with the path; anything else is kept as it is (a bug).
 */
export function writeError(path: string, error: unknown): unknown {
  if (error instanceof DataError) return error;
  const message = messageOf(error);
  if (/No space left|ENOSPC|quota|File too large|os error (28|27|122)\b/i.test(message)) {
    return new DataError(
      `Cannot write ${path}: the disk is full or a file-size limit was reached (${message}).`,
    );
  }
  if (
    error instanceof Deno.errors.NotFound || error instanceof Deno.errors.PermissionDenied ||
    error instanceof Deno.errors.NotADirectory || error instanceof Deno.errors.IsADirectory ||
    error instanceof Deno.errors.AlreadyExists ||
    /Read-only file system|os error 30\b/i.test(message)
  ) {
    return new DataError(`Cannot write ${path}: ${message}.`);
  }
  return error;
}

/** Removes the temporary files (or links under their names) an interrupted `writeFileAtomic` left in `dir`. */
export async function removeStaleTemporaries(dir: string): Promise<void> {
  try {
    for await (const entry of Deno.readDir(dir)) {
      if ((entry.isFile || entry.isSymlink) && /\.tmp-\d+$/.test(entry.name)) {
        // Removing a symlink removes the link, never its target.
        await Deno.remove(`${dir}/${entry.name}`);
      }
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}
