/** The simulation's figures as Vega-Lite specs, in display order, with their captions. */
import type { CsvRow } from "../common/csv.ts";
import type { VegaLiteSpec } from "../common/plot.ts";
import type { SimulationOutput } from "./simulate_output.ts";

export interface SimulationFigure {
  file: string;
  title: string;
  caption: string;
  section: "cache";
  spec: VegaLiteSpec;
}

/** Integer ticks for capacities. */
const CAPACITY_AXIS = { tickMinStep: 1, format: "d" };

function clean(rows: readonly CsvRow[]): CsvRow[] {
  return rows.map((r) => {
    const out: CsvRow = {};
    for (const [key, v] of Object.entries(r)) {
      out[key] = typeof v === "number" && !Number.isFinite(v) ? null : v;
    }
    return out;
  });
}

export function simulationFigures(
  simRows: readonly CsvRow[],
  mrcRows: readonly CsvRow[],
  o: SimulationOutput,
): SimulationFigure[] {
  const s = o.settings;
  const prefetchNames = s.prefetchers.map((p) => p.name);
  const basePrefetch = prefetchNames.includes("none") ? "none" : prefetchNames[0]!;
  const dtype = s.dtypes[0]!.name;
  const hardware = s.hardware[0]!.name;
  const unit = s.budget === "global" ? "experts in all layers" : "experts per layer";
  const figures: SimulationFigure[] = [];
  const allRows = simRows.filter((r) => r.layer === "all" && r.dtype === dtype);
  const policyColor = { field: "policy", type: "nominal", title: "policy", sort: s.policies };
  const dash = {
    condition: { test: "datum.policy === 'belady'", value: [5, 3] },
    value: [1, 0],
  };

  figures.push({
    file: "hit_rate_vs_capacity.svg",
    title: "Hit rate against cache capacity",
    caption:
      `Each line is a cache policy (prefetch ${basePrefetch}); higher is better. Belady (dashed) is the best any policy can do without knowing the future better, so the gap to it is what a smarter online policy could still win; swap keeps only the current k experts and shows as one point.`,
    section: "cache",
    spec: {
      width: 420,
      height: 260,
      data: {
        values: clean(
          allRows.filter((r) => r.prefetch === basePrefetch && r.hardware === hardware),
        ),
      },
      mark: { type: "line", point: true },
      encoding: {
        x: {
          field: "capacity",
          type: "quantitative",
          title: `capacity (${unit})`,
          scale: { zero: false },
          axis: CAPACITY_AXIS,
        },
        y: {
          field: "hit_rate",
          type: "quantitative",
          title: "hit rate",
          scale: { domain: [0, 1] },
        },
        color: policyColor,
        strokeDash: dash,
      },
    },
  });

  const timePolicy = s.policies.includes("lru") ? "lru" : s.policies[0]!;
  figures.push({
    file: "ms_per_token_vs_capacity.svg",
    title: "Latency per token against capacity, per prefetcher",
    caption:
      `Predicted milliseconds per token for ${timePolicy} with each prefetcher (${dtype} experts${
        s.hardware.length > 1 ? ", one panel per machine" : ` on ${hardware}`
      }); lower is better. The distance between a line and the flat floor it approaches is time spent waiting for expert uploads.`,
    section: "cache",
    spec: {
      data: { values: clean(allRows.filter((r) => r.policy === timePolicy)) },
      ...(s.hardware.length > 1
        ? {
          facet: {
            column: { field: "hardware", type: "nominal", sort: s.hardware.map((h) => h.name) },
          },
          spec: msSpec(unit, prefetchNames),
          resolve: { scale: { y: "independent" } },
        }
        : msSpec(unit, prefetchNames)),
    },
  });

  const capacities = [
    ...new Set(allRows.filter((r) => r.policy !== "swap").map((r) => r.capacity as number)),
  ]
    .sort((a, b) => a - b);
  const middle = capacities[Math.floor((capacities.length - 1) / 2)] ?? 0;
  figures.push({
    file: "hit_rate_per_layer.svg",
    title: `Hit rate per layer at capacity ${middle}`,
    caption:
      `One line per policy across the MoE layers at capacity ${middle} (${unit}, prefetch ${basePrefetch}). Layers whose routing repeats more from token to token sit higher; a layer far below the others is where extra cache space pays most.`,
    section: "cache",
    spec: {
      width: 420,
      height: 240,
      data: {
        values: clean(
          simRows.filter((r) =>
            r.layer !== "all" && r.dtype === dtype && r.hardware === hardware &&
            r.prefetch === basePrefetch && (r.capacity === middle || r.policy === "swap")
          ).map((r) => ({ ...r, layer: Number(r.layer) })),
        ),
      },
      mark: { type: "line", point: true },
      encoding: {
        x: {
          field: "layer",
          type: "quantitative",
          title: "layer (the model's index)",
          axis: { tickMinStep: 1, format: "d" },
        },
        y: {
          field: "hit_rate",
          type: "quantitative",
          title: "hit rate",
          scale: { domain: [0, 1] },
        },
        color: policyColor,
        strokeDash: dash,
      },
    },
  });

  figures.push({
    file: "miss_ratio_curve.svg",
    title: "Miss-ratio curve",
    caption: `The fraction of expert accesses that must be uploaded, for LRU at ${
      o.result.stackDistances
        ? "every capacity (from one stack-distance pass)"
        : "the simulated capacities"
    } and for Belady at the simulated capacities. Where the curve flattens, more cache memory buys little.`,
    section: "cache",
    spec: {
      width: 420,
      height: 240,
      data: { values: clean(mrcRows.filter((r) => r.layer === "all")) },
      mark: { type: "line", point: true },
      encoding: {
        x: {
          field: "capacity",
          type: "quantitative",
          title: `capacity (${unit})`,
          scale: { zero: false },
          axis: CAPACITY_AXIS,
        },
        y: {
          field: "miss_ratio",
          type: "quantitative",
          title: "miss ratio",
          scale: { domain: [0, 1] },
        },
        color: { field: "policy", type: "nominal" },
        strokeDash: dash,
      },
    },
  });
  return figures;
}

function msSpec(unit: string, prefetchers: string[]): VegaLiteSpec {
  return {
    width: 380,
    height: 240,
    mark: { type: "line", point: true },
    encoding: {
      x: {
        field: "capacity",
        type: "quantitative",
        title: `capacity (${unit})`,
        scale: { zero: false },
        axis: CAPACITY_AXIS,
      },
      y: {
        field: "ms_per_token",
        type: "quantitative",
        title: "ms per token",
        scale: { zero: true },
      },
      color: { field: "prefetch", type: "nominal", title: "prefetch", sort: prefetchers },
    },
  };
}
