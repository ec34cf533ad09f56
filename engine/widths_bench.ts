/**
 * `moetrace bench widths`: the engine at the real widths of published MoE
 * models (engine/widths.ts), each a random checkpoint of a few layers, cached
 * outside the repository (`$TMPDIR/moetrace-widths/NAME`, written once).
 *
 * Per shape, in one run: transformers' router decisions on the same weights
 * and token ids (fixtures/train/widths_golden.py in the local wheel mirror's
 * torch and transformers, float32 on the CPU, cached beside the checkpoint)
 * and its CPU tokens/s; then the engine's load time, `route` (capture's path)
 * tokens/s of the second call (the first compiles pipelines), the GFLOP/s of
 * that pass (MoeModel.flops) against the engine's own best matmul at the
 * shape's hidden size (at most 2048³) on this device, peak host memory (RSS)
 * and peak GPU memory (the pool's), and the share of (token, layer) decisions
 * whose top-k set equals transformers' outside near-ties (the k-th and
 * (k+1)-th probabilities within 1e-5, where float32 rounding decides; target
 * ≥ 99.5%). Without Python the agreement is left out, with the reason.
 */
import type { BenchOptions } from "../bench/measure.ts";
import { medianSeconds, rssMiB } from "../bench/measure.ts";
import { messageOf } from "../common/errors.ts";
import { pathExists } from "../common/fs.ts";
import { Rng } from "../common/random.ts";
import { pythonEnv } from "../tests/python_env.ts";
import { matmulGflops } from "./bench.ts";
import { loadModel } from "./model.ts";
import type { RouterLog } from "./router_log.ts";
import {
  checkpointBytes,
  WIDTH_SHAPES,
  widthConfig,
  widthConfigText,
  type WidthShape,
  writeWidthCheckpoint,
} from "./widths.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const NEAR_TIE = 1e-5;

/** One shape's figures. */
export interface WidthRow {
  name: string;
  checkpointMiB: number;
  loadSeconds: number;
  tokens: number;
  tokensPerSecond: number;
  gflops: number;
  matmulGflops: number;
  hostPeakMiB: number;
  gpuPeakMiB: number;
  /** null: transformers could not run here (`goldenNote` says why). */
  agreement: { equal: number; compared: number; nearTies: number } | null;
  transformersTokensPerSecond: number | null;
  goldenNote: string;
}

export interface WidthsOptions extends BenchOptions {
  /** Sequences × tokens to capture (default 3 × 128). */
  sequences?: number;
  tokens?: number;
  /** Only these shapes (names as in WIDTH_SHAPES; default all). */
  shapes?: string[];
}

interface Golden {
  tokens_per_s: number;
  docs: { experts: number[][][]; gaps: number[][] }[];
}

function cacheDir(): string {
  return `${Deno.env.get("TMPDIR") ?? "/tmp"}/moetrace-widths`;
}

async function ensureCheckpoint(shape: WidthShape): Promise<string> {
  const dir = `${cacheDir()}/${shape.name}`;
  const config = await widthConfig(shape);
  const text = await widthConfigText(shape, config);
  if (!(await pathExists(`${dir}/complete`))) {
    console.error(`bench widths: writing the random ${shape.name} checkpoint into ${dir}`);
    await writeWidthCheckpoint(dir, config, text, 17);
  } else await Deno.writeTextFile(`${dir}/config.json`, text); // the tensors depend on sizes only
  return dir;
}

/** transformers' decisions on `ids`, cached per ids; or why there are none. */
async function golden(dir: string, ids: number[][]): Promise<Golden | string> {
  const key = `${ids.length}x${ids[0]!.length}`;
  const file = `${dir}/golden-${key}.json`;
  if (await pathExists(file)) return JSON.parse(await Deno.readTextFile(file));
  const env = await pythonEnv(
    "pyenv-transformers",
    // accelerate: transformers loads gpt-oss's MXFP4 experts (dequantised on a CPU) only with it
    ["torch==2.13.0", "transformers==5.18.0", "safetensors==0.8.0", "accelerate==1.15.0"],
    "torch, transformers, safetensors, accelerate",
  );
  if ("reason" in env) return env.reason;
  await Deno.writeTextFile(`${dir}/ids-${key}.json`, JSON.stringify(ids));
  const run = await new Deno.Command(env.python, {
    args: [
      `${ROOT}fixtures/train/widths_golden.py`,
      "--model",
      dir,
      "--ids",
      `${dir}/ids-${key}.json`,
      "--out",
      `${file}.partial`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!run.success) {
    const tail = new TextDecoder().decode(run.stderr).trim().split("\n").slice(-2).join(" ");
    return `transformers failed: ${tail}`;
  }
  await Deno.rename(`${file}.partial`, file);
  return JSON.parse(await Deno.readTextFile(file));
}

/** Top-k sets equal, per (sequence, token, MoE layer), outside near-ties. */
function agreement(logs: RouterLog[], g: Golden, k: number) {
  let equal = 0, compared = 0, nearTies = 0;
  logs.forEach((log, d) => {
    const doc = g.docs[d]!;
    doc.experts.forEach((layers, t) => {
      layers.forEach((want, m) => {
        if (doc.gaps[t]![m]! < NEAR_TIE) {
          nearTies++;
          return;
        }
        const got = new Set(
          Array.from(
            log.experts.subarray((t * layers.length + m) * k, (t * layers.length + m + 1) * k),
          ),
        );
        compared++;
        if (want.every((e) => got.has(e))) equal++;
      });
    });
  });
  return { equal, compared, nearTies };
}

/** Runs one shape: golden first (its process's memory is gone before the engine loads). */
export async function benchWidth(shape: WidthShape, o: WidthsOptions): Promise<WidthRow> {
  const config = await widthConfig(shape);
  const dir = await ensureCheckpoint(shape);
  const vocab = config.vocab_size as number;
  const rng = new Rng(3);
  const ids = Array.from(
    { length: o.sequences ?? 3 },
    () => Array.from({ length: o.tokens ?? 128 }, () => 3 + (rng.nextU32() % (vocab - 3))),
  );
  const g = await golden(dir, ids);
  let hostPeak = rssMiB();
  const start = performance.now();
  const model = await loadModel(dir, { maxBatchTokens: ids.length * ids[0]!.length });
  const loadSeconds = (performance.now() - start) / 1000;
  hostPeak = Math.max(hostPeak, rssMiB());
  try {
    const seqs = ids.map((s) => Uint32Array.from(s));
    const route = { probs: false, lookahead: 0 };
    let logs = await model.route(seqs, route); // compiles the pipelines
    hostPeak = Math.max(hostPeak, rssMiB());
    const seconds = await medianSeconds(1, async () => {
      logs = await model.route(seqs, route);
    });
    hostPeak = Math.max(hostPeak, rssMiB());
    const lengths = seqs.map((s) => s.length);
    const tokens = lengths.reduce((a, b) => a + b, 0);
    const n = Math.min(2048, Math.floor(model.config.hiddenSize / 64) * 64);
    const mm = await matmulGflops(n, 1);
    return {
      name: shape.name,
      checkpointMiB: checkpointBytes(config) / 2 ** 20,
      loadSeconds,
      tokens,
      tokensPerSecond: tokens / seconds,
      gflops: model.flops(lengths, "route") / seconds / 1e9,
      matmulGflops: mm.gflops,
      hostPeakMiB: hostPeak,
      gpuPeakMiB: model.gpuBytesPeak() / 2 ** 20,
      agreement: typeof g === "string" ? null : agreement(logs, g, model.config.topK),
      transformersTokensPerSecond: typeof g === "string" ? null : g.tokens_per_s,
      goldenNote: typeof g === "string" ? g : "",
    };
  } finally {
    model.destroy();
  }
}

/** Prints the rows as one table (or JSON). */
export function printWidths(rows: WidthRow[], json: boolean): void {
  if (json) {
    console.log(JSON.stringify({ benchmark: "widths", rows }));
    return;
  }
  const header = [
    "shape",
    "MiB",
    "load s",
    "tokens",
    "tok/s",
    "GFLOP/s",
    "matmul",
    "% of mm",
    "host MiB",
    "GPU MiB",
    "agree (near-ties)",
    "HF CPU tok/s",
  ];
  const table = rows.map((r) => [
    r.name,
    r.checkpointMiB.toFixed(0),
    r.loadSeconds.toFixed(1),
    String(r.tokens),
    r.tokensPerSecond.toFixed(1),
    r.gflops.toFixed(2),
    r.matmulGflops.toFixed(2),
    (100 * r.gflops / r.matmulGflops).toFixed(0) + "%",
    r.hostPeakMiB.toFixed(0),
    r.gpuPeakMiB.toFixed(0),
    r.agreement
      ? `${
        (100 * r.agreement.equal / Math.max(1, r.agreement.compared)).toFixed(2)
      }% of ${r.agreement.compared} (${r.agreement.nearTies})`
      : "not checked",
    r.transformersTokensPerSecond?.toFixed(1) ?? "-",
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i]!)).join("  ");
  console.log(
    "\nbench widths: random checkpoints at real widths (engine vs transformers on the same weights)",
  );
  console.log(line(header));
  for (const row of table) console.log(line(row));
  for (const r of rows) {
    if (r.goldenNote) console.log(`  ${r.name}: agreement not checked: ${r.goldenNote}`);
  }
  console.log(`  load average ${Deno.loadavg().map((x) => x.toFixed(1)).join(" ")}`);
}

export async function benchWidths(o: WidthsOptions): Promise<WidthRow[]> {
  const shapes = o.shapes ? WIDTH_SHAPES.filter((s) => o.shapes!.includes(s.name)) : WIDTH_SHAPES;
  const rows: WidthRow[] = [];
  const failed: string[] = [];
  for (const shape of shapes) {
    try {
      rows.push(await benchWidth(shape, o));
      if (!o.json) console.error(`bench widths: ${shape.name} done`);
    } catch (error) {
      // one shape's failure (memory, a family transformers cannot load) leaves the others' figures
      failed.push(`${shape.name}: ${messageOf(error)}`);
    }
  }
  printWidths(rows, o.json);
  for (const f of failed) console.log(`  failed: ${f}`);
  return rows;
}
