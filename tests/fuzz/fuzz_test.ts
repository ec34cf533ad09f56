/**
 * The fuzz suite at test size: every target, seeded, a few hundred cases in
 * all. `deno task fuzz` runs the same targets with many more cases.
 */
import assert from "node:assert/strict";
import { fuzz } from "./fuzz.ts";
import { allTargets, casesFor } from "./targets.ts";

const CASES_PER_TARGET = 60;

Deno.test("fuzzed inputs either succeed or fail with one clean sentence", async (t) => {
  for (const { target, share } of await allTargets()) {
    await t.step(target.name, async () => {
      const result = await fuzz(target, {
        cases: casesFor(CASES_PER_TARGET, share),
        seed: 2026,
      });
      console.log(
        `  ${result.target}: ${result.cases} cases, ${result.succeeded} accepted, ${result.rejected} rejected cleanly`,
      );
      assert.deepEqual(result.findings, []);
      if (!target.validInputs) {
        assert.ok(result.rejected > 0, "the mutations reach the validation code");
      }
    });
  }
});
