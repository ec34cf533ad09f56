/**
 * A checkpoint's tokenizer (tokenizer.json through @huggingface/tokenizers)
 * and chat template (tokenizer_config.json through @huggingface/jinja).
 *
 * Chat text rendered by a template already starts with the BOS token, so it is
 * encoded without special tokens, as transformers' apply_chat_template does:
 * otherwise the prompt would carry two BOS tokens.
 */
import { Tokenizer } from "@huggingface/tokenizers";
import { DataError, messageOf } from "../common/errors.ts";
import { MAX_DOCUMENT_CHARS } from "../common/lines.ts";
import { modelFileWithin } from "../common/fs.ts";

export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

export class TextTokenizer {
  readonly #tokenizer: Tokenizer;
  readonly #config: Record<string, unknown>;
  readonly #pieces = new Map<number, string>();
  readonly #dir: string;
  /** Ids that end generation (eos_token). */
  readonly stopIds: number[];

  private constructor(dir: string, tokenizer: Tokenizer, config: Record<string, unknown>) {
    this.#dir = dir;
    this.#tokenizer = tokenizer;
    this.#config = config;
    const eos = tokenText(config.eos_token);
    const eosId = eos === undefined ? undefined : tokenizer.token_to_id(eos);
    this.stopIds = eosId === undefined ? [] : [eosId];
  }

  /** Reads DIR/tokenizer.json and DIR/tokenizer_config.json (optional). */
  static async load(dir: string): Promise<TextTokenizer> {
    const json = await readJson(await modelFileWithin(dir, "tokenizer.json"), true);
    const config = (await readJson(await modelFileWithin(dir, "tokenizer_config.json"), false)) ??
      {};
    checkModel(json.model, `${dir}/tokenizer.json`);
    let tokenizer: TextTokenizer;
    try {
      tokenizer = new TextTokenizer(dir, new Tokenizer(json, config), config);
    } catch (error) {
      throw new DataError(`${dir}/tokenizer.json cannot be loaded: ${messageOf(error)}.`);
    }
    // A file that parses may still fail on the first text: find out now.
    tokenizer.encode("Probe: The router sends 12 tokens.\n");
    return tokenizer;
  }

  /** Token ids of `text`; with `addSpecialTokens` (default true) the BOS the tokenizer adds. */
  encode(text: string, addSpecialTokens = true): Uint32Array {
    try {
      return Uint32Array.from(
        this.#tokenizer.encode(text, { add_special_tokens: addSpecialTokens }).ids,
      );
    } catch (error) {
      throw new DataError(
        `${this.#dir}/tokenizer.json cannot encode text: ${messageOf(error).replace(/\.$/, "")}.`,
      );
    }
  }

  decode(ids: ArrayLike<number>): string {
    return this.#tokenizer.decode(Array.from(ids), { skip_special_tokens: false });
  }

  /** The text of one token (cached; ids past the tokenizer's vocabulary print as <id>). */
  piece(id: number): string {
    let text = this.#pieces.get(id);
    if (text === undefined) {
      text = this.#tokenizer.id_to_token(id) === undefined ? `<${id}>` : this.decode([id]);
      this.#pieces.set(id, text);
    }
    return text;
  }

  get hasChatTemplate(): boolean {
    return typeof chatTemplate(this.#config.chat_template) === "string";
  }

  /**
   * Renders `messages` through the chat template and encodes them (no second
   * BOS). The template runs in a worker stopped after `timeoutMs` (default
   * 2000) of rendering: a template from a stranger may loop. The clock starts
   * when the worker has loaded, as its first start (type check, the template
   * library) can alone take seconds on a loaded machine.
   */
  async encodeChat(messages: ChatMessage[], timeoutMs = 2000): Promise<Uint32Array> {
    return this.encode(await this.renderChat(messages, timeoutMs), false);
  }

  /** The text the chat template renders for `messages` (what encodeChat encodes, with no BOS). */
  async renderChat(messages: ChatMessage[], timeoutMs = 2000): Promise<string> {
    const source = chatTemplate(this.#config.chat_template);
    const where = `${this.#dir}/tokenizer_config.json`;
    if (typeof source !== "string") {
      throw new DataError(
        Array.isArray(this.#config.chat_template)
          ? `${where} lists chat templates without one named "default"; drop --chat or add one.`
          : `${where} has no "chat_template"; drop --chat or add one.`,
      );
    }
    const context = {
      messages,
      add_generation_prompt: true,
      bos_token: tokenText(this.#config.bos_token) ?? "",
      eos_token: tokenText(this.#config.eos_token) ?? "",
    };
    const worker = new Worker(new URL("./chat_template_worker.ts", import.meta.url), {
      type: "module",
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const reply = await new Promise<{ text?: string; error?: string }>((resolve) => {
        worker.onmessage = (
          event: MessageEvent<{ ready?: true; text?: string; error?: string }>,
        ) => {
          if (!event.data.ready) return resolve(event.data);
          timer = setTimeout(
            () => resolve({ error: `it did not finish within ${timeoutMs} ms and may loop` }),
            timeoutMs,
          );
          worker.postMessage({ source, context });
        };
        worker.onerror = (event) => {
          event.preventDefault();
          resolve({ error: event.message });
        };
      });
      if (reply.text === undefined) {
        throw new DataError(
          `The chat template in ${where} failed: ${String(reply.error).replace(/\.$/, "")}.`,
        );
      }
      if (reply.text.length > MAX_DOCUMENT_CHARS) {
        throw new DataError(
          `The chat template in ${where} rendered ${
            reply.text.length.toLocaleString("en-US")
          } characters, over the limit of ${
            MAX_DOCUMENT_CHARS.toLocaleString("en-US")
          } for one document.`,
        );
      }
      return reply.text;
    } finally {
      clearTimeout(timer);
      worker.terminate();
    }
  }
}

/**
 * Time one encode call in BoundedEncoder may take (capture encodes at most
 * about 16 × --max-tokens characters of a document per call, see
 * encodePrefix): a tokenizer.json whose pre-tokenizer regex backtracks
 * catastrophically is then an error, not a hang.
 */
export const TOKENIZE_TIMEOUT_MS = 10_000;
/**
 * Characters a second below which a call is thought stuck: the time limit of
 * one call is TOKENIZE_TIMEOUT_MS plus 1 s per this many characters (a
 * tokenizer in JavaScript does 1 to 5 MB a second; a regex that backtracks
 * takes exponential time on a few dozen), so a whole long document, when
 * --max-tokens asks for it, is not stopped for being long.
 */
export const TOKENIZE_CHARS_PER_S = 50_000;
/** Time loading tokenizer.json (and its probe) in the worker may take. */
const TOKENIZER_LOAD_TIMEOUT_MS = 60_000;

/**
 * A checkpoint's tokenizer run in a worker (tokenize_worker.ts), stopped when
 * one call takes longer than `timeoutMs`: a stranger's tokenizer.json is data,
 * and a regex in it must not hang a capture. Each clock starts when the
 * worker has started (its first start alone can take seconds).
 */
export class BoundedEncoder {
  readonly #worker: Worker;
  readonly #dir: string;
  readonly #timeoutMs: number;
  #next = 0;
  #closed = false;

  private constructor(worker: Worker, dir: string, timeoutMs: number) {
    this.#worker = worker;
    this.#dir = dir;
    this.#timeoutMs = timeoutMs;
  }

  /** Starts the worker and loads DIR's tokenizer in it. */
  static async start(dir: string, timeoutMs = TOKENIZE_TIMEOUT_MS): Promise<BoundedEncoder> {
    const worker = new Worker(new URL("./tokenize_worker.ts", import.meta.url), { type: "module" });
    const encoder = new BoundedEncoder(worker, dir, timeoutMs);
    try {
      await encoder.#call(
        (reply) => reply.started === true,
        null,
        Number.POSITIVE_INFINITY,
        "start",
      );
      await encoder.#call(
        (reply) => reply.ready === true || reply.error !== undefined,
        { dir },
        Math.max(TOKENIZER_LOAD_TIMEOUT_MS, timeoutMs),
        "load",
      );
    } catch (error) {
      encoder.close();
      throw error;
    }
    return encoder;
  }

  /** Token ids of `text` (with the BOS the tokenizer adds unless `addSpecialTokens` is false). */
  encode(text: string, addSpecialTokens = true): Promise<Uint32Array> {
    const id = this.#next++;
    // A long text may take longer, in proportion: 1 s more per TOKENIZE_CHARS_PER_S characters.
    const ms = this.#timeoutMs + Math.floor((1000 * text.length) / TOKENIZE_CHARS_PER_S);
    return this.#call(
      (reply) => reply.id === id,
      { id, text, special: addSpecialTokens },
      ms,
      `encode ${text.length.toLocaleString("en-US")} characters`,
    ).then((reply) => reply.ids as Uint32Array);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#worker.terminate();
  }

  #call(
    done: (reply: Record<string, unknown>) => boolean,
    message: unknown,
    timeoutMs: number,
    what: string,
  ): Promise<Record<string, unknown>> {
    if (this.#closed) return Promise.reject(new Error("BoundedEncoder used after close"));
    const where = `${this.#dir}/tokenizer.json`;
    return new Promise((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const finish = (settle: () => void) => {
        clearTimeout(timer);
        this.#worker.onmessage = null;
        this.#worker.onerror = null;
        settle();
      };
      this.#worker.onmessage = (event: MessageEvent<Record<string, unknown>>) => {
        const reply = event.data;
        if (!done(reply)) return;
        if (reply.error !== undefined) {
          const text = String(reply.error);
          return finish(() => reject(reply.data ? new DataError(text) : new Error(text)));
        }
        finish(() => resolve(reply));
      };
      this.#worker.onerror = (event) => {
        event.preventDefault();
        finish(() => reject(new Error(`the tokenizer worker failed: ${event.message}`)));
      };
      if (Number.isFinite(timeoutMs)) {
        timer = setTimeout(() => {
          this.close();
          finish(() =>
            reject(
              new DataError(
                `${where} did not ${what} within ${
                  (timeoutMs / 1000).toFixed(timeoutMs % 1000 ? 1 : 0)
                } s; its pre-tokenizer or normalizer may backtrack without end (a regex in it), so it was stopped.`,
              ),
            )
          );
        }, timeoutMs);
      }
      if (message !== null) this.#worker.postMessage(message);
    });
  }
}

/**
 * The first `maxTokens` token ids of `text` (BOS included), encoding only a
 * prefix of it: a 64 MiB document cut to 512 tokens costs a few kilobytes of
 * tokenizing. Token boundaries are local (a pre-tokenizer splits at spaces
 * and punctuation, BPE merges within a piece), so the ids of a prefix agree
 * with those of the whole text except near its cut; a prefix is accepted when
 * it and a prefix twice as long agree on the first `maxTokens` ids, else the
 * prefix grows fourfold, up to the whole text.
 */
export async function encodePrefix(
  encode: (text: string) => Uint32Array | Promise<Uint32Array>,
  text: string,
  maxTokens: number,
): Promise<Uint32Array> {
  for (let chars = Math.max(1024, maxTokens * 8);; chars *= 4) {
    if (2 * chars >= text.length) return (await encode(text)).subarray(0, maxTokens);
    const short = await encode(text.slice(0, chars));
    if (short.length <= maxTokens) continue;
    const long = await encode(text.slice(0, 2 * chars));
    let same = long.length > maxTokens;
    for (let i = 0; same && i < maxTokens; i++) same = short[i] === long[i];
    if (same) return short.subarray(0, maxTokens);
  }
}

/** The vocabulary and merges of a BPE model have the types the library assumes. */
function checkModel(model: unknown, where: string): void {
  if (typeof model !== "object" || model === null || Array.isArray(model)) {
    throw new DataError(`${where} field "model" must be an object.`);
  }
  const { vocab, merges } = model as { vocab?: unknown; merges?: unknown };
  if (vocab !== undefined) {
    const entries = Array.isArray(vocab) ? vocab.map((v, i) => [i, v]) : Object.entries(vocab ?? 0);
    if (typeof vocab !== "object" || vocab === null || entries.length === 0) {
      throw new DataError(`${where} field "model.vocab" must be a non-empty object or list.`);
    }
    if (!Array.isArray(vocab)) {
      for (const [piece, id] of entries) {
        if (!Number.isInteger(id) || (id as number) < 0) {
          throw new DataError(
            `${where} field "model.vocab" maps ${JSON.stringify(piece)} to ${
              JSON.stringify(id)
            }, expected a token id.`,
          );
        }
      }
    }
  }
  if (merges !== undefined) {
    if (!Array.isArray(merges)) {
      throw new DataError(`${where} field "model.merges" must be a list.`);
    }
    const pieces = vocab !== null && typeof vocab === "object" && !Array.isArray(vocab)
      ? vocab as Record<string, unknown>
      : null;
    merges.forEach((m, i) => {
      const pair = typeof m === "string" ? m.split(" ") : m;
      const ok = Array.isArray(pair) && pair.length === 2 &&
        pair.every((p) => typeof p === "string" && p !== "");
      if (!ok) {
        throw new DataError(
          `${where} field "model.merges[${i}]" must be "a b" or ["a", "b"], got ${
            JSON.stringify(m)
          }.`,
        );
      }
      // A merge whose parts or result the vocabulary lacks would silently become id 0.
      if (pieces) {
        const [a, b] = pair as [string, string];
        for (const piece of [a, b, a + b]) {
          if (!Object.hasOwn(pieces, piece)) {
            throw new DataError(
              `${where} field "model.merges[${i}]" (${JSON.stringify(m)}) needs ${
                JSON.stringify(piece)
              }, which is not in "model.vocab".`,
            );
          }
        }
      }
    });
  }
}

/**
 * The chat template of tokenizer_config.json: a string, or (as transformers
 * writes several) a list of {name, template} whose "default" is the one used.
 */
function chatTemplate(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (!Array.isArray(value)) return undefined;
  const entry = value.find((t) =>
    typeof t === "object" && t !== null && (t as { name?: unknown }).name === "default"
  ) as { template?: unknown } | undefined;
  return typeof entry?.template === "string" ? entry.template : undefined;
}

/** A special token given as a string or as {"content": "..."}. */
function tokenText(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (typeof value === "object" && value !== null && "content" in value) {
    const content = (value as { content: unknown }).content;
    return typeof content === "string" ? content : undefined;
  }
  return undefined;
}

async function readJson(path: string, required: true): Promise<Record<string, unknown>>;
async function readJson(path: string, required: false): Promise<Record<string, unknown> | null>;
async function readJson(path: string, required: boolean): Promise<Record<string, unknown> | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound && !required) return null;
    throw new DataError(`Cannot read ${path}: ${messageOf(error)}.`);
  }
  try {
    const json = JSON.parse(text);
    if (typeof json !== "object" || json === null || Array.isArray(json)) {
      throw new Error("expected a JSON object");
    }
    return json;
  } catch (error) {
    throw new DataError(`${path} is not valid JSON: ${messageOf(error)}.`);
  }
}
