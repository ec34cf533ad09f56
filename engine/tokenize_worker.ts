/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * Encodes text with a checkpoint's tokenizer in a worker, so that a
 * tokenizer.json from a stranger whose pre-tokenizer regex backtracks without
 * end can be stopped from outside (see BoundedEncoder in tokenizer.ts).
 * Posts {started: true} once loaded; then {dir} loads the tokenizer (reply
 * {ready: true} or {error, data}); then {id, text, special} replies {id, ids}
 * (the buffer transferred) or {id, error, data}.
 */
import { isUserError, messageOf } from "../common/errors.ts";
import { TextTokenizer } from "./tokenizer.ts";

let tokenizer: TextTokenizer | null = null;

self.onmessage = async (
  event: MessageEvent<{ dir?: string; id?: number; text?: string; special?: boolean }>,
) => {
  const { dir, id, text, special } = event.data;
  try {
    if (dir !== undefined) {
      tokenizer = await TextTokenizer.load(dir);
      self.postMessage({ ready: true });
      return;
    }
    const ids = tokenizer!.encode(text!, special !== false);
    self.postMessage({ id, ids }, [ids.buffer as ArrayBuffer]);
  } catch (error) {
    self.postMessage({ id, error: messageOf(error), data: isUserError(error) });
  }
};

self.postMessage({ started: true });
