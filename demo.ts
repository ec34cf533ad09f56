/**
 * `deno task demo`: the whole pipeline on the embedded default, into out/demo/.
 * Until the engine lands it runs on a synthetic trace.
 */
import { main } from "./main.ts";
import { writeSyntheticTrace } from "./engine/synthetic_trace.ts";

const OUT = "out/demo";
await Deno.remove(OUT, { recursive: true }).catch(() => {});
await Deno.mkdir(OUT, { recursive: true });
console.error("demo: writing a synthetic trace");
await writeSyntheticTrace(`${OUT}/trace`, { stickiness: 0.3, probs: true, lookahead: 2, seed: 1 });
for (
  const args of [
    ["inspect", `${OUT}/trace`],
    ["analyze", `${OUT}/trace`, "--out", `${OUT}/analysis`],
    ["simulate", `${OUT}/trace`, "--out", `${OUT}/simulation`],
    [
      "report",
      "--analysis",
      `${OUT}/analysis`,
      "--simulation",
      `${OUT}/simulation`,
      "--out",
      `${OUT}/report.html`,
    ],
  ]
) {
  console.error(`demo: moetrace ${args.join(" ")}`);
  const code = await main(args);
  if (code !== 0) Deno.exit(code);
}
console.error(`demo: report written to ${OUT}/report.html`);
