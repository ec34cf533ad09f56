/**
 * What Ctrl-C (SIGINT) says: a command whose output resumes (capture,
 * generate: the trace writer commits whole shards) says to run it again; one
 * that writes its outputs only at the end says nothing was written, unless
 * it had started writing them (then which folder may be incomplete).
 * Exit status 130, the shell's convention for a SIGINT.
 */

let writing: string | null = null;

/** Called by a command as it starts writing its outputs into `dir`. */
export function writingOutputs(dir: string): void {
  writing = dir;
}

/** The line printed on SIGINT. */
export function interruptMessage(resumable: boolean): string {
  if (resumable) return "interrupted; run the same command to resume.";
  if (writing !== null) {
    return `interrupted while writing ${writing}; its files may be incomplete, so run the same command again.`;
  }
  return "interrupted; nothing was written.";
}

/**
 * Prints the interrupt line and exits 130 on SIGINT until the returned
 * function is called. Where signals cannot be listened for, nothing changes.
 */
export function exitOnInterrupt(resumable: boolean): () => void {
  writing = null;
  const handler = () => {
    console.error(`moetrace: ${interruptMessage(resumable)}`);
    Deno.exit(130);
  };
  try {
    Deno.addSignalListener("SIGINT", handler);
  } catch {
    return () => {};
  }
  return () => Deno.removeSignalListener("SIGINT", handler);
}
