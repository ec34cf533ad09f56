/**
 * Line-by-line reading of large text files in constant memory, with the
 * 1-based line number that error messages need, and the size limits of text
 * moetrace takes from strangers.
 */
import { DataError } from "./errors.ts";

/**
 * The longest line `readLines` accepts, in characters (64 Mi): a JSONL line
 * holds one document, and the Pile's longest are a few MiB. A longer line
 * (a file with no newlines, a decompression bomb of zeros) is refused with
 * one sentence after reading just past the limit.
 */
export const MAX_LINE_CHARS = 64 * 2 ** 20;
/** The longest document a corpus may hold, in characters (64 Mi), however it is stored. */
export const MAX_DOCUMENT_CHARS = 64 * 2 ** 20;

/**
 * Yields each line of `path` (without its newline) and its line number. Each
 * chunk is searched for newlines once and a long line is kept as a list of
 * pieces joined when it ends, so the work is linear in the file's length
 * (joining and re-searching one growing string made it quadratic in a
 * line's length: 76 s for a 100 MB line).
 */
export async function* readLines(
  path: string,
  source?: ReadableStream<Uint8Array>,
  maxLineChars = MAX_LINE_CHARS,
): AsyncGenerator<{ line: string; number: number }> {
  const stream = source ?? (await Deno.open(path)).readable;
  // fatal: invalid UTF-8 is an error to report, not text to replace silently.
  const decoder = new TextDecoderStream("utf-8", { fatal: true });
  /** The current line's text so far, in pieces, and their total length. */
  let pieces: string[] = [];
  let length = 0;
  let number = 0;
  const tooLong = () =>
    new DataError(
      `${path} line ${number + 1} is longer than ${
        maxLineChars.toLocaleString("en-US")
      } characters, the limit for one line (one document).`,
    );
  for await (const chunk of stream.pipeThrough(decoder)) {
    let start = 0;
    let newline: number;
    while ((newline = chunk.indexOf("\n", start)) >= 0) {
      if (length + newline - start > maxLineChars) throw tooLong();
      let line = chunk.slice(start, newline);
      if (pieces.length > 0) {
        pieces.push(line);
        line = pieces.join("");
        pieces = [];
        length = 0;
      }
      start = newline + 1;
      yield { line: line.endsWith("\r") ? line.slice(0, -1) : line, number: ++number };
    }
    if (start < chunk.length) {
      length += chunk.length - start;
      if (length > maxLineChars) throw tooLong();
      pieces.push(chunk.slice(start));
    }
  }
  if (length > 0) yield { line: pieces.join(""), number: ++number };
}
