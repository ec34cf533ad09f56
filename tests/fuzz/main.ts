/**
 * `deno task fuzz [CASES_PER_TARGET] [SEED]`: the fuzz suite at full size.
 * Prints each target's case counts and findings and the total; exits 1 on
 * any finding. Targets that start processes or write whole outputs run a
 * share of CASES_PER_TARGET (targets.ts `allTargets`).
 */
import { fuzz } from "./fuzz.ts";
import { allTargets, casesFor } from "./targets.ts";

const cases = Number(Deno.args[0] ?? 2500);
const seed = Number(Deno.args[1] ?? 1);
let total = 0;
let findings = 0;
for (const { target, share } of await allTargets()) {
  const start = performance.now();
  const result = await fuzz(target, { cases: casesFor(cases, share), seed });
  total += result.cases;
  findings += result.findings.length;
  console.log(
    `${result.target}: ${result.cases} cases in ${
      ((performance.now() - start) / 1000).toFixed(1)
    } s, ` +
      `${result.succeeded} accepted, ${result.rejected} rejected cleanly, ${result.findings.length} findings`,
  );
  for (const f of result.findings.slice(0, 20)) console.log(`  FINDING ${f}`);
}
console.log(`fuzz: ${total} cases, ${findings} findings`);
Deno.exit(findings === 0 ? 0 : 1);
