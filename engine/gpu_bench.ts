/**
 * `moetrace bench gpu`: the check to run when a machine with a real GPU is
 * at hand, in one command (issue 17): a reduced `bench widths` (OLMoE-1B-7B
 * and Qwen3-30B-A3B, two sequences of 64 tokens), `bench engine` and
 * `bench offload --large`, each printing its own figures, then one table of
 * what matters on a GPU: prefill (capture) tokens/s, decode tokens/s and
 * GFLOP/s against the device's own best matmul, per model, and per offload
 * setting the simulator's predicted ms/token against the measured one with
 * the uploads counted. On a software adapter (llvmpipe, lavapipe) it runs
 * the same steps, slowly, which proves the script works end to end.
 */
import type { BenchOptions, Figure } from "../bench/measure.ts";
import { benchEngine } from "./bench.ts";
import { createGpuContext } from "./gpu.ts";
import { benchOffload } from "./offload_bench.ts";
import { benchWidths, type WidthRow } from "./widths_bench.ts";
import { WIDTH_SHAPES } from "./widths.ts";

/** Whether the adapter is a CPU rasteriser rather than a GPU. */
function isSoftware(adapter: string): boolean {
  return /llvmpipe|lavapipe|swiftshader|software|cpu/i.test(adapter);
}

function figure(figures: Figure[], name: string): number {
  return figures.find((f) => f.name === name)?.value ?? NaN;
}

export async function benchGpu(options: BenchOptions): Promise<void> {
  const probe = await createGpuContext();
  const adapter = probe.adapterName;
  probe.device.destroy();
  const software = isSoftware(adapter);
  const started = performance.now();
  console.log(
    `bench gpu on ${adapter}${
      software ? " (a software adapter: every step runs, slowly and reduced)" : ""
    }`,
  );
  const widths: WidthRow[] = await benchWidths({
    ...options,
    sequences: 2,
    tokens: 64,
    // two shapes: writing a fresh machine's checkpoints (about 1 min per 2 GB, single-threaded)
    // and transformers' goldens take most of the 8 minutes; `bench widths` runs all six
    shapes: WIDTH_SHAPES.slice(0, 2).map((s) => s.name),
  });
  const engine = await benchEngine({ json: options.json });
  const offload = await benchOffload({ json: options.json, large: true });

  const rows: string[][] = [[
    "model",
    "prefill tok/s",
    "decode tok/s",
    "GFLOP/s",
    "matmul GFLOP/s",
    "% of matmul",
  ]];
  const mm = figure(engine, "matmul 1024³ (engine kernel)");
  const prefillGflops = figure(engine, "prefill route GFLOP/s");
  rows.push([
    "tiny-moe (bench engine)",
    figure(engine, "prefill route 8×256 tokens").toFixed(0),
    figure(engine, "decode (greedy, GPU loop)").toFixed(1),
    prefillGflops.toFixed(2),
    mm.toFixed(2),
    `${(100 * prefillGflops / mm).toFixed(0)}%`,
  ]);
  for (const w of widths) {
    rows.push([
      `${w.name} (widths)`,
      w.tokensPerSecond.toFixed(1),
      "-",
      w.gflops.toFixed(2),
      w.matmulGflops.toFixed(2),
      `${(100 * w.gflops / w.matmulGflops).toFixed(0)}%`,
    ]);
  }
  const settings = offload
    .filter((f) => f.name.endsWith(": predicted ms/token"))
    .map((f) => f.name.slice(0, -": predicted ms/token".length));
  const offloadRows: string[][] = [[
    "offload --large setting",
    "predicted ms/token",
    "measured ms/token",
    "predicted/measured",
    "uploads",
    "simulated loads",
  ]];
  for (const s of settings) {
    const predicted = figure(offload, `${s}: predicted ms/token`);
    const measured = figure(offload, `${s}: measured mean ms/token`);
    if (Number.isNaN(measured)) continue; // a difference of two settings, not a run
    offloadRows.push([
      s,
      predicted.toFixed(2),
      measured.toFixed(2),
      (predicted / measured).toFixed(2),
      figure(offload, `${s}: uploads`).toFixed(0),
      figure(offload, `${s}: simulated misses + prefetches`).toFixed(0),
    ]);
  }
  const minutes = (performance.now() - started) / 60000;
  if (options.json) {
    console.log(
      JSON.stringify({ benchmark: "gpu", adapter, software, minutes, rows, offloadRows }),
    );
    return;
  }
  console.log(`\nbench gpu: summary on ${adapter}`);
  printTable(rows);
  console.log("");
  printTable(offloadRows);
  console.log(
    `  ${minutes.toFixed(1)} min in all (target on a real GPU < 8 min); load average ${
      Deno.loadavg().map((x) => x.toFixed(1)).join(" ")
    }`,
  );
}

function printTable(rows: string[][]): void {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) console.log("  " + r.map((c, i) => c.padStart(widths[i]!)).join("  "));
}
