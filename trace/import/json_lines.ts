/**
 * JSON Lines for the importers: one parsed value per non-blank line with the
 * "FILE line N" that error messages need. Lines are split on bytes and each
 * decoded once, so a line of hundreds of megabytes (a saved response with
 * its routing) costs one pass, not one per chunk.
 */
import { DataError, messageOf } from "../../common/errors.ts";

export interface JsonLine {
  json: unknown;
  /** "FILE line N", for error messages. */
  where: string;
  number: number;
}

/** Yields the parsed lines of `file`; invalid JSON or UTF-8 is one sentence naming the line. */
export async function* jsonLines(file: string): AsyncGenerator<JsonLine> {
  for await (const { bytes, number } of byteLines(file)) {
    const where = `${file} line ${number}`;
    let text: string;
    try {
      text = decoder.decode(bytes);
    } catch {
      throw new DataError(`${where} is not valid UTF-8.`);
    }
    if (text.trim() === "") continue;
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (error) {
      throw new DataError(`${where} is not valid JSON: ${messageOf(error)}.`);
    }
    yield { json, where, number };
  }
}

const decoder = new TextDecoder("utf-8", { fatal: true });

/** The first line of `file` parsed as JSON, or null when the file has no JSON first line. */
export async function firstJsonLine(file: string): Promise<unknown> {
  try {
    for await (const line of jsonLines(file)) return line.json;
  } catch (error) {
    if (error instanceof DataError) return null;
    throw error;
  }
  return null;
}

async function* byteLines(file: string): AsyncGenerator<{ bytes: Uint8Array; number: number }> {
  let handle: Deno.FsFile;
  try {
    handle = await Deno.open(file);
  } catch (error) {
    throw new DataError(`Cannot read ${file}: ${messageOf(error)}.`);
  }
  let parts: Uint8Array[] = [];
  let number = 0;
  try {
    for await (const chunk of handle.readable) {
      let start = 0;
      let newline: number;
      while ((newline = chunk.indexOf(0x0a, start)) >= 0) {
        parts.push(chunk.subarray(start, newline));
        yield { bytes: join(parts), number: ++number };
        parts = [];
        start = newline + 1;
      }
      if (start < chunk.length) parts.push(chunk.slice(start));
    }
  } finally {
    try {
      handle.close();
    } catch {
      // The readable stream closes the file when it ends.
    }
  }
  if (parts.length > 0) yield { bytes: join(parts), number: ++number };
}

function join(parts: Uint8Array[]): Uint8Array {
  let bytes: Uint8Array;
  if (parts.length === 1) bytes = parts[0]!;
  else {
    bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const part of parts) {
      bytes.set(part, at);
      at += part.length;
    }
  }
  return bytes.length > 0 && bytes[bytes.length - 1] === 0x0d ? bytes.subarray(0, -1) : bytes;
}
