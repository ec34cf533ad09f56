/**
 * A progress line on stderr with rate and ETA: redrawn in place on a terminal,
 * one plain line every few seconds otherwise (CI logs, files).
 */
export interface ProgressOptions {
  /** What is counted, e.g. "tokens" (default "items"). */
  unit?: string;
  /** Seconds between lines when stderr is not a terminal (default 5). */
  logInterval?: number;
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

  /** `total` is in the same unit as `advance`, or null when unknown. */
  constructor(label: string, total: number | null, options: ProgressOptions = {}) {
    this.#label = label;
    this.#total = total;
    this.#unit = options.unit ?? "items";
    this.#logInterval = (options.logInterval ?? 5) * 1000;
    this.#tty = Deno.stderr.isTerminal();
  }

  /**
   * Adds `amount` to the position; `rateAmount` (default `amount`) counts
   * toward the rate, e.g. tokens while the position counts documents.
   */
  advance(amount: number, rateAmount = amount, note = ""): void {
    this.#done += amount;
    this.#rateCount += rateAmount;
    this.#note = note;
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
    const encoded = new TextEncoder().encode(
      this.#tty ? `\r\x1b[K${line}${final ? "\n" : ""}` : `${line}\n`,
    );
    Deno.stderr.writeSync(encoded);
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
