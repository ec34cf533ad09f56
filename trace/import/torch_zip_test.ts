import assert from "node:assert/strict";
import { unzipSync, zipSync } from "fflate";
import { FIXTURES } from "./fixtures_test_helpers.ts";
import { storedEntries } from "./torch_zip.ts";

const RANK0 = `${FIXTURES}sglang_rank0.pt`;

Deno.test("a torch.save zip opens in place with the same entries and bytes fflate reads", () => {
  const bytes = Deno.readFileSync(RANK0);
  const reference = unzipSync(bytes);
  const entries = storedEntries(bytes);
  assert.ok(entries, "torch.save stores its entries uncompressed");
  assert.deepEqual(Object.keys(entries).sort(), Object.keys(reference).sort());
  for (const [name, data] of Object.entries(reference)) {
    assert.deepEqual(entries[name], data, name);
    // A view of the file's own bytes, not a copy.
    assert.equal(entries[name]!.buffer, bytes.buffer, name);
  }
  // torch.save aligns storages to 64 bytes, so int32 tensors are read without a copy.
  const storages = Object.keys(entries).filter((n) => /\/data\/\d+$/.test(n));
  assert.ok(storages.length > 0);
  for (const name of storages) assert.equal(entries[name]!.byteOffset % 64, 0, name);
});

Deno.test("zips the in-place reader does not vouch for are left to fflate", () => {
  const bytes = Deno.readFileSync(RANK0);
  const entries = unzipSync(bytes);
  // Compressed entries.
  assert.equal(storedEntries(zipSync(entries, { level: 6 })), null);
  // Cut short: no end-of-central-directory record where it belongs.
  assert.equal(storedEntries(bytes.subarray(0, bytes.length - 30)), null);
  assert.equal(storedEntries(bytes.subarray(0, bytes.length >> 1)), null);
  // A central directory pointing past a local header that is not there.
  const damaged = bytes.slice();
  const view = new DataView(damaged.buffer);
  const end = damaged.length - 22;
  assert.equal(view.getUint32(end, true), 0x06054b50);
  const directory = view.getUint32(end + 16, true);
  view.setUint32(directory + 42, 7, true); // the first entry's local header offset
  assert.equal(storedEntries(damaged), null);
  // Not a zip at all.
  assert.equal(storedEntries(new Uint8Array(100)), null);
});
