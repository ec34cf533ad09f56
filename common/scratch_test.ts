import assert from "node:assert/strict";
import { Scratch, Spare } from "./scratch.ts";

Deno.test("a Spare goes to one user at a time, and only while it is small enough", () => {
  const spare = new Spare<Scratch>(1 << 20);
  assert.equal(spare.take(), null);
  const scratch = new Scratch(1 << 17);
  assert.equal(scratch.bytes(10).length, 10);
  assert.equal(scratch.size, 1 << 17, "grown to `least` at once");
  spare.keep(scratch, scratch.size);
  assert.equal(spare.take(), scratch);
  assert.equal(spare.take(), null, "taken: the next user gets none");
  scratch.bytes(2 << 20);
  spare.keep(scratch, scratch.size);
  assert.equal(spare.take(), null, "over maxBytes: not kept");
});
