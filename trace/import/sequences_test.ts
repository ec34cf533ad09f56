import assert from "node:assert/strict";
import { SEGMENT, SequenceRebuilder } from "./sequences.ts";

/** Each sequence as [pass, start, length, phase] runs. */
function runs(rebuilder: SequenceRebuilder) {
  return rebuilder.sequences.map((s) =>
    Array.from(
      { length: s.segments.length / SEGMENT },
      (_, i) => s.segments.slice(i * SEGMENT, (i + 1) * SEGMENT),
    )
  );
}

Deno.test("decode tokens continue the live sequence of their length in running-batch order, else the most recent", () => {
  const r = new SequenceRebuilder();
  // Pass 0: X and Y prefill 2 tokens each (a tie at length 2), Z prefills 3.
  r.add(0, { positions: [0, 1, 0, 1, 0, 1, 2], segments: [2, 2, 3], mode: "extend" }, "p0");
  // Pass 1: decode X, Y (both at position 2: order decides) and Z.
  r.add(1, { positions: [2, 2, 3], segments: null, mode: "decode" }, "p1");
  // Pass 2: one decode at position 3: X and Y both fit; the first in pass 1's order wins.
  // Y and Z, not decoded here, are finished as far as the log shows.
  r.add(2, { positions: [3], segments: null, mode: "decode" }, "p2");
  // Passes 3 and 4 prefill W1 then W2, 4 tokens each; pass 5 decodes three tokens at
  // position 4, where Z (stale), X, W1 and W2 all fit: the running batch holds X, W1,
  // W2 in that order (each prefill appended to it), and each is decoded.
  r.add(3, { positions: [0, 1, 2, 3], segments: [4], mode: "extend" }, "p3");
  r.add(4, { positions: [0, 1, 2, 3], segments: [4], mode: "extend" }, "p4");
  r.add(5, { positions: [4, 4, 4], segments: null, mode: "decode" }, "p5");
  // Pass 6, mixed: a decode at 5 (X, W1 and W2 fit, two finished: X, the earliest,
  // is kept) beside a new prefill V.
  r.add(6, { positions: [5, 0, 1], segments: [1, 2], mode: "mixed" }, "p6");
  // Pass 7: a decode at 3, where only stale Y fits: it is taken, the most recent stale one.
  r.add(7, { positions: [3], segments: null, mode: "decode" }, "p7");
  assert.deepEqual(runs(r), [
    [[0, 0, 2, 0], [1, 0, 1, 1], [2, 0, 1, 1], [5, 0, 1, 1], [6, 0, 1, 1]], // X
    [[0, 2, 2, 0], [1, 1, 1, 1], [7, 0, 1, 1]], // Y
    [[0, 4, 3, 0], [1, 2, 1, 1]], // Z
    [[3, 0, 4, 0], [5, 1, 1, 1]], // W1
    [[4, 0, 4, 0], [5, 2, 1, 1]], // W2
    [[6, 1, 2, 0]], // V: a new prefill in the mixed pass
  ]);
  assert.deepEqual(r.sequences.map((s) => s.midStream), [false, false, false, false, false, false]);
});

Deno.test("when a pass continues fewer live sequences than fit, those just prefilled are kept first", () => {
  const r = new SequenceRebuilder();
  // A and B prefill 2 tokens and decode once (length 3); C prefills 3 tokens after
  // that decode. Pass 3 decodes two tokens at 3: one of A, B, C finished unseen;
  // C, just prefilled, is kept, then A, the earliest; they are decoded in running
  // order (A, then C).
  r.add(0, { positions: [0, 1, 0, 1], segments: [2, 2], mode: "extend" }, "p0");
  r.add(1, { positions: [2, 2], segments: null, mode: "decode" }, "p1");
  r.add(2, { positions: [0, 1, 2], segments: [3], mode: "extend" }, "p2");
  r.add(3, { positions: [3, 3], segments: null, mode: "decode" }, "p3");
  assert.deepEqual(runs(r), [
    [[0, 0, 2, 0], [1, 0, 1, 1], [3, 0, 1, 1]], // A
    [[0, 2, 2, 0], [1, 1, 1, 1]], // B
    [[2, 0, 3, 0], [3, 1, 1, 1]], // C
  ]);
});

Deno.test("with no live sequence of its length, a decode continues the stale one extended most recently", () => {
  const r = new SequenceRebuilder();
  // A (pass 0) and B (pass 1) prefill 3 tokens each; pass 2 decodes neither (C only),
  // so both are stale: a decode at 3 in pass 3 continues B, the more recent.
  r.add(0, { positions: [0, 1, 2], segments: [3], mode: "extend" }, "p0");
  r.add(1, { positions: [0, 1, 2], segments: [3], mode: "extend" }, "p1");
  r.add(2, { positions: [0], segments: [1], mode: "extend" }, "p2");
  r.add(3, { positions: [1], segments: null, mode: "decode" }, "p3");
  r.add(4, { positions: [3], segments: null, mode: "decode" }, "p4");
  assert.deepEqual(runs(r), [
    [[0, 0, 3, 0]], // A
    [[1, 0, 3, 0], [4, 0, 1, 1]], // B
    [[2, 0, 1, 0], [3, 0, 1, 1]], // C
  ]);
});

Deno.test("a segment no sequence fits starts one mid-stream; bad layouts are one sentence", () => {
  const r = new SequenceRebuilder();
  r.add(0, { positions: [7, 8], segments: [2], mode: "extend" }, "p0");
  assert.equal(r.sequences[0]!.midStream, true);
  assert.equal(r.sequences[0]!.length, 9);
  assert.throws(
    () => r.add(1, { positions: [0, 2], segments: [2], mode: "extend" }, "f.pt records[1]"),
    /^DataError: f\.pt records\[1\] token 1 is at position 2, expected 1 \(positions must count up within a sequence\)\.$/,
  );
  assert.throws(
    () => r.add(2, { positions: [0, 1, 2], segments: [2], mode: "extend" }, "f.pt records[2]"),
    /^DataError: f\.pt records\[2\] has 3 tokens but its extend_seq_lens add up to 2\.$/,
  );
});
