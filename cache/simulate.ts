/**
 * `moetrace simulate TRACE --out DIR`: replays a trace through expert caches
 * and prefetchers (every combination of the flag lists) and writes
 * simulation.csv, miss_ratio_curve.csv, prefetch_accuracy.csv, SVG plots with
 * figures.json, simulation.json and a README.md that documents all of them.
 */
import process from "node:process";
import { writeFileAtomic } from "../common/atomic_write.ts";
import { type CsvRow, writeCsv } from "../common/csv.ts";
import { parseByteSize } from "../common/bytes.ts";
import { UsageError } from "../common/errors.ts";
import { writingOutputs } from "../common/interrupt.ts";
import { checkOutputFolder, tablesOutput } from "../common/output_folder.ts";
import { Progress } from "../common/progress.ts";
import { didYouMean } from "../common/suggest.ts";
import { renderSvg } from "../common/plot.ts";
import { type Manifest, TOOL_VERSION } from "../trace/mod.ts";
import { loadAccessTrace } from "./access_trace.ts";
import type { Budget } from "./expert_cache.ts";
import { POLICY_NAMES, policyByName, type PolicyName } from "./policies/mod.ts";
import { parsePrefetch, type PrefetchSpec } from "./prefetch/mod.ts";
import { simulationFigures } from "./simulate_figures.ts";
import type { SimulationOutput } from "./simulate_output.ts";
import { simulationReadme } from "./simulate_readme.ts";
import { bootstrapSweep, bootstrapThreads, rowIntervals } from "./bootstrap.ts";
import { capacityExperts, type CapacitySpec, runSweep, type SweepSettings } from "./sweep.ts";
import { dtypeInfo } from "./dtypes.ts";
import { checkMissSetting, missSettingFromFlags } from "./costs.ts";
import { type Hardware, loadHardware } from "./hardware.ts";
import { lruHits } from "./stack_distance.ts";

export const SIMULATION_COLUMNS = [
  "policy",
  "budget",
  "capacity",
  "capacity_spec",
  "capacity_bytes",
  "prefetch",
  "dtype",
  "hardware",
  "batch",
  "layer",
  "moe_layer",
  "n_docs",
  "n_tokens",
  "n_steps",
  "accesses",
  "experts_per_step",
  "hits",
  "misses",
  "hit_rate",
  "hit_rate_ci_low",
  "hit_rate_ci_high",
  "hit_rate_in_time",
  "loads_per_token",
  "bytes_per_token",
  "prefetch_issued",
  "prefetch_used",
  "prefetch_late",
  "prefetch_wasted_bytes",
  "prefetch_precision",
  "prefetch_recall",
  "stall_ms_per_token",
  "ms_per_token",
  "ms_per_token_ci_low",
  "ms_per_token_ci_high",
  "tokens_per_s",
  "on_miss",
  "cpu_experts",
  "tier",
  "ram_hits",
  "ssd_reads",
  "miss_dtype",
  "degraded_uses",
  "degraded_tokens",
] as const;

export const MRC_COLUMNS = [
  "policy",
  "budget",
  "capacity",
  "batch",
  "layer",
  "moe_layer",
  "n_docs",
  "n_tokens",
  "accesses",
  "hits",
  "misses",
  "hit_rate",
  "miss_ratio",
] as const;

export const ACCURACY_COLUMNS = [
  "prefetch",
  "layer",
  "moe_layer",
  "lookahead",
  "n_docs",
  "n_tokens",
  "opportunities",
  "predicted",
  "correct",
  "precision",
  "recall",
] as const;

/** Parses `--capacity` values (validated against the model later). */
export function parseCapacities(values: string[]): CapacitySpec[] | "auto" {
  if (values.length === 1 && values[0] === "auto") return "auto";
  return values.map((text) => {
    if (/^\d+$/.test(text)) {
      const experts = Number(text);
      if (experts < 1) throw new UsageError(`--capacity values must be at least 1, got "${text}".`);
      return { kind: "experts", experts, text };
    }
    const bytes = parseByteSize(text);
    if (bytes === undefined) {
      throw new UsageError(
        `--capacity takes auto, expert counts or byte budgets such as 24GiB, got "${text}".`,
      );
    }
    return { kind: "bytes", bytes, text };
  });
}

export interface SimulateOptions {
  out: string;
  policy: string[];
  capacity: string[];
  prefetch: string[];
  hardware: string[];
  dtype: string[];
  budget: Budget;
  seed: number;
  batch: number;
  bootstrap: number;
}

/** Default `--bootstrap`: resamples of the document-level bootstrap (bootstrap.ts). */
export const DEFAULT_BOOTSTRAP = 20;

/** Reads and checks the flags main.ts parsed. */
export async function simulateSettings(
  flags: Record<string, unknown>,
): Promise<{ out: string; raw: SimulateOptions; partial: Omit<SweepSettings, "capacities"> }> {
  const list = (name: string, fallback: string[]): string[] => {
    const v = flags[name];
    if (v === undefined) return fallback;
    if (Array.isArray(v)) return v.map(String);
    return String(v).split(",").map((s) => s.trim()).filter((s) => s !== "");
  };
  const raw: SimulateOptions = {
    out: String(flags.out),
    policy: list("policy", ["lru", "lfu", "belady"]),
    capacity: list("capacity", ["auto"]),
    prefetch: list("prefetch", ["none"]),
    hardware: list("hardware", ["pcie4"]),
    dtype: list("dtype", ["bf16"]),
    budget: (flags.budget ?? "per-layer") as Budget,
    seed: typeof flags.seed === "number" ? flags.seed : 0,
    batch: typeof flags.batch === "number" ? flags.batch : 1,
    bootstrap: typeof flags.bootstrap === "number" ? flags.bootstrap : DEFAULT_BOOTSTRAP,
  };
  if (!Number.isInteger(raw.batch) || raw.batch < 1) {
    throw new UsageError(`--batch takes a whole number of documents ≥ 1, got "${raw.batch}".`);
  }
  if (!Number.isInteger(raw.bootstrap) || raw.bootstrap < 0) {
    throw new UsageError(
      `--bootstrap takes a whole number of resamples ≥ 0, got "${raw.bootstrap}".`,
    );
  }
  if (raw.budget !== "per-layer" && raw.budget !== "global") {
    throw new UsageError(`--budget takes per-layer or global, got "${raw.budget}".`);
  }
  const policies: PolicyName[] = [];
  for (const text of raw.policy) {
    const p = policyByName(text.toLowerCase(), "--policy");
    if (p === null) {
      throw new UsageError(
        `--policy takes ${POLICY_NAMES.join(", ")}, got "${text}".${
          didYouMean(text, POLICY_NAMES)
        }`,
      );
    }
    if (!policies.includes(p)) policies.push(p);
  }
  noteDuplicates("--policy", raw.policy.length, policies);
  const prefetchers: PrefetchSpec[] = [];
  for (const p of raw.prefetch) {
    const spec = parsePrefetch(p.toLowerCase());
    if (!spec) {
      throw new UsageError(
        `--prefetch takes none, speculative, speculative:D, markov or oracle, got "${p}".${
          didYouMean(p, ["none", "speculative", "markov", "oracle"])
        }`,
      );
    }
    if (!prefetchers.some((q) => q.name === spec.name)) prefetchers.push(spec);
  }
  if (raw.batch > 1 && prefetchers.some((p) => p.kind !== "none")) {
    throw new UsageError(
      `--batch ${raw.batch} replays without prefetch; use --prefetch none (prefetchers predict one document's next step).`,
    );
  }
  noteDuplicates("--prefetch", raw.prefetch.length, prefetchers.map((p) => p.name));
  const dtypes = [...new Set(raw.dtype.map((d) => d.toLowerCase()))].map(dtypeInfo);
  noteDuplicates("--dtype", raw.dtype.length, dtypes.map((d) => d.name));
  const hardware: Hardware[] = [];
  for (const h of [...new Set(raw.hardware)]) hardware.push(await loadHardware(h));
  noteDuplicates("--hardware", raw.hardware.length, hardware.map((h) => h.name));
  // What a miss does (costs.ts, tiers.ts): one setting for every combination.
  const miss = missSettingFromFlags(
    {
      ...(typeof flags["on-miss"] === "string" ? { onMiss: flags["on-miss"] } : {}),
      ...(typeof flags.tier === "string" ? { tier: flags.tier } : {}),
      ...(typeof flags["miss-dtype"] === "string" ? { missDtype: flags["miss-dtype"] } : {}),
    },
    dtypes,
    raw.budget,
  );
  if (miss !== undefined) {
    checkMissSetting(miss, hardware);
    if (raw.batch > 1) {
      throw new UsageError(
        `--on-miss, --tier and --miss-dtype time one document's steps; --batch ${raw.batch} replays several (use --batch 1).`,
      );
    }
  }
  const names = hardware.map((h) => h.name);
  if (new Set(names).size !== names.length) {
    throw new UsageError(`--hardware lists two machines with the same name: ${names.join(", ")}.`);
  }
  return {
    out: raw.out,
    raw,
    partial: {
      policies,
      prefetchers,
      dtypes,
      hardware,
      budget: raw.budget,
      seed: raw.seed,
      batch: raw.batch,
      ...(miss !== undefined ? { miss } : {}),
    },
  };
}

/** One line on stderr when a list flag named the same value twice (it is simulated once). */
function noteDuplicates(flag: string, given: number, kept: readonly string[]): void {
  if (kept.length < given) {
    console.error(
      `simulate: ${flag} named ${given - kept.length} value${
        given - kept.length === 1 ? "" : "s"
      } twice; each is simulated once: ${kept.join(", ")}.`,
    );
  }
}

/** Most capacities `auto` sweeps; LRU still gets every capacity in miss_ratio_curve.csv. */
export const AUTO_CAPACITIES = 16;

/** k..E per layer, or when that is more than AUTO_CAPACITIES values, that many evenly spaced ones from k to E. */
export function autoCapacities(k: number, E: number): number[] {
  const n = E - k + 1;
  if (n <= AUTO_CAPACITIES) return Array.from({ length: n }, (_, i) => k + i);
  const values = new Set<number>();
  for (let i = 0; i < AUTO_CAPACITIES; i++) {
    values.add(Math.round(k + (i * (E - k)) / (AUTO_CAPACITIES - 1)));
  }
  return [...values].sort((a, b) => a - b);
}

/** Resolves `auto` and checks every capacity against the model. */
export function resolveCapacities(
  specs: CapacitySpec[] | "auto",
  settings: Omit<SweepSettings, "capacities">,
  manifest: Manifest,
): CapacitySpec[] {
  const { top_k: k, num_experts: E } = manifest.model;
  const M = manifest.model.moe_layers.length;
  const scale = settings.budget === "global" ? M : 1;
  if (specs === "auto") {
    return autoCapacities(k, E).map((c) => {
      const experts = c * scale;
      return { kind: "experts" as const, experts, text: String(experts) };
    });
  }
  // More slots than experts would be clamped to all of them: an expert count
  // above is a mistake (refused), a byte budget that holds every expert is not.
  const most = E * scale;
  const where = settings.budget === "global" ? `${E} experts × ${M} MoE layers` : `${E} experts`;
  for (const spec of specs) {
    if (spec.kind === "experts" && spec.experts > most) {
      throw new UsageError(
        `--capacity ${spec.text} is more than the model's ${where}${
          settings.budget === "global" ? "" : " per layer"
        }; give at most ${most}${
          settings.budget === "global" ? "" : " (or --budget global for slots shared by all layers)"
        }.`,
      );
    }
    for (const dtype of settings.dtypes) {
      const c = capacityExperts(spec, dtype, manifest.model, settings.budget, M);
      if (spec.kind === "bytes" && c > most) {
        console.error(
          `simulate: --capacity ${spec.text} holds all ${most} experts of ${dtype.name}${
            settings.budget === "global" ? "" : " per layer"
          }, so it is simulated as ${most}.`,
        );
      }
      if (c < k) {
        const what = spec.kind === "bytes"
          ? ` (${c} experts of ${dtype.name}${settings.budget === "per-layer" ? " per layer" : ""})`
          : "";
        throw new UsageError(
          `--capacity "${spec.text}"${what} is below top_k (${k}): a layer's ${k} experts must fit at once.`,
        );
      }
    }
  }
  return specs;
}

export async function simulateCommand(
  trace: string,
  flags: Record<string, unknown>,
): Promise<void> {
  const { out, raw, partial } = await simulateSettings(flags);
  await checkOutputFolder(
    out,
    { command: "simulate", ...tablesOutput("a simulation", "simulation.json") },
    flags.force === true,
  );
  const capacitySpecs = parseCapacities(raw.capacity);
  const needSpec = partial.prefetchers.some((p) => p.kind === "speculative");
  const started = performance.now();
  const { trace: data, manifest } = await loadAccessTrace(trace, { spec: needSpec });
  for (const p of partial.prefetchers) {
    if (p.kind === "speculative" && data.lookahead < p.depth) {
      throw new UsageError(
        `--prefetch ${p.name} needs a trace captured with --lookahead ${p.depth} or more; ${trace} has lookahead ${data.lookahead}.`,
      );
    }
  }
  if (data.tokens === 0) throw new UsageError(`${trace} holds no tokens to simulate.`);
  if (!hasTimingFacts(manifest)) {
    console.error(
      `simulate: ${trace} does not record the model's expert_params and hidden_size (import it with --model-config config.json); latencies need them, so only hit and miss counts are written.`,
    );
  }
  const settings: SweepSettings = {
    ...partial,
    capacities: resolveCapacities(capacitySpecs, partial, manifest),
  };
  const loaded = performance.now();
  // The sweep counts distinct cache runs: combinations that share a policy,
  // capacity and prefetcher share one run (dtype and hardware only retime it).
  let progress = null as Progress | null;
  let runs = 0;
  const result = await runSweep(data, manifest.model, settings, {
    onProgress: (done, total) => {
      runs = total;
      progress ??= new Progress("simulate", total, { unit: "cache runs" });
      progress.set(done);
    },
  });
  progress?.finish();
  const simulated = performance.now();
  const bootstrap = raw.bootstrap > 0
    ? await bootstrapSweep(data, manifest.model, settings, {
      resamples: raw.bootstrap,
      seed: raw.seed,
      ...bootstrapThreads(raw.bootstrap, result.replays, data.chosen.length),
    })
    : null;
  const resampled = performance.now();
  writingOutputs(out);
  const output: SimulationOutput = {
    traceDir: trace,
    manifest,
    trace: data,
    settings,
    result,
    bootstrap,
  };
  await writeSimulation(out, output);
  const summary = simulationSummary(out, output);
  const seconds = {
    simulate: (simulated - loaded) / 1000,
    read: (loaded - started) / 1000,
    bootstrap: (resampled - simulated) / 1000,
    // This process's CPU so far, all threads (`bench cache` reads it).
    cpu: (process.cpuUsage().user + process.cpuUsage().system) / 1e6,
  };
  if (flags.json === true) {
    console.log(JSON.stringify({ ...summary, cache_runs: runs, replays: result.replays, seconds }));
    return;
  }
  console.error(
    `simulate: ${result.combinations.length} combinations from ${runs} cache runs (${result.replays} replayed, ${
      runs - result.replays
    } from one LRU stack-distance pass) over ${data.tokens} tokens in ${
      seconds.simulate.toFixed(1)
    } s (trace read in ${seconds.read.toFixed(1)} s${
      bootstrap ? `; ${raw.bootstrap} bootstrap resamples in ${seconds.bootstrap.toFixed(1)} s` : ""
    }); written to ${out}`,
  );
  for (const line of summary.notes) console.error(`simulate: ${line}`);
}

/** What `simulate --json` prints: the settings, and the best ms/token per dtype, hardware and capacity. */
export function simulationSummary(out: string, o: SimulationOutput): {
  out: string;
  trace: string;
  tokens: number;
  combinations: number;
  policies: string[];
  prefetchers: string[];
  dtypes: string[];
  hardware: string[];
  budget: Budget;
  capacities: number[];
  best: {
    dtype: string;
    hardware: string;
    capacity: number;
    policy: string;
    prefetch: string;
    hit_rate: number;
    ms_per_token: number | null;
  }[];
  notes: string[];
} {
  const { settings, result } = o;
  const rows = simulationRows(o).filter((r) => r.layer === "all");
  const best = new Map<string, CsvRow>();
  for (const r of rows) {
    const key = `${r.dtype}|${r.hardware}|${r.capacity}`;
    const seen = best.get(key);
    const better = (a: CsvRow, b: CsvRow) => {
      const ma = a.ms_per_token as number, mb = b.ms_per_token as number;
      return Number.isFinite(ma) && Number.isFinite(mb)
        ? ma < mb
        : (a.hit_rate as number) > (b.hit_rate as number);
    };
    if (!seen || better(r, seen)) best.set(key, r);
  }
  const notes: string[] = [];
  const dtypes = settings.dtypes.map((d) => d.name);
  const machines = settings.hardware.map((h) => h.name);
  if (dtypes.length > 1) {
    notes.push(
      `simulation.csv and --json hold every dtype (${
        dtypes.join(", ")
      }), as does the report's results table; the figures show ${dtypes[0]} only.`,
    );
  }
  return {
    out,
    trace: o.traceDir,
    tokens: o.trace.tokens,
    combinations: result.combinations.length,
    policies: [...settings.policies],
    prefetchers: settings.prefetchers.map((p) => p.name),
    dtypes,
    hardware: machines,
    budget: settings.budget,
    capacities: [...new Set(result.combinations.map((c) => c.capacity))].sort((a, b) => a - b),
    best: [...best.values()].map((r) => ({
      dtype: String(r.dtype),
      hardware: String(r.hardware),
      capacity: r.capacity as number,
      policy: String(r.policy),
      prefetch: String(r.prefetch),
      hit_rate: r.hit_rate as number,
      ms_per_token: Number.isFinite(r.ms_per_token as number) ? r.ms_per_token as number : null,
    })),
    notes,
  };
}

/**
 * Whether the trace knows enough of the model to time it: an expert's bytes
 * come from expert_params and attention's from hidden_size. Logs imported
 * without --model-config record 0 for both.
 */
export function hasTimingFacts(manifest: Manifest): boolean {
  return manifest.model.expert_params > 0 && manifest.model.hidden_size > 0;
}

/** The rows of simulation.csv: one per combination and layer, then `all`. */
export function simulationRows(o: SimulationOutput): CsvRow[] {
  const { trace, settings, result, manifest } = o;
  // Without the model's sizes, bytes and times would be made up: leave them empty.
  const timed = hasTimingFacts(manifest) ? 1 : NaN;
  const M = trace.layers;
  const T = trace.tokens;
  const k = trace.topK;
  const nDocs = countDocs(trace.doc);
  const rows: CsvRow[] = [];
  const steps = result.steps;
  const boot = o.bootstrap ?? null;
  result.combinations.forEach((c, index) => {
    const bytes = c.costs.expertBytes;
    // A demand miss fetches the low-precision copy under --miss-dtype.
    const missBytes = c.costs.missBytes ?? bytes;
    const miss = settings.miss;
    const slots = settings.budget === "global" ? c.capacity : c.capacity * M;
    const accuracy = result.accuracy.get(c.prefetch);
    const base: CsvRow = {
      policy: c.policy,
      budget: settings.budget,
      capacity: c.capacity,
      capacity_spec: c.policy === "swap" ? "k" : c.capacityText,
      capacity_bytes: slots * bytes,
      prefetch: c.prefetch,
      dtype: c.dtype,
      hardware: c.hardware,
      batch: settings.batch ?? 1,
      n_docs: nDocs,
      n_tokens: T,
      n_steps: steps,
      on_miss: miss?.onMiss ?? "transfer",
      tier: miss?.tier?.text ?? "none",
      miss_dtype: miss?.missDtype?.name ?? "none",
    };
    const metrics = (layers: number[]): CsvRow => {
      const sum = (a: Float64Array) => layers.reduce((s, l) => s + a[l]!, 0);
      const hits = sum(c.hits);
      const misses = sum(c.misses);
      const issued = sum(c.prefetchIssued);
      const stall = sum(c.stallMs);
      const all = layers.length === M;
      const ms = all ? c.totalMs : sum(c.layerMs);
      // The bootstrap's intervals of this row (index M: all layers).
      const ci = rowIntervals(boot, index, all ? M : layers[0]!, hits / (hits + misses), ms / T);
      let precision = NaN;
      let recall = NaN;
      if (accuracy) {
        let predicted = 0, correct = 0, opportunities = 0;
        for (const l of layers) {
          for (let d = 0; d < accuracy.depth; d++) {
            predicted += accuracy.predicted[l * accuracy.depth + d]!;
            correct += accuracy.correct[l * accuracy.depth + d]!;
            opportunities += accuracy.opportunities[l * accuracy.depth + d]!;
          }
        }
        precision = predicted > 0 ? correct / predicted : NaN;
        recall = opportunities > 0 ? correct / (opportunities * k) : NaN;
      }
      return {
        accesses: hits + misses,
        experts_per_step: sum(result.unionSum) / (steps * layers.length),
        hits,
        misses,
        hit_rate: hits / (hits + misses),
        hit_rate_ci_low: ci.hitLow,
        hit_rate_ci_high: ci.hitHigh,
        // Hits whose expert was resident when the router asked: prefetches
        // still in flight at their first use (late) are not.
        hit_rate_in_time: (timed * (hits - sum(c.prefetchLate))) / (hits + misses),
        loads_per_token: (misses + issued) / T,
        bytes_per_token: (timed * (misses * missBytes + issued * bytes)) / T,
        prefetch_issued: issued,
        prefetch_used: sum(c.prefetchUsed),
        prefetch_late: sum(c.prefetchLate),
        prefetch_wasted_bytes: timed * sum(c.prefetchWasted) * bytes,
        prefetch_precision: precision,
        prefetch_recall: recall,
        stall_ms_per_token: (timed * stall) / T,
        ms_per_token: (timed * ms) / T,
        ms_per_token_ci_low: timed * ci.msLow,
        ms_per_token_ci_high: timed * ci.msHigh,
        tokens_per_s: all ? (timed * 1000 * T) / ms : NaN,
        cpu_experts: c.miss ? sum(c.miss.cpuExperts) : 0,
        ram_hits: c.miss ? sum(c.miss.ramHits) : 0,
        ssd_reads: c.miss ? sum(c.miss.ssdReads) : 0,
        degraded_uses: c.miss ? sum(c.miss.degradedUses) : 0,
        // Per layer: tokens with a degraded expert there; all: at any layer.
        degraded_tokens: c.miss ? (all ? c.miss.degradedTokens : sum(c.miss.degradedSteps)) : 0,
      };
    };
    for (let l = 0; l < M; l++) {
      rows.push({
        ...base,
        layer: String(manifest.model.moe_layers[l]!),
        moe_layer: String(l),
        ...metrics([l]),
      });
    }
    rows.push({
      ...base,
      layer: "all",
      moe_layer: "all",
      ...metrics(Array.from({ length: M }, (_, l) => l)),
    });
  });
  return rows;
}

/** LRU for every capacity from the stack distances, Belady at the simulated capacities. */
export function missRatioRows(o: SimulationOutput): CsvRow[] {
  const { trace, settings, result, manifest } = o;
  const sd = result.stackDistances;
  const M = trace.layers;
  const nDocs = countDocs(trace.doc);
  const rows: CsvRow[] = [];
  const push = (policy: string, capacity: number, layer: string, accesses: number, hits: number) =>
    rows.push({
      policy,
      budget: settings.budget,
      capacity,
      batch: settings.batch ?? 1,
      layer: layer === "all" ? "all" : String(manifest.model.moe_layers[Number(layer)]!),
      moe_layer: layer,
      n_docs: nDocs,
      n_tokens: trace.tokens,
      accesses,
      hits,
      misses: accesses - hits,
      hit_rate: hits / accesses,
      miss_ratio: (accesses - hits) / accesses,
    });
  if (sd !== null) {
    // Running sums of each layer's histogram (whole counts, so exact): a sum
    // afresh per capacity cost 1 s at 8,192 capacities × 32 layers.
    const width = sd.maxDistance + 1;
    const hits = Float64Array.from({ length: M }, (_, l) => lruHits(sd, l, trace.topK - 1));
    for (let c = trace.topK; c <= sd.maxDistance; c++) {
      let all = 0;
      for (let l = 0; l < M; l++) {
        hits[l] = hits[l]! + sd.histogram[l * width + c]!;
        all += hits[l]!;
        push("lru", c, String(l), sd.accesses[l]!, hits[l]!);
      }
      push("lru", c, "all", trace.chosen.length, all);
    }
  }
  // Belady at the simulated capacities; so is LRU for a batched replay (no stack distances).
  const simulated = sd === null ? ["lru", "belady"] : ["belady"];
  for (const policy of simulated) {
    const seen = new Set<number>();
    for (const c of result.combinations) {
      if (c.policy !== policy || c.prefetch !== "none" || seen.has(c.capacity)) continue;
      seen.add(c.capacity);
      let all = 0, accesses = 0;
      for (let l = 0; l < M; l++) {
        all += c.hits[l]!;
        accesses += c.hits[l]! + c.misses[l]!;
        push(policy, c.capacity, String(l), c.hits[l]! + c.misses[l]!, c.hits[l]!);
      }
      push(policy, c.capacity, "all", accesses, all);
    }
  }
  return rows;
}

export function accuracyRows(o: SimulationOutput): CsvRow[] {
  const rows: CsvRow[] = [];
  const nDocs = countDocs(o.trace.doc);
  for (const [name, a] of o.result.accuracy) {
    for (let l = 0; l < o.trace.layers; l++) {
      for (let d = 1; d <= a.depth; d++) {
        const i = l * a.depth + d - 1;
        const opportunities = a.opportunities[i]!;
        if (opportunities === 0) continue;
        rows.push({
          prefetch: name,
          layer: o.manifest.model.moe_layers[l]!,
          moe_layer: l,
          lookahead: d,
          n_docs: nDocs,
          n_tokens: o.trace.tokens,
          opportunities,
          predicted: a.predicted[i]!,
          correct: a.correct[i]!,
          precision: a.predicted[i]! > 0 ? a.correct[i]! / a.predicted[i]! : NaN,
          recall: a.correct[i]! / (opportunities * o.trace.topK),
        });
      }
    }
  }
  return rows;
}

function countDocs(doc: Uint32Array): number {
  let n = 0;
  for (let i = 0; i < doc.length; i++) if (i === 0 || doc[i] !== doc[i - 1]) n++;
  return n;
}

export async function writeSimulation(out: string, o: SimulationOutput): Promise<void> {
  await Deno.mkdir(out, { recursive: true });
  const simRows = simulationRows(o);
  const mrcRows = missRatioRows(o);
  const accRows = accuracyRows(o);
  await writeCsv(`${out}/simulation.csv`, simRows, SIMULATION_COLUMNS);
  await writeCsv(`${out}/miss_ratio_curve.csv`, mrcRows, MRC_COLUMNS);
  await writeCsv(`${out}/prefetch_accuracy.csv`, accRows, ACCURACY_COLUMNS);
  const figures = simulationFigures(simRows, mrcRows, o);
  for (const f of figures) await writeFileAtomic(`${out}/${f.file}`, await renderSvg(f.spec));
  await writeFileAtomic(
    `${out}/figures.json`,
    JSON.stringify(
      figures.map(({ file, title, caption, section }) => ({ file, title, caption, section })),
      null,
      2,
    ) + "\n",
  );
  await writeFileAtomic(
    `${out}/simulation.json`,
    JSON.stringify(simulationFacts(o), null, 2) + "\n",
  );
  await writeFileAtomic(`${out}/README.md`, simulationReadme(o, figures));
}

export function simulationFacts(o: SimulationOutput): Record<string, unknown> {
  const { settings, manifest, trace } = o;
  const costs: Record<string, unknown>[] = [];
  const seen = new Set<string>();
  for (const c of o.result.combinations) {
    const key = `${c.dtype}|${c.hardware}`;
    if (seen.has(key)) continue;
    seen.add(key);
    costs.push({
      dtype: c.dtype,
      hardware: c.hardware,
      expert_bytes: c.costs.expertBytes,
      transfer_ms: c.costs.transferMs,
      expert_ms: c.costs.expertMs,
      attention_ms_per_layer: c.costs.attentionMs,
      other_ms_per_token: c.costs.otherMs,
      ...(c.costs.cpuExpertMs !== undefined ? { cpu_expert_ms: c.costs.cpuExpertMs } : {}),
      ...(c.costs.missBytes !== undefined
        ? { miss_expert_bytes: c.costs.missBytes, miss_transfer_ms: c.costs.missTransferMs }
        : {}),
      ...(c.costs.tier !== undefined
        ? {
          ram_experts: c.costs.tier.ramCapacity,
          ram_policy: c.costs.tier.ramPolicy,
          ssd_read_ms: c.costs.tier.ssdMs,
        }
        : {}),
    });
  }
  return {
    tool_version: TOOL_VERSION,
    created: new Date().toISOString(),
    trace: o.traceDir,
    model: manifest.model,
    capture: {
      corpus: manifest.capture.corpus,
      mode: manifest.capture.mode,
      lookahead: manifest.capture.lookahead,
    },
    totals: { n_tokens: trace.tokens, n_docs: countDocs(trace.doc), accesses: trace.chosen.length },
    sweep: {
      policy: settings.policies,
      capacity: settings.capacities.map((c) => c.text),
      prefetch: settings.prefetchers.map((p) => p.name),
      dtype: settings.dtypes.map((d) => d.name),
      hardware: settings.hardware.map((h) => h.name),
      budget: settings.budget,
      seed: settings.seed,
      batch: settings.batch ?? 1,
      on_miss: settings.miss?.onMiss ?? "transfer",
      tier: settings.miss?.tier
        ? {
          text: settings.miss.tier.text,
          ram: settings.miss.tier.ram,
          ram_policy: settings.miss.tier.ramPolicy,
          ssd: settings.miss.tier.ssd,
        }
        : null,
      miss_dtype: settings.miss?.missDtype?.name ?? null,
      bootstrap: o.bootstrap
        ? { method: "document resampling, percentile", resamples: o.bootstrap.resamples }
        : null,
    },
    steps: o.result.steps,
    hardware: settings.hardware,
    costs,
    replays: o.result.replays,
    combinations: o.result.combinations.length,
  };
}
