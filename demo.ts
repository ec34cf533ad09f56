/**
 * `deno task demo`: the whole pipeline on the embedded default, into out/demo/:
 * the fixture model `fixtures/models/tiny-moe` over the fixture corpus →
 * capture (with --probs and --lookahead 2) → analyze → simulate (a small
 * sweep) → report. Progress goes to stderr; the last line names the report.
 *
 * `deno task demo MODEL CORPUS` runs the same pipeline on another checkpoint
 * and corpus.
 */
import { main } from "./main.ts";

const MODEL = Deno.args[0] ?? "fixtures/models/tiny-moe";
const CORPUS = Deno.args[1] ?? "fixtures/corpus/fixture.jsonl";
const OUT = "out/demo";

const steps: string[][] = [
  [
    "capture",
    "--model",
    MODEL,
    "--corpus",
    CORPUS,
    "--out",
    `${OUT}/trace`,
    "--max-tokens",
    "256",
    "--probs",
    "--lookahead",
    "2",
  ],
  ["inspect", `${OUT}/trace`],
  ["analyze", `${OUT}/trace`, "--out", `${OUT}/analysis`],
  [
    "simulate",
    `${OUT}/trace`,
    "--out",
    `${OUT}/simulation`,
    "--policy",
    "lru,lfu,fifo,belady,swap",
    "--prefetch",
    "none,speculative,markov,oracle",
  ],
  [
    "report",
    "--analysis",
    `${OUT}/analysis`,
    "--simulation",
    `${OUT}/simulation`,
    "--out",
    `${OUT}/report.html`,
  ],
];

const start = performance.now();
await Deno.remove(OUT, { recursive: true }).catch(() => {});
await Deno.mkdir(OUT, { recursive: true });
for (const args of steps) {
  console.error(`demo: moetrace ${args.join(" ")}`);
  const code = await main(args);
  if (code !== 0) Deno.exit(code);
}
const seconds = (performance.now() - start) / 1000;
console.error(`demo: finished in ${seconds.toFixed(0)} s; open ${OUT}/report.html`);
