/**
 * Rebuilding sequences from a serving engine's forward passes when no request
 * ids were recorded (SGLang's per_token recorder). Each pass lists its tokens
 * with their positions, grouped into segments (`extend_seq_lens`; a decode
 * pass has one token per sequence). A segment whose first position is 0
 * starts a sequence. A segment starting at position p > 0 continues an open
 * sequence whose length is p, chosen as SGLang's scheduler would have run
 * them: it appends each prefilled batch to its running batch, filters
 * finished requests out in place and decodes every running request in each
 * decode or mixed pass. So the live sequences (extended in or after the most
 * recent decode or mixed pass) of length p are taken in the order they
 * reached it, by pass then order in the pass. When a pass continues fewer of
 * them than are live, some finished unseen: those prefilled since the last
 * decode pass are kept first (a request just prefilled has made one token and
 * almost always asks for more), then the earliest of the rest. Segments
 * beyond the live ones continue the stale sequence (one a decode pass went
 * without) extended most recently, first in that pass's order. A segment no
 * sequence fits starts a sequence of its own, counted as started mid-stream
 * (recording began after its prefix, or its prefix came from a prefix cache
 * of a finished request).
 */
import { DataError } from "../../common/errors.ts";

export type PassMode = "extend" | "decode" | "mixed";

/** One pass's tokens as the rebuilder needs them. */
export interface PassLayout {
  /** [T] the position of each token in its sequence. */
  positions: ArrayLike<number>;
  /** Tokens per segment, in order; null: every token is a segment of one (decode). */
  segments: readonly number[] | null;
  mode: PassMode;
}

/** Numbers per run in `Sequence.segments`. */
export const SEGMENT = 4;

export interface Sequence {
  /**
   * [n × SEGMENT] the runs of passes' tokens that make it, in order, each
   * as: the pass's index (in the order passes were added), the run's first
   * token within the pass, its length, and its phase (0 prompt, 1
   * generated). Numbers end to end, not an object per run: a long recording
   * has one run per generated token.
   */
  segments: number[];
  /** Tokens so far (= the position of its next token). */
  length: number;
  /** Pass that started it, and its order among the sequences started in that pass. */
  firstPass: number;
  firstOrder: number;
  /** Pass that last extended it. */
  lastPass: number;
  /** True when its first token's position was not 0. */
  midStream: boolean;
}

/** Rebuilds the sequences of one stream of passes (one rank). */
export class SequenceRebuilder {
  readonly sequences: Sequence[] = [];
  /** Open sequences by length, in the order they reached it. */
  #byLength = new Map<number, Sequence[]>();
  #lastPass = -1;
  /** The most recent decode or mixed pass added, or −1. */
  #lastDecode = -1;
  /** This pass's choice among the live sequences of each length (see #take). */
  #chosen = new Map<number, Sequence[]>();

  /** Adds the next pass; `where` names it in errors. */
  add(pass: number, layout: PassLayout, where: string): void {
    if (pass <= this.#lastPass) throw new Error("SequenceRebuilder.add: passes must increase");
    this.#lastPass = pass;
    const { positions, mode } = layout;
    const T = positions.length;
    const segments = layout.segments ?? new Array<number>(T).fill(1);
    const total = segments.reduce((a, b) => a + b, 0);
    if (total !== T) {
      throw new DataError(
        `${where} has ${T} tokens but its extend_seq_lens add up to ${total}.`,
      );
    }
    // How many segments of this pass continue a sequence of each length.
    const wanted = new Map<number, number>();
    for (let i = 0, at = 0; i < segments.length; at += segments[i++]!) {
      const first = segments[i]! > 0 ? positions[at]! : 0;
      if (first > 0) wanted.set(first, (wanted.get(first) ?? 0) + 1);
    }
    this.#chosen.clear();
    let start = 0;
    let order = 0;
    for (const length of segments) {
      if (length === 0) continue;
      const first = positions[start]!;
      for (let i = 1; i < length; i++) {
        if (positions[start + i] !== first + i) {
          throw new DataError(
            `${where} token ${start + i} is at position ${positions[start + i]}, expected ${
              first + i
            } (positions must count up within a sequence).`,
          );
        }
      }
      let sequence = first > 0 ? this.#take(first, pass, wanted.get(first)!) : null;
      const continuing = sequence !== null;
      if (!sequence) {
        sequence = {
          segments: [],
          length: first,
          firstPass: pass,
          firstOrder: order++,
          lastPass: pass,
          midStream: first > 0,
        };
        this.sequences.push(sequence);
      }
      const phase = mode === "decode" || (mode === "mixed" && length === 1 && continuing) ? 1 : 0;
      sequence.segments.push(pass, start, length, phase);
      sequence.length = first + length;
      sequence.lastPass = pass;
      let bucket = this.#byLength.get(sequence.length);
      if (!bucket) this.#byLength.set(sequence.length, bucket = []);
      bucket.push(sequence);
      start += length;
    }
    if (mode !== "extend") this.#lastDecode = pass;
  }

  /**
   * Removes and returns the open sequence of length `length` that this pass
   * continues next, `wanted` of its segments continuing that length.
   */
  #take(length: number, pass: number, wanted: number): Sequence | null {
    const bucket = this.#byLength.get(length);
    if (!bucket) return null;
    // The bucket is in the order sequences reached this length, so lastPass never decreases along it.
    let chosen = this.#chosen.get(length);
    if (!chosen) {
      const live = bucket.filter((s) => s.lastPass >= this.#lastDecode && s.lastPass < pass);
      chosen = live;
      if (wanted < live.length) {
        // Those prefilled since the last decode pass (the run at the end) first, then the earliest.
        const fresh = live.filter((s) => s.lastPass > this.#lastDecode).length;
        const old = live.length - fresh;
        const kept = Math.min(fresh, wanted);
        chosen = [...live.slice(0, wanted - kept), ...live.slice(old, old + kept)];
      }
      this.#chosen.set(length, chosen);
    }
    let sequence = chosen.shift();
    let at = sequence ? bucket.indexOf(sequence) : -1;
    if (!sequence) {
      // No live one left: the first of the run with the latest earlier pass.
      let end = bucket.length;
      while (end > 0 && bucket[end - 1]!.lastPass === pass) end--;
      if (end === 0) return null;
      const latest = bucket[end - 1]!.lastPass;
      at = end - 1;
      while (at > 0 && bucket[at - 1]!.lastPass === latest) at--;
      sequence = bucket[at]!;
    }
    bucket.splice(at, 1);
    if (bucket.length === 0) this.#byLength.delete(length);
    return sequence;
  }
}
