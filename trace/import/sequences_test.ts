import assert from "node:assert/strict";
import { SequenceRebuilder } from "./sequences.ts";

/** Each sequence as [pass, start, length, phase] runs. */
function runs(rebuilder: SequenceRebuilder) {
  return rebuilder.sequences.map((s) =>
    s.segments.map((g) => [g.pass, g.start, g.length, g.phase])
  );
}

Deno.test("decode tokens continue the sequence of their length, most recent pass first, then pass order", () => {
  const r = new SequenceRebuilder();
  // Pass 0: X and Y prefill 2 tokens each (a tie at length 2), Z prefills 3.
  r.add(0, { positions: [0, 1, 0, 1, 0, 1, 2], segments: [2, 2, 3], mode: "extend" }, "p0");
  // Pass 1: decode X, Y (both at position 2: order decides) and Z.
  r.add(1, { positions: [2, 2, 3], segments: null, mode: "decode" }, "p1");
  // Pass 2: one decode at position 3: X and Y both fit; the first in pass 1's order wins.
  r.add(2, { positions: [3], segments: null, mode: "decode" }, "p2");
  // Pass 3: a new prefill W of 4 tokens, then a mixed pass where W's decode at 4 and
  // a stale length-4 sequence (Z, last extended in pass 1) compete: W is more recent.
  r.add(3, { positions: [0, 1, 2, 3], segments: [4], mode: "extend" }, "p3");
  r.add(4, { positions: [4, 0, 1], segments: [1, 2], mode: "mixed" }, "p4");
  assert.deepEqual(runs(r), [
    [[0, 0, 2, 0], [1, 0, 1, 1], [2, 0, 1, 1]], // X
    [[0, 2, 2, 0], [1, 1, 1, 1]], // Y
    [[0, 4, 3, 0], [1, 2, 1, 1]], // Z
    [[3, 0, 4, 0], [4, 0, 1, 1]], // W: a one-token continuation in a mixed pass is a decode
    [[4, 1, 2, 0]], // V: a new prefill in the mixed pass
  ]);
  assert.deepEqual(r.sequences.map((s) => s.midStream), [false, false, false, false, false]);
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
