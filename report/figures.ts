/**
 * Figures the report draws itself from the CSVs (never recomputing a
 * statistic), with Vega-Lite like every moetrace figure (common/plot.ts):
 * load balance, router confidence, vocabulary specialisation and prefetch
 * accuracy, which analyze and simulate compute but do not plot; and the
 * figures that pick a layer or a capacity, redrawn for `report --layers` and
 * `--capacity`. Every caption says which baseline each line is.
 */
import { UsageError } from "../common/errors.ts";
import type { VegaLiteSpec } from "../common/plot.ts";
import { expertSharesSpec } from "../analysis/plots.ts";
import { numberIn, type Row, type Table } from "./inputs.ts";

export interface ReportFigure {
  /** The figure of the analysis or simulation folder this one replaces, if any. */
  replaces?: string;
  title: string;
  caption: string;
  section: string;
  spec: VegaLiteSpec;
}

/** Integer ticks for a quantitative layer axis. */
const LAYER_AXIS = { tickMinStep: 1, format: "d" };
const UNIFORM = "Dashed black line: the uniform baseline";
/** The dash of the report's uniform-baseline rules. */
const UNIFORM_DASH = [6, 4];

/** The uniform-baseline rule at `chance` as a layer, or no layer when there is none. */
function uniformRule(chance: number | null): VegaLiteSpec[] {
  return chance === null ? [] : [{
    mark: { type: "rule", strokeDash: UNIFORM_DASH, color: "black" },
    encoding: { y: { datum: chance } },
  }];
}

/** The caption's sentence for uniformRule: "Dashed black line: …, NAME = value: MEANING. ", or "". */
function uniformSentence(chance: number | null, name: string, meaning: string): string {
  return chance === null ? "" : `${UNIFORM}, ${name} = ${chance.toFixed(3)}: ${meaning}. `;
}

/** `rows` with `columns` as numbers (NaN → null, so Vega sees a missing value) and the rest as text. */
function values(table: Table, rows: Row[], columns: readonly string[]): Record<string, unknown>[] {
  return rows.map((r) => {
    const out: Record<string, unknown> = { ...r };
    for (const c of columns) {
      const v = numberIn(table, r, c);
      out[c] = Number.isFinite(v) ? v : null;
    }
    return out;
  });
}

/** Domain rows, or the corpus rows ("all") when the table has a single domain. */
function domainRows(rows: Row[]): Row[] {
  const domains = new Set(rows.map((r) => r.domain).filter((d) => d !== "all"));
  return rows.filter((r) => domains.size > 1 ? r.domain !== "all" : r.domain === "all");
}

/**
 * One panel per statistic of a per-layer table (load_balance.csv's columns):
 * each domain's value per layer with its 95% interval, the uniform baseline
 * dashed and, where the table has one, the shuffle baseline dotted.
 */
function perLayerSpec(
  data: Record<string, unknown>[],
  statistics: readonly string[],
  yTitle: string,
): VegaLiteSpec {
  const x = {
    field: "layer",
    type: "quantitative",
    title: "layer (the model's index)",
    axis: LAYER_AXIS,
  };
  const color = { field: "domain", type: "nominal", title: "domain" };
  return {
    data: { values: data },
    facet: { column: { field: "statistic", type: "nominal", title: null, sort: statistics } },
    resolve: { scale: { y: "independent" } },
    spec: {
      width: 240,
      height: 190,
      layer: [
        {
          mark: { type: "line", point: true },
          encoding: {
            x,
            y: { field: "value", type: "quantitative", title: yTitle, scale: { zero: false } },
            color,
          },
        },
        {
          mark: { type: "rule", opacity: 0.6 },
          encoding: {
            x,
            y: { field: "ci_low", type: "quantitative" },
            y2: { field: "ci_high" },
            color,
          },
        },
        {
          mark: { type: "line", strokeDash: [2, 2] },
          encoding: { x, y: { field: "baseline_marginal", type: "quantitative" }, color },
        },
        {
          mark: { type: "rule", strokeDash: [6, 4], color: "black" },
          encoding: { y: { field: "baseline", aggregate: "mean", type: "quantitative" } },
        },
      ],
    },
  };
}

const BALANCE = ["share_entropy", "max_vio"];
const CONFIDENCE = ["router_entropy", "topk_mass", "topk_margin"];
const STAT_COLUMNS = ["layer", "value", "ci_low", "ci_high", "baseline", "baseline_marginal"];

function loadBalanceFigures(load: Table): ReportFigure[] {
  const figures: ReportFigure[] = [];
  const balance = domainRows(
    load.rows.filter((r) => BALANCE.includes(r.statistic ?? "")),
  );
  if (balance.length > 0) {
    figures.push({
      title: "Load balance per layer",
      caption:
        `Left: the entropy of the expert shares (bits); right: MaxVio, how far the busiest expert is above the mean load; per layer and domain, with 95% intervals (vertical rules). ${UNIFORM}, perfect balance: log2 E bits and MaxVio 0. Lower entropy and higher MaxVio mean a few experts take most of the load.`,
      section: "load",
      spec: perLayerSpec(values(load, balance, STAT_COLUMNS), BALANCE, "value"),
    });
  }
  const confidence = domainRows(
    load.rows.filter((r) =>
      CONFIDENCE.includes(r.statistic ?? "") &&
      r.value !== ""
    ),
  );
  if (confidence.length > 0) {
    figures.push({
      title: "Router confidence per layer",
      caption:
        `From the router's full distribution (capture --probs): its entropy (bits), the probability it puts on the k chosen experts, and the gap between the k-th and (k+1)-th probabilities, per layer and domain, with 95% intervals. ${UNIFORM}, a router that is uniform over the E experts: log2 E bits, k/E and 0. A confident router has low entropy, high mass and a wide margin; a narrow margin means near-ties that small numeric differences can flip.`,
      section: "load",
      spec: perLayerSpec(values(load, confidence, STAT_COLUMNS), CONFIDENCE, "value"),
    });
  }
  return figures;
}

function vocabularyFigure(vocabulary: Table): ReportFigure[] {
  const rows = domainRows(vocabulary.rows);
  if (rows.length === 0) return [];
  const data = values(vocabulary, rows, [
    "layer",
    "mean_specialisation",
    "baseline",
    "baseline_marginal",
  ]);
  const x = {
    field: "layer",
    type: "quantitative",
    title: "layer (the model's index)",
    axis: LAYER_AXIS,
  };
  const color = { field: "domain", type: "nominal", title: "domain" };
  return [{
    title: "Vocabulary specialisation per layer",
    caption:
      "Solid: the mean over token ids (seen at least min_count times) of the largest share of an id's occurrences that go to one first-choice expert, per layer and domain. Dashed line in each domain's colour: the uniform baseline, what uniform random routing gives for ids with the same counts. Dotted line in each domain's colour: the shuffle baseline, the token ids shuffled within each document, what an id gets from the documents it appears in without being that token. Solid above dotted: experts specialise in tokens, not only in documents.",
    section: "vocabulary",
    spec: {
      width: 420,
      height: 240,
      data: { values: data },
      layer: [
        {
          mark: { type: "line", point: true },
          encoding: {
            x,
            y: {
              field: "mean_specialisation",
              type: "quantitative",
              title: "mean specialisation",
              scale: { domain: [0, 1] },
            },
            color,
          },
        },
        {
          mark: { type: "line", strokeDash: [6, 4] },
          encoding: { x, y: { field: "baseline", type: "quantitative" }, color },
        },
        {
          mark: { type: "line", strokeDash: [2, 2] },
          encoding: { x, y: { field: "baseline_marginal", type: "quantitative" }, color },
        },
      ],
    },
  }];
}

function prefetchFigure(accuracy: Table, k: number, E: number): ReportFigure[] {
  if (accuracy.rows.length === 0) return [];
  const rows = values(accuracy, accuracy.rows, ["layer", "lookahead", "precision", "recall"])
    .flatMap((r) =>
      (["precision", "recall"] as const).map((measure) => ({
        layer: r.layer,
        prefetcher: `${r.prefetch} (lookahead ${r.lookahead})`,
        measure,
        value: r[measure],
      }))
    );
  const chance = Number.isFinite(k / E) ? k / E : null;
  return [{
    title: "Prefetch accuracy per layer",
    caption:
      `Left: precision, the fraction of experts a prefetcher predicted that the target layer then chose; right: recall, the fraction of chosen experts it had predicted; per target layer, one line per prefetcher and lookahead. ${
        uniformSentence(chance, "k/E", "a prefetcher guessing k experts uniformly at random")
      }The oracle, which reads the trace, is the bound at 1.`,
    section: "cache",
    spec: {
      data: { values: rows },
      facet: { column: { field: "measure", type: "nominal", title: null } },
      spec: {
        width: 260,
        height: 200,
        layer: [
          {
            mark: { type: "line", point: true },
            encoding: {
              x: { field: "layer", type: "quantitative", title: "target layer", axis: LAYER_AXIS },
              y: {
                field: "value",
                type: "quantitative",
                title: "fraction",
                scale: { domain: [0, 1] },
              },
              color: {
                field: "prefetcher",
                type: "nominal",
                title: "prefetcher",
                legend: { labelLimit: 320 },
              },
            },
          },
          ...uniformRule(chance),
        ],
      },
    },
  }];
}

/** The layers `--layers` names, each checked against `table`'s layer column. */
function chosenLayers(table: Table, layers: readonly string[]): Set<string> {
  const present = [...new Set(table.rows.map((r) => r.layer ?? ""))];
  for (const layer of layers) {
    if (!present.includes(layer)) {
      throw new UsageError(
        `--layers of report: layer ${
          JSON.stringify(layer)
        } is not in ${table.path}; it has layers ${present.join(", ")}.`,
      );
    }
  }
  return new Set(layers);
}

function layerFigures(
  shares: Table | null,
  coactivation: Table | null,
  layers: string[],
  E: number,
): ReportFigure[] {
  const figures: ReportFigure[] = [];
  if (shares) {
    const chosen = chosenLayers(shares, layers);
    const rows = domainRows(
      shares.rows.filter((r) => r.choice === "top_k" && chosen.has(r.layer ?? "")),
    );
    figures.push({
      replaces: "expert_shares.svg",
      title: `Expert shares per domain at layer${layers.length > 1 ? "s" : ""} ${
        layers.join(", ")
      }`,
      caption:
        `Share of top-k assignments going to each expert, per domain, at the layers chosen with --layers, with 95% intervals (document jackknife). ${UNIFORM}, the share 1/E that uniform random routing gives; bars far from it mark experts a domain prefers or avoids.`,
      section: "shares",
      spec: expertSharesSpec({
        values: values(shares, rows, ["expert", "share", "ci_low", "ci_high"]),
        experts: E,
        width: Math.max(160, Math.min(520, E * 5 * new Set(rows.map((r) => r.domain)).size)),
        layerTitle: "layer",
        expertAxis: { labelAngle: 0 },
        uniformDash: UNIFORM_DASH,
      }),
    });
  }
  if (coactivation && coactivation.rows.length > 0) {
    const chosen = chosenLayers(coactivation, layers);
    const rows = coactivation.rows.filter((r) => r.domain === "all" && chosen.has(r.layer ?? ""));
    figures.push({
      replaces: "coactivation.svg",
      title: `Expert co-activation at layer${layers.length > 1 ? "s" : ""} ${layers.join(", ")}`,
      caption:
        "For each pair, the lift over the uniform baseline (k−1)/(E−1): how much more often expert j is in a token's top-k when expert i is, than uniform random routing gives. 1 (the middle colour) is the baseline; lift_marginal in coactivation.csv divides by the within-document baseline that keeps each document's expert counts instead.",
      section: "coactivation",
      spec: {
        data: { values: values(coactivation, rows, ["expert_i", "expert_j", "lift"]) },
        facet: { column: { field: "layer", type: "ordinal", title: "layer" } },
        spec: {
          width: Math.max(160, Math.min(360, E * 8)),
          height: Math.max(160, Math.min(360, E * 8)),
          mark: "rect",
          encoding: {
            x: { field: "expert_j", type: "ordinal", title: "expert j" },
            y: { field: "expert_i", type: "ordinal", title: "expert i" },
            color: {
              field: "lift",
              type: "quantitative",
              title: "lift",
              scale: { scheme: "blueorange", domainMid: 1 },
            },
          },
        },
      },
    });
  }
  return figures;
}

function capacityFigure(simulation: Table, capacity: string, E: number): ReportFigure {
  const perLayer = simulation.rows.filter((r) => r.layer !== "all");
  const capacities = [...new Set(perLayer.map((r) => r.capacity ?? ""))];
  const here = perLayer.filter((r) => r.capacity === capacity || r.capacity_spec === capacity);
  if (here.length === 0) {
    throw new UsageError(
      `--capacity of report: ${
        JSON.stringify(capacity)
      } is not in ${simulation.path}; it has capacities ${capacities.join(", ")}.`,
    );
  }
  const first = here[0]!;
  const rows = here.filter((r) =>
    r.prefetch === "none" && r.dtype === first.dtype && r.hardware === first.hardware &&
    r.budget === first.budget
  );
  const slots = numberIn(simulation, first, "capacity");
  const chance = first.budget === "per-layer" && Number.isFinite(slots / E)
    ? Math.min(1, slots / E)
    : null;
  return {
    replaces: "hit_rate_per_layer.svg",
    title: `Hit rate per layer at capacity ${capacity}`,
    caption:
      `One line per policy across the layers at capacity ${capacity} (${first.budget} budget, no prefetch); Belady, the offline optimum, is the bound. ${
        uniformSentence(
          chance,
          "C/E",
          "the hit rate a cache of C experts gets when routing is uniformly random",
        )
      }A layer far below the others is where extra cache space pays most.`,
    section: "cache",
    spec: {
      width: 420,
      height: 240,
      data: { values: values(simulation, rows, ["layer", "hit_rate"]) },
      layer: [
        {
          mark: { type: "line", point: true },
          encoding: {
            x: { field: "layer", type: "quantitative", title: "layer", axis: LAYER_AXIS },
            y: {
              field: "hit_rate",
              type: "quantitative",
              title: "hit rate",
              scale: { domain: [0, 1] },
            },
            color: { field: "policy", type: "nominal", title: "policy" },
          },
        },
        ...uniformRule(chance),
      ],
    },
  };
}

export interface FigureTables {
  load: Table | null;
  vocabulary: Table | null;
  shares: Table | null;
  coactivation: Table | null;
  simulation: Table | null;
  prefetch: Table | null;
}

export interface FigureChoices {
  layers?: string[];
  capacity?: string;
}

/** The report's own figures, given the tables present and the layers and capacity chosen. */
export function reportFigures(
  tables: FigureTables,
  model: { experts: number; topK: number },
  choices: FigureChoices,
): ReportFigure[] {
  const E = model.experts;
  const figures = [
    ...(tables.load ? loadBalanceFigures(tables.load) : []),
    ...(tables.vocabulary ? vocabularyFigure(tables.vocabulary) : []),
    ...(tables.prefetch ? prefetchFigure(tables.prefetch, model.topK, E) : []),
  ];
  if (choices.layers && choices.layers.length > 0) {
    figures.push(...layerFigures(tables.shares, tables.coactivation, choices.layers, E));
  }
  if (choices.capacity !== undefined) {
    if (!tables.simulation) {
      throw new UsageError("--capacity of report needs the simulation folder's simulation.csv.");
    }
    figures.push(capacityFigure(tables.simulation, choices.capacity, E));
  } else if (tables.simulation) {
    // simulate's own figure at its middle capacity, redrawn with the uniform-routing baseline.
    const middle = middleCapacity(tables.simulation);
    if (middle !== undefined) figures.push(capacityFigure(tables.simulation, middle, E));
  }
  return figures;
}

/** The capacity simulate draws hit rate per layer at: the middle of the swept ones (swap aside). */
function middleCapacity(simulation: Table): string | undefined {
  const capacities = [
    ...new Set(
      simulation.rows.filter((r) => r.policy !== "swap" && r.layer !== "all").map((r) =>
        r.capacity ?? ""
      ),
    ),
  ].filter((c) => c !== "" && Number.isFinite(Number(c))).sort((a, b) => Number(a) - Number(b));
  return capacities[Math.floor((capacities.length - 1) / 2)];
}
