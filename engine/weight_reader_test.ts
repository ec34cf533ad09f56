/**
 * `transpose` (weight_reader.ts) against its definition out[c, r] = m[r, c],
 * for f32 and 16-bit data, odd and even row counts, sizes that are and are
 * not multiples of its tiles.
 */
import assert from "node:assert/strict";
import { transpose } from "./weight_reader.ts";

Deno.test("transpose puts m[r, c] at out[c, r] for f32 and 16-bit data of any shape", () => {
  for (const [rows, cols] of [[1, 1], [3, 5], [2, 7], [64, 130], [130, 64], [67, 33]]) {
    for (const Type of [Float32Array, Uint16Array]) {
      const m = new Type(rows! * cols!).map((_, i) => (i * 7919 + 13) % 65521);
      const out = transpose(m, rows!, cols!);
      assert.equal(out.constructor, Type);
      for (let r = 0; r < rows!; r++) {
        for (let c = 0; c < cols!; c++) {
          assert.equal(
            out[c * rows! + r],
            m[r * cols! + c],
            `${Type.name} [${rows}, ${cols}] at ${r}, ${c}`,
          );
        }
      }
    }
  }
});
