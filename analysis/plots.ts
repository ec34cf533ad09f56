/**
 * The analysis figures as Vega-Lite specs (rendered by common/plot.ts) and
 * their entries in figures.json, in display order.
 */
import type { CsvRow } from "../common/csv.ts";
import type { VegaLiteSpec } from "../common/plot.ts";
import type { AnalysisResult } from "./run.ts";
import { ALL } from "./tables.ts";

export interface Figure {
  file: string;
  title: string;
  caption: string;
  section: string;
  spec: VegaLiteSpec;
}

/** Integer ticks for a quantitative layer axis. */
const LAYER_AXIS = { tickMinStep: 1, format: "d" };

/** An expert axis: every label up to 16 experts, else every (E/8)-th, horizontal. */
function expertAxis(E: number): Record<string, unknown> {
  if (E <= 16) return { labelAngle: 0 };
  const step = Math.ceil(E / 8);
  return { labelAngle: 0, values: Array.from({ length: Math.ceil(E / step) }, (_, i) => i * step) };
}

/** NaN → null so Vega sees missing values, not strings. */
function clean(rows: readonly CsvRow[]): CsvRow[] {
  return rows.map((r) => {
    const out: CsvRow = {};
    for (const [k, v] of Object.entries(r)) {
      out[k] = typeof v === "number" && !Number.isFinite(v) ? null : v;
    }
    return out;
  });
}

/** Domain rows, or the corpus row when there is a single domain. */
function domainRows(rows: readonly CsvRow[], result: AnalysisResult): CsvRow[] {
  const many = result.domains.length > 1;
  return rows.filter((r) => many ? r.domain !== ALL : r.domain === ALL);
}

export function buildFigures(result: AnalysisResult): Figure[] {
  const { experts: E, topK: k } = result.dims;
  const moe = result.manifest.model.moe_layers;
  const chosen = new Set(result.sampleLayers.map((l) => moe[l]!));
  const t = result.tables;
  const figures: Figure[] = [];
  const shareWidth = Math.max(160, Math.min(520, E * Math.max(1, result.domains.length) * 5));

  const shares = clean(domainRows(
    t.expert_shares!.filter((r) => r.choice === "top_k" && chosen.has(r.layer as number)),
    result,
  ));
  figures.push({
    file: "expert_shares.svg",
    title: "Expert shares per domain",
    caption:
      `Share of top-${k} assignments going to each expert, per domain, at the first, middle and last MoE layer, with 95% bootstrap intervals. The dashed line is the uniform share 1/E = ${
        (1 / E).toFixed(4)
      }; bars far from it mark experts a domain prefers or avoids.`,
    section: "shares",
    spec: {
      title: "Expert shares per domain (top-k assignments)",
      data: { values: shares },
      facet: { column: { field: "layer", type: "ordinal", title: "MoE layer" } },
      spec: {
        width: shareWidth,
        height: 180,
        layer: [
          {
            mark: "bar",
            encoding: {
              x: { field: "expert", type: "ordinal", title: "expert", axis: expertAxis(E) },
              xOffset: { field: "domain" },
              y: { field: "share", type: "quantitative", title: "share of assignments" },
              color: { field: "domain", type: "nominal", title: "domain" },
            },
          },
          {
            mark: { type: "rule", color: "#444" },
            encoding: {
              x: { field: "expert", type: "ordinal" },
              xOffset: { field: "domain" },
              y: { field: "ci_low", type: "quantitative" },
              y2: { field: "ci_high" },
            },
          },
          {
            mark: { type: "rule", strokeDash: [4, 3], color: "black" },
            encoding: { y: { datum: 1 / E } },
          },
        ],
      },
    },
  });

  const repetition = clean(t.repetition!);
  figures.push({
    file: "repetition.svg",
    title: "Consecutive-token repetition per layer",
    caption:
      `Left: how often two consecutive tokens get the same first-choice expert; right: how often their top-${k} sets share at least one expert, per layer and domain. Dashed lines are what independent random routing gives (1/E and 1 − C(E−k,k)/C(E,k)); lines above them mean routing follows the text, not chance.`,
    section: "repetition",
    spec: {
      title: "Repetition of expert assignments between consecutive tokens",
      data: { values: domainRows(repetition, result) },
      facet: { column: { field: "statistic", type: "nominal", title: null } },
      resolve: { scale: { y: "independent" } },
      spec: {
        width: 260,
        height: 200,
        layer: [
          {
            mark: { type: "line", point: true },
            encoding: {
              x: { field: "layer", type: "quantitative", title: "MoE layer", axis: LAYER_AXIS },
              y: {
                field: "value",
                type: "quantitative",
                title: "proportion of pairs",
                scale: { zero: false },
              },
              color: { field: "domain", type: "nominal" },
            },
          },
          {
            mark: { type: "rule", strokeDash: [4, 3], color: "black" },
            encoding: { y: { field: "baseline", aggregate: "mean", type: "quantitative" } },
          },
        ],
      },
    },
  });

  const heat = clean(t.expert_shares!.filter((r) => r.choice === "top_k"));
  figures.push({
    file: "layer_expert_heatmap.svg",
    title: "Expert shares by layer",
    caption:
      `Share of top-${k} assignments per expert (columns) and MoE layer (rows), for the whole corpus ("all") and each domain. Uniform routing gives the same colour everywhere (1/E); bright and dark cells are overused and underused experts.`,
    section: "shares",
    spec: {
      title: "Expert share by layer and expert",
      data: { values: heat },
      facet: {
        field: "domain",
        type: "nominal",
        title: null,
        sort: [ALL, ...result.domains.map((d) => d.name)],
      },
      columns: 4,
      spec: {
        width: Math.max(120, Math.min(400, E * 10)),
        height: Math.max(80, Math.min(400, moe.length * 10)),
        mark: "rect",
        encoding: {
          x: {
            field: "expert",
            type: "ordinal",
            title: "expert",
            axis: expertAxis(E),
          },
          y: { field: "layer", type: "ordinal", title: "MoE layer" },
          color: {
            field: "share",
            type: "quantitative",
            title: "share",
            scale: { scheme: "viridis" },
          },
        },
      },
    },
  });

  if (k >= 2) {
    const coact = clean(
      t.coactivation!.filter((r) => r.domain === ALL && chosen.has(r.layer as number)),
    );
    figures.push({
      file: "coactivation.svg",
      title: "Expert co-activation",
      caption:
        `For each pair, the lift N(i,j)/N(i) ÷ (k−1)/(E−1): how much more often expert j is in a token's top-${k} when expert i is, than random routing would give. 1 is chance; bright cells are experts that work together.`,
      section: "coactivation",
      spec: {
        title: "Co-activation lift (all domains)",
        data: { values: coact },
        facet: { column: { field: "layer", type: "ordinal", title: "MoE layer" } },
        spec: {
          width: Math.max(160, Math.min(360, E * 8)),
          height: Math.max(160, Math.min(360, E * 8)),
          mark: "rect",
          encoding: {
            x: { field: "expert_j", type: "ordinal", title: "expert j", axis: expertAxis(E) },
            y: { field: "expert_i", type: "ordinal", title: "expert i", axis: expertAxis(E) },
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

  const exRep = clean(domainRows(t.cosmoes!.filter((r) => r.statistic === "ex_rep"), result));
  figures.push({
    file: "replacement_ratio.svg",
    title: "Expert replacement ratio per layer",
    caption:
      `ExRep: the mean fraction of a token's ${k} experts that were not used by the previous token, per layer and domain, with 95% bootstrap intervals. The dashed line is random routing (1 − k/E); lower means fewer expert swaps for an offloading cache.`,
    section: "cosmoes",
    spec: {
      title: "Expert replacement ratio (ExRep)",
      data: { values: exRep },
      width: 420,
      height: 220,
      layer: [
        {
          mark: { type: "errorband", opacity: 0.2 },
          encoding: {
            x: { field: "layer", type: "quantitative", title: "MoE layer", axis: LAYER_AXIS },
            y: { field: "ci_low", type: "quantitative", title: "ExRep" },
            y2: { field: "ci_high" },
            color: { field: "domain", type: "nominal" },
          },
        },
        {
          mark: { type: "line", point: true },
          encoding: {
            x: { field: "layer", type: "quantitative" },
            y: { field: "value", type: "quantitative", scale: { zero: false } },
            color: { field: "domain", type: "nominal" },
          },
        },
        {
          mark: { type: "rule", strokeDash: [4, 3], color: "black" },
          encoding: { y: { datum: 1 - k / E } },
        },
      ],
    },
  });

  if (t.domain_divergence!.length > 0) {
    figures.push({
      file: "domain_divergence.svg",
      title: "Domain divergence per layer",
      caption:
        "Jensen–Shannon divergence (bits) between two domains' expert distributions, per layer; filled points have a Benjamini–Hochberg q-value below 0.05. The dashed line is the mean divergence when document labels are permuted, i.e. what sampling noise alone gives.",
      section: "divergence",
      spec: {
        title: "Jensen–Shannon divergence between domains",
        data: {
          values: clean(t.domain_divergence!).map((r) => ({
            ...r,
            significant: (r.q_value as number) < 0.05 ? "q < 0.05" : "q ≥ 0.05",
          })),
        },
        width: 420,
        height: 220,
        layer: [
          {
            mark: { type: "line" },
            encoding: {
              x: { field: "layer", type: "quantitative", title: "MoE layer", axis: LAYER_AXIS },
              y: { field: "jsd", type: "quantitative", title: "JSD (bits)" },
              color: { field: "domain", type: "nominal", title: "pair" },
            },
          },
          {
            mark: { type: "point", size: 40 },
            encoding: {
              x: { field: "layer", type: "quantitative" },
              y: { field: "jsd", type: "quantitative" },
              color: { field: "domain", type: "nominal" },
              fill: {
                field: "significant",
                type: "nominal",
                scale: { domain: ["q < 0.05", "q ≥ 0.05"], range: ["#333", "white"] },
                title: "BH",
              },
            },
          },
          {
            mark: { type: "line", strokeDash: [4, 3], color: "black" },
            encoding: {
              x: { field: "layer", type: "quantitative" },
              y: { field: "baseline", aggregate: "mean", type: "quantitative" },
            },
          },
        ],
      },
    });
  }

  if (t.flow_information!.length > 0) {
    figures.push({
      file: "flow_information.svg",
      title: "Cross-layer flow",
      caption:
        "Mutual information (bits) between a token's first-choice expert at one MoE layer and at the next, with 95% bootstrap intervals. The dashed line is the plug-in bias that independent layers would show; values far above it mean routing decisions carry over between layers.",
      section: "flow",
      spec: {
        title: "Mutual information between consecutive layers' first choices",
        data: {
          values: clean(
            domainRows(t.flow_information!, result).length > 0
              ? domainRows(t.flow_information!, result)
              : t.flow_information!,
          ),
        },
        width: 420,
        height: 220,
        layer: [
          {
            mark: { type: "line", point: true },
            encoding: {
              x: {
                field: "layer",
                type: "quantitative",
                title: "MoE layer (to the next)",
                axis: LAYER_AXIS,
              },
              y: { field: "mutual_information", type: "quantitative", title: "MI (bits)" },
              color: { field: "domain", type: "nominal" },
            },
          },
          {
            mark: { type: "line", strokeDash: [4, 3], color: "black" },
            encoding: {
              x: { field: "layer", type: "quantitative" },
              y: { field: "baseline", aggregate: "max", type: "quantitative" },
            },
          },
        ],
      },
    });
  }
  return figures;
}
