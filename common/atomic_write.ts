/**
 * Writes that never leave a half-written file under its final name: the data
 * goes to `<path>.tmp-<pid>` and is renamed over `path` once complete.
 */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const tmp = `${path}.tmp-${Deno.pid}`;
  if (typeof data === "string") await Deno.writeTextFile(tmp, data);
  else await Deno.writeFile(tmp, data);
  await Deno.rename(tmp, path);
}

/** Removes the temporary files an interrupted `writeFileAtomic` left in `dir`. */
export async function removeStaleTemporaries(dir: string): Promise<void> {
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isFile && /\.tmp-\d+$/.test(entry.name)) await Deno.remove(`${dir}/${entry.name}`);
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}
