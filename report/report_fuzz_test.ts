/**
 * Every file `report` reads, mutated (report/report_fuzz.ts): each case
 * writes the report or fails with one sentence and leaves no file; a written
 * report holds no script. `deno task fuzz` runs the same target with more
 * cases.
 */
import assert from "node:assert/strict";
import { fuzz } from "../tests/fuzz/fuzz.ts";
import { reportFuzzTarget } from "./report_fuzz.ts";

Deno.test("mutated report inputs give a report or one sentence, never a crash", async () => {
  // fuzz() calls the target's teardown.
  const result = await fuzz(await reportFuzzTarget(), { cases: 40, seed: 2026 });
  console.log(
    `  ${result.target}: ${result.cases} cases, ${result.succeeded} accepted, ${result.rejected} rejected cleanly`,
  );
  assert.deepEqual(result.findings, []);
  assert.ok(result.rejected > 0 && result.succeeded > 0, "both outcomes are reached");
});
