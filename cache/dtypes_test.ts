import { deepStrictEqual as assertEquals } from "node:assert";
import { DTYPES, expertBytes } from "./dtypes.ts";

Deno.test("dtype sizes include the quantisation scales", () => {
  assertEquals(expertBytes(1024, DTYPES.fp32!), 4096);
  assertEquals(expertBytes(1024, DTYPES.bf16!), 2048);
  assertEquals(expertBytes(1024, DTYPES.int8!), 1040); // 1024 + 8 fp16 scales
  assertEquals(expertBytes(1024, DTYPES.int4!), 528); // 512 + 16
  // 1024 FP4 values in 512 bytes, and 32 blocks of 32 with a one-byte scale each.
  assertEquals(expertBytes(1024, DTYPES.mxfp4!), 544);
  assertEquals(expertBytes(1024, DTYPES.q3!), 448); // 384 + 16 groups × 4 bytes
  assertEquals(expertBytes(1024, DTYPES.q2!), 320); // 256 + 64
});
