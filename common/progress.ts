/**
 * A progress line on stderr with rate and ETA: redrawn in place on a terminal,
 * one plain line every few seconds otherwise (CI logs, files).
 */
export interface ProgressOptions {
  /** What is counted, e.g. "tokens" (default "items"). */
  unit?: string;
  /** Seconds between lines when stderr is not a terminal (default 5). */
  logInterval?: number;
  /** Where lines go (default stderr) and whether it is a terminal (default: asked), for tests. */
  write?: (text: string) => void;
  tty?: boolean;
}

export class Progress {
  readonly #label: string;
  readonly #unit: string;
  readonly #tty: boolean;
  readonly #logInterval: number;
  readonly #start = performance.now();
  #total: number | null;
  #done = 0;
  #rateCount = 0;
  #lastDraw = 0;
  #note = "";
  readonly #write: (text: string) => void;

  /** `total` is in the same unit as `advance`, or null when unknown. */
  constructor(label: string, total: number | null, options: ProgressOptions = {}) {
    this.#label = label;
    this.#total = total;
    this.#unit = options.unit ?? "items";
    this.#logInterval = (options.logInterval ?? 5) * 1000;
    this.#tty = options.tty ?? Deno.stderr.isTerminal();
    this.#write = options.write ??
      ((text) => Deno.stderr.writeSync(new TextEncoder().encode(text)));
  }

  /**
   * Adds `amount` to the position; `rateAmount` (default `amount`) counts
   * toward the rate, e.g. tokens while the position counts documents.
   */
  advance(amount: number, rateAmount = amount, note = ""): void {
    this.#done += amount;
    this.#rateCount += rateAmount;
    this.#note = note;
    this.#maybeDraw();
  }

  /** Moves the position to `done` (a count reported by someone else, e.g. a worker pool). */
  set(done: number): void {
    this.#rateCount += done - this.#done;
    this.#done = done;
    this.#maybeDraw();
  }

  #maybeDraw(): void {
    const now = performance.now();
    if (now - this.#lastDraw >= (this.#tty ? 200 : this.#logInterval)) {
      this.#lastDraw = now;
      this.#draw(false);
    }
  }

  /** Draws the final state and ends the line. */
  finish(): void {
    this.#draw(true);
  }

  #draw(final: boolean): void {
    const seconds = (performance.now() - this.#start) / 1000;
    const rate = this.#rateCount / Math.max(seconds, 1e-9);
    let line = `${this.#label}: `;
    if (this.#total !== null && this.#total > 0) {
      const fraction = Math.min(1, this.#done / this.#total);
      const width = 24;
      const filled = Math.round(fraction * width);
      const eta = fraction > 0 ? seconds * (1 / fraction - 1) : NaN;
      line += `[${"#".repeat(filled)}${".".repeat(width - filled)}] ${this.#done}/${this.#total} ` +
        `${(fraction * 100).toFixed(0)}%, ${formatRate(rate)} ${this.#unit}/s` +
        (final ? `, ${formatSeconds(seconds)}` : `, ETA ${formatSeconds(eta)}`);
    } else {
      line += `${this.#done}, ${formatRate(rate)} ${this.#unit}/s, ${formatSeconds(seconds)}`;
    }
    if (this.#note) line += ` ${this.#note}`;
    this.#write(this.#tty ? `\r\x1b[K${line}${final ? "\n" : ""}` : `${line}\n`);
  }
}

function formatRate(rate: number): string {
  return rate >= 100 ? rate.toFixed(0) : rate.toPrecision(3);
}

function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds)) return "?";
  if (seconds < 60) return `${seconds.toFixed(0)}s`;
  const m = Math.floor(seconds / 60);
  return m < 60
    ? `${m}m${String(Math.round(seconds % 60)).padStart(2, "0")}s`
    : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
}
