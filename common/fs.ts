/** Small file-system helpers shared by commands. */

/** True when `path` exists (file or folder); false when it does not; other errors are thrown. */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
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
