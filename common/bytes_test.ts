import assert from "node:assert/strict";
import { parseByteSize } from "./bytes.ts";

Deno.test("byte sizes: decimal and binary units, case-insensitive, bare numbers only when asked", () => {
  assert.equal(parseByteSize("24GiB"), 24 * 1024 * 1024 * 1024);
  assert.equal(parseByteSize("512MB"), 512_000_000);
  assert.equal(parseByteSize("1.5gb"), 1_500_000_000);
  assert.equal(parseByteSize("2 KiB"), 2048);
  assert.equal(parseByteSize("0.5KiB"), 512);
  assert.equal(parseByteSize("3b"), 3);
  // 1.3 kB is 1300 bytes; 1.0001 kB is 1000.1, rounded down to 1000.
  assert.equal(parseByteSize("1.3kB"), 1300);
  assert.equal(parseByteSize("1.0001kB"), 1000);
  assert.equal(parseByteSize("64"), undefined);
  assert.equal(parseByteSize("64", { bareIsBytes: true }), 64);
  for (const bad of ["", "GiB", "-1GB", "1e3MB", "12 parsecs", "1,5GB"]) {
    assert.equal(parseByteSize(bad, { bareIsBytes: true }), undefined, bad);
  }
});
