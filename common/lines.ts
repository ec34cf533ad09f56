/**
 * Line-by-line reading of large text files in constant memory, with the
 * 1-based line number that error messages need.
 */

/** Yields each line of `path` (without its newline) and its line number. */
export async function* readLines(
  path: string,
  source?: ReadableStream<Uint8Array>,
): AsyncGenerator<{ line: string; number: number }> {
  const stream = source ?? (await Deno.open(path)).readable;
  // fatal: invalid UTF-8 is an error to report, not text to replace silently.
  const decoder = new TextDecoderStream("utf-8", { fatal: true });
  let buffered = "";
  let number = 0;
  for await (const chunk of stream.pipeThrough(decoder)) {
    buffered += chunk;
    let start = 0;
    let newline: number;
    while ((newline = buffered.indexOf("\n", start)) >= 0) {
      const line = buffered.slice(start, newline);
      start = newline + 1;
      yield { line: line.endsWith("\r") ? line.slice(0, -1) : line, number: ++number };
    }
    buffered = buffered.slice(start);
  }
  if (buffered.length > 0) yield { line: buffered, number: ++number };
}
