/** Small file-system helpers shared by commands. */
import { DataError, messageOf } from "./errors.ts";

/** True when `path` exists (file or folder); false when it does not; other errors are thrown. */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (error) {
    // "out/manifest.json" where out is a file does not exist either.
    if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory) {
      return false;
    }
    throw error;
  }
}

/** True when `path` is a file; false when it is missing, a folder or unreadable. */
export async function pathIsFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/** True when `path` is `root` or lies under it (both absolute and normalised). */
export function isWithin(path: string, root: string): boolean {
  return path === root || path.startsWith(root.endsWith("/") ? root : `${root}/`);
}

/**
 * The real path of `path` (symlinks resolved), refused with one sentence when
 * it lies outside the real path of every folder in `roots`: the launcher
 * grants reads and writes on the paths a user named, but reads and writes
 * follow symlinks, so a link inside an input or output that points elsewhere
 * would reach files the user never named. `what` names the file in the error;
 * the target is not shown (nor ever read).
 */
export async function realPathWithin(
  path: string,
  roots: readonly string[],
  what: string,
): Promise<string> {
  let real: string;
  try {
    real = await Deno.realPath(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) throw new DataError(`${what} does not exist.`);
    throw new DataError(`Cannot read ${what}: ${messageOf(error)}.`);
  }
  for (const root of roots) {
    let realRoot: string;
    try {
      realRoot = await Deno.realPath(root);
    } catch {
      continue;
    }
    if (isWithin(real, realRoot)) return real;
  }
  throw new DataError(
    `${what} is a symbolic link (or lies under one) that leaves ${
      roots.join(" and ")
    }; moetrace reads and writes only inside the folders it was given.`,
  );
}

/**
 * The `blobs` folder of the Hugging Face cache entry whose snapshot `dir` is
 * (`.../models--ORG--NAME/snapshots/REV` gives `.../models--ORG--NAME/blobs`),
 * or null when `dir` is not such a snapshot: the cache stores every file of a
 * snapshot once under `blobs` and links it in as `../../blobs/HASH`.
 */
export function huggingFaceBlobs(dir: string): string | null {
  const parts = dir.replace(/\/+$/, "").split("/");
  if (parts.length < 3) return null;
  const [entry, snapshots, revision] = parts.slice(-3);
  if (snapshots !== "snapshots" || !entry!.startsWith("models--") || revision === "") return null;
  return [...parts.slice(0, -2), "blobs"].join("/");
}

/**
 * The path of `name` in the model folder `dir`, refused with one sentence
 * (see realPathWithin) when it is a symbolic link whose real path leaves the
 * model folder, or, for a Hugging Face cache snapshot, leaves both the
 * snapshot and its entry's `blobs` folder: a checkpoint from a stranger must
 * not read a file the user never named. A file that does not exist is
 * returned as is, for its reader to name as missing (or to skip when it is
 * optional).
 */
export async function modelFileWithin(dir: string, name: string): Promise<string> {
  const path = `${dir}/${name}`;
  try {
    await Deno.lstat(path);
  } catch {
    return path;
  }
  const roots = [dir];
  // The snapshot as named and as it really is (a link to a snapshot, or a cache under a link).
  let realDir = dir;
  try {
    realDir = await Deno.realPath(dir);
  } catch {
    // Named by its readers.
  }
  for (const candidate of new Set([dir, realDir])) {
    const blobs = huggingFaceBlobs(candidate);
    if (blobs !== null) roots.push(blobs);
  }
  await realPathWithin(path, roots, path);
  return path;
}

/** A folder lock held by this process (see lockFolder). */
export interface FolderLock {
  release(): void;
}

/** The lock file's name in a locked folder. */
export const LOCK_FILE = ".moetrace.lock";

/**
 * Takes the lock of `dir` for `command` (an exclusive advisory lock on
 * `dir/.moetrace.lock`), or refuses with one sentence when another process
 * holds it: two captures into one trace would interleave their shards. The
 * operating system releases the lock when its holder exits, however it
 * exits, so a lock left by a killed run is simply taken over. The file stays
 * (deleting it would let a third run lock a new file while a second still
 * holds the old one) and holds the holder's pid, for the message.
 */
export async function lockFolder(dir: string, command: string): Promise<FolderLock> {
  const path = `${dir}/${LOCK_FILE}`;
  let file: Deno.FsFile;
  try {
    const info = await Deno.lstat(path).catch(() => null);
    if (info && !info.isFile) {
      throw new DataError(`${path} is not a plain file; remove it before running ${command}.`);
    }
    file = await Deno.open(path, { read: true, write: true, create: true });
  } catch (error) {
    if (error instanceof DataError) throw error;
    throw new DataError(`Cannot create the lock file ${path}: ${messageOf(error)}.`);
  }
  if (!(await file.tryLock(true))) {
    const holder = await readHolder(file);
    file.close();
    throw new DataError(
      `Another moetrace ${command}${
        holder ? ` (pid ${holder})` : ""
      } is writing to ${dir}; wait for it to finish or choose another --out.`,
    );
  }
  const pid = new TextEncoder().encode(`${Deno.pid}\n`);
  await file.truncate(0);
  await file.write(pid);
  return {
    release() {
      try {
        file.unlockSync();
        file.close();
      } catch {
        // Already released.
      }
    },
  };
}

async function readHolder(file: Deno.FsFile): Promise<number | null> {
  try {
    const buffer = new Uint8Array(32);
    const n = await file.read(buffer);
    const text = new TextDecoder().decode(buffer.subarray(0, n ?? 0)).trim();
    return /^\d{1,10}$/.test(text) ? Number(text) : null;
  } catch {
    return null;
  }
}

/**
 * Refuses an output folder flag that names an existing file, with one
 * sentence, before anything is written: `flag` is e.g. "--out".
 */
export async function requireFolderOrAbsent(path: string, flag: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    throw new DataError(`Cannot use ${flag} ${path}: ${messageOf(error)}.`);
  }
  if (!info.isDirectory) {
    throw new DataError(`${flag} ${path} is a file; it must name a folder (new or existing).`);
  }
}

/**
 * Removes everything in the folder `dir` but `keep` (a stale staging folder
 * whose lock this run holds); a file or link named `dir` is removed itself.
 */
export async function clearFolderBut(dir: string, keep: string): Promise<void> {
  const info = await Deno.lstat(dir).catch(() => null);
  if (info === null) return;
  if (!info.isDirectory) return await Deno.remove(dir);
  let entries: string[];
  try {
    entries = (await Array.fromAsync(Deno.readDir(dir))).map((entry) => entry.name);
  } catch {
    return; // Nothing to clear.
  }
  for (const name of entries) {
    if (name !== keep) await Deno.remove(`${dir}/${name}`, { recursive: true });
  }
}

/** Removes the folder `dir` when it holds nothing but `name` (a lock left by a run that wrote nothing). */
export async function removeIfOnly(dir: string, name: string): Promise<void> {
  try {
    const entries: string[] = [];
    for await (const entry of Deno.readDir(dir)) entries.push(entry.name);
    if (entries.length === 1 && entries[0] === name) await Deno.remove(dir, { recursive: true });
  } catch {
    // Nothing to tidy.
  }
}

/** removeIfOnly, synchronously: for an "unload" listener, which runs as Ctrl-C exits the process. */
export function removeIfOnlySync(dir: string, name: string): void {
  try {
    const entries = [...Deno.readDirSync(dir)].map((entry) => entry.name);
    if (entries.length === 1 && entries[0] === name) Deno.removeSync(dir, { recursive: true });
  } catch {
    // Nothing to tidy.
  }
}

/**
 * A file's bytes in a buffer this isolate allocates: V8 counts it towards
 * the heap limits that start a garbage collection, so shards read one after
 * another are freed as they go. (Deno.readFile's buffers, made outside the
 * heap, were not: handed from read workers, reading 2M tokens held twice
 * the memory of 1M.) Also 1.3–1.7× faster than Deno.readFile here (353 MiB
 * of SGLang recordings; 16 shards of 22 MB).
 */
export async function readWhole(path: string): Promise<Uint8Array> {
  using file = await Deno.open(path);
  const size = (await file.stat()).size;
  const bytes = new Uint8Array(size);
  let at = 0;
  while (at < size) {
    const n = await file.read(bytes.subarray(at));
    if (n === null) break;
    at += n;
  }
  // A file that shrank while read: its real length (the size check then reports it).
  return at === size ? bytes : bytes.subarray(0, at);
}
