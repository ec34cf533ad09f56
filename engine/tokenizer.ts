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
    const json = await readJson(`${dir}/tokenizer.json`, true);
    const config = (await readJson(`${dir}/tokenizer_config.json`, false)) ?? {};
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
    return typeof this.#config.chat_template === "string";
  }

  /**
   * Renders `messages` through the chat template and encodes them (no second
   * BOS). The template runs in a worker stopped after `timeoutMs` (default
   * 2000) of rendering: a template from a stranger may loop. The clock starts
   * when the worker has loaded, as its first start (type check, the template
   * library) can alone take seconds on a loaded machine.
   */
  async encodeChat(messages: ChatMessage[], timeoutMs = 2000): Promise<Uint32Array> {
    const source = this.#config.chat_template;
    const where = `${this.#dir}/tokenizer_config.json`;
    if (typeof source !== "string") {
      throw new DataError(`${where} has no "chat_template"; drop --chat or add one.`);
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
      return this.encode(reply.text, false);
    } finally {
      clearTimeout(timer);
      worker.terminate();
    }
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
    merges.forEach((m, i) => {
      const ok = typeof m === "string" ||
        (Array.isArray(m) && m.length === 2 && m.every((p) => typeof p === "string"));
      if (!ok) {
        throw new DataError(
          `${where} field "model.merges[${i}]" must be "a b" or ["a", "b"], got ${
            JSON.stringify(m)
          }.`,
        );
      }
    });
  }
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
