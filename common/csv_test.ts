import assert from "node:assert/strict";
import { parse } from "csv-parse/sync";
import { formatNumber, toCsv } from "./csv.ts";

Deno.test("numbers are written in plain decimal, never with an exponent", () => {
  assert.equal(formatNumber(3), "3");
  assert.equal(formatNumber(0.5), "0.5");
  assert.equal(formatNumber(1e-7), "0.0000001");
  assert.equal(formatNumber(1.23456789e-9), "0.00000000123456789");
  assert.equal(formatNumber(2.5e21), "2500000000000000000000");
  assert.equal(formatNumber(-0.125), "-0.125");
  assert.equal(formatNumber(1 / 3), "0.333333333333");
  assert.equal(formatNumber(NaN), "");
});

Deno.test("CSV rows round-trip through csv-parse with quoting where needed", () => {
  const text = toCsv(
    [{ domain: "Gutenberg (PG-19)", layer: 0, share: 0.125 }, {
      domain: 'say "hi", ok',
      layer: 31,
      share: 1e-7,
    }],
    ["domain", "layer", "share"],
  );
  assert.deepEqual(parse(text, { columns: true }), [
    { domain: "Gutenberg (PG-19)", layer: "0", share: "0.125" },
    { domain: 'say "hi", ok', layer: "31", share: "0.0000001" },
  ]);
});
