/**
 * The "Predicted against measured" section: shown when the simulated trace
 * holds a measured.csv (generate --offload), with the simulation row of the
 * same policy, capacity, prefetch and budget; absent otherwise.
 */
import assert from "node:assert/strict";
import { writeReport } from "./report.ts";

/** The predicted-against-measured section of a report (the results table shows every row). */
function measuredOf(html: string): string {
  return /<section id="measured">[\s\S]*?<\/section>/.exec(html)?.[0] ?? "";
}

Deno.test("report shows predicted against measured for an offloaded trace", async () => {
  const root = await Deno.makeTempDir({ prefix: "moetrace-report-measured-" });
  try {
    const trace = `${root}/trace`, sim = `${root}/sim`, an = `${root}/an`;
    for (const d of [trace, sim, an]) await Deno.mkdir(d);
    await Deno.writeTextFile(`${an}/analysis.json`, "{}");
    await Deno.writeTextFile(`${an}/figures.json`, "[]");
    await Deno.writeTextFile(`${sim}/figures.json`, "[]");
    await Deno.writeTextFile(`${sim}/simulation.json`, JSON.stringify({ trace }));
    await Deno.writeTextFile(
      `${sim}/simulation.csv`,
      [
        "policy,budget,capacity,prefetch,dtype,hardware,layer,hit_rate,misses,prefetch_issued,ms_per_token",
        "lru,per-layer,4,none,fp32,box,0,0.5,3,0,9",
        "lru,per-layer,4,none,fp32,box,all,0.5,7,0,11",
        "lru,per-layer,2,none,fp32,box,all,0.4,9,0,13",
        "lru,global,4,none,fp32,box,all,0.6,5,0,17",
      ].join("\n") + "\n",
    );
    const out = `${root}/report.html`;
    await writeReport(an, sim, out);
    assert.ok(!(await Deno.readTextFile(out)).includes("Predicted against measured"));
    await Deno.writeTextFile(
      `${trace}/measured.csv`,
      [
        "doc,phase,token,pos,ms,uploads,misses,prefetched,bytes,policy,capacity,prefetch",
        "0,0,-1,0,,4,4,0,100,lru,4,none",
        "0,1,0,1,10,2,2,0,50,lru,4,none",
        "0,1,1,2,12,1,1,0,25,lru,4,none",
        "0,1,2,3,20,0,0,0,0,lru,4,none",
      ].join("\n") + "\n",
    );
    await writeReport(an, sim, out);
    const html = await Deno.readTextFile(out);
    assert.ok(html.includes("Predicted against measured"));
    // predicted 11 (capacity 4 row only), median 12, mean 14, error −8.333%, loads 7 = uploads 7
    assert.match(
      html,
      /<td>box<\/td><td>fp32<\/td><td>11\.00<\/td><td>12\.00<\/td><td>14\.00<\/td><td>-8\.333%<\/td><td>7<\/td><td>7<\/td>/,
    );
    assert.ok(
      !measuredOf(html).includes("<td>17.00</td>"),
      "a global-pool row is not a per-layer run's prediction",
    );
    // a global pool of 4 slots (generate --offload lru:4 --budget global): the global row only
    await Deno.writeTextFile(
      `${trace}/measured.csv`,
      [
        "doc,phase,token,pos,ms,uploads,misses,prefetched,bytes,policy,capacity,prefetch,budget",
        "0,0,-1,0,,3,3,0,100,lru,4,none,global",
        "0,1,0,1,10,2,2,0,50,lru,4,none,global",
        "0,1,1,2,20,0,0,0,0,lru,4,none,global",
      ].join("\n") + "\n",
    );
    await writeReport(an, sim, out);
    const global = await Deno.readTextFile(out);
    assert.ok(global.includes("--budget global"));
    // predicted 17, median 15, mean 15, error +13.33%, loads 5 = uploads 5
    assert.match(
      global,
      /<td>box<\/td><td>fp32<\/td><td>17\.00<\/td><td>15\.00<\/td><td>15\.00<\/td><td>13\.33%<\/td><td>5<\/td><td>5<\/td>/,
    );
    assert.ok(!measuredOf(global).includes("<td>11.00</td>"));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
