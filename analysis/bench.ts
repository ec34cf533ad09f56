/**
 * `moetrace bench analysis`: the streaming pass over 1,000,000 tokens × 32
 * layers × top-2 (E = 8) and the intervals (the cluster jackknife; it
 * replaced a document bootstrap at N = 1000) (issue 5 targets: ≥ 5,000,000
 * token-layers/s for the pass; intervals ≤ 3× the pass;
 * memory independent of trace length). Memory: the bytes of statistics the
 * pass holds after a trace of 1/4 the length and after the full one (they
 * grow only with the number of documents, about 3.6 KB each here), and peak
 * RSS for information.
 */
import type { BenchOptions } from "../bench/measure.ts";
import { type Figure, printFigures, rssMiB } from "../bench/measure.ts";
import { syntheticCapture, syntheticDocs, syntheticModel } from "../trace/synthetic.ts";
import { type TraceDoc, TraceReader, TraceWriter } from "../trace/mod.ts";
import { accumulateTrace, runAnalysis } from "./run.ts";

const LAYERS = 32;
const TOP_K = 2;
const EXPERTS = 8;
const TOKENS_PER_DOC = 1000;
/** Eight domains, as in a Pile-style report: 28 domain pairs for the permutation tests. */
const DOMAINS = ["A", "B", "C", "D", "E", "F", "G", "H"];

async function writeTrace(dir: string, docs: TraceDoc[], copies: number): Promise<void> {
  const options = { numLayers: LAYERS, topK: TOP_K, numExperts: EXPERTS };
  const writer = await TraceWriter.open(dir, {
    model: syntheticModel(options),
    capture: { ...syntheticCapture(options), domains: DOMAINS },
  });
  let id = 0;
  for (let c = 0; c < copies; c++) {
    for (const doc of docs) {
      await writer.add({ ...doc, doc: id, domain: DOMAINS[id % DOMAINS.length]! });
      id++;
    }
  }
  await writer.close();
}

/** Seconds of one streaming pass, and the peak RSS seen while it ran. */
async function timePass(
  dir: string,
): Promise<{ seconds: number; peakMiB: number; tokens: number; stateMiB: number }> {
  const reader = await TraceReader.open(dir);
  let peak = rssMiB();
  const timer = setInterval(() => peak = Math.max(peak, rssMiB()), 5);
  const start = performance.now();
  const acc = await accumulateTrace(reader);
  const seconds = (performance.now() - start) / 1000;
  clearInterval(timer);
  peak = Math.max(peak, rssMiB());
  return { seconds, peakMiB: peak, tokens: acc.tokens, stateMiB: acc.stateBytes / 2 ** 20 };
}

export async function benchAnalysis(options: BenchOptions): Promise<void> {
  // 50 distinct sticky documents of 1,000 tokens, repeated to 1,000,000 rows.
  const docs = [...syntheticDocs({
    numLayers: LAYERS,
    topK: TOP_K,
    numExperts: EXPERTS,
    tokensPerDoc: TOKENS_PER_DOC,
    stickiness: 0.3,
    domains: [{ name: "A", docs: 25 }, { name: "B", docs: 25 }],
    seed: 1,
  })];
  const small = await Deno.makeTempDir({ prefix: "moetrace-bench-" });
  const large = await Deno.makeTempDir({ prefix: "moetrace-bench-" });
  try {
    await writeTrace(small, docs, 5);
    await writeTrace(large, docs, 20);
    const smallPass = await timePass(small);
    const passes = [await timePass(large), await timePass(large), await timePass(large)];
    passes.sort((a, b) => a.seconds - b.seconds);
    const pass = passes[1]!;
    const full = await runAnalysis(await TraceReader.open(large), { bootstrap: 1000, seed: 0 });
    const tokenLayers = pass.tokens * LAYERS;
    const figures: Figure[] = [
      {
        name: "pass token-layers/s (1M × 32 layers × top-2, median of 3)",
        value: tokenLayers / pass.seconds,
        unit: "token-layers/s",
        target: 5_000_000,
        direction: "min",
      },
      { name: "pass seconds", value: pass.seconds, unit: "s" },
      {
        name: "interval seconds (cluster jackknife; documents and buckets)",
        value: full.timing.jackknife,
        unit: "s",
      },
      {
        name: "intervals / pass",
        value: full.timing.jackknife / pass.seconds,
        unit: "×",
        target: 3,
        direction: "max",
      },
      {
        name:
          `permutation tests seconds (${full.settings.permutations} per comparison, 28 pairs + 8 one-vs-rest)`,
        value: full.timing.permutations,
        unit: "s",
      },
      {
        name: "everything after the pass (jackknives, permutations, tables)",
        value: full.timing.afterPass,
        unit: "s",
      },
      {
        name: "statistics held after a pass over 250k tokens",
        value: smallPass.stateMiB,
        unit: "MiB",
      },
      { name: "statistics held after a pass over 1M tokens", value: pass.stateMiB, unit: "MiB" },
      {
        name: "statistics held, ratio 1M / 250k",
        value: pass.stateMiB / smallPass.stateMiB,
        unit: "×",
        target: 1.25,
        direction: "max",
      },
      // RSS also counts shard buffers the garbage collector has not freed yet, so it
      // depends on GC timing more than on the analysis; shown for information.
      { name: "peak RSS, pass over 250k tokens", value: smallPass.peakMiB, unit: "MiB" },
      { name: "peak RSS, pass over 1M tokens", value: pass.peakMiB, unit: "MiB" },
    ];
    printFigures("bench analysis", figures, options.json);
  } finally {
    await Deno.remove(small, { recursive: true });
    await Deno.remove(large, { recursive: true });
  }
}
