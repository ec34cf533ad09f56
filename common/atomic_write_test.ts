import assert from "node:assert/strict";
import { writePartsAtomic } from "./atomic_write.ts";
import { Rng } from "./random.ts";

Deno.test("writePartsAtomic writes the parts in order, small and large mixed", async () => {
  // Sizes around the staging buffer's thresholds (64 KiB, 16 KiB direct):
  // small parts staged, then a large one that would fit beside them.
  const rng = new Rng(7);
  const sizes = [3, 100, 20_000, 5, 16_384, 16_383, 70_000, 1, 0, 40_000, 65_536, 2, 30_000];
  for (let i = 0; i < 40; i++) sizes.push(rng.nextU32() % 50_000);
  const parts = sizes.map((n, i) => {
    const part = new Uint8Array(n);
    for (let j = 0; j < n; j++) part[j] = (i * 31 + j * 7) & 0xff;
    return part;
  });
  const expected = new Uint8Array(sizes.reduce((a, b) => a + b, 0));
  let at = 0;
  for (const part of parts) {
    expected.set(part, at);
    at += part.length;
  }
  const dir = await Deno.makeTempDir();
  try {
    writePartsAtomic(`${dir}/out.bin`, parts);
    const written = await Deno.readFile(`${dir}/out.bin`);
    assert.equal(written.length, expected.length);
    // The first differing byte, compared without printing megabytes of diff.
    assert.equal(written.findIndex((b, i) => b !== expected[i]), -1);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["out.bin"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
