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

/** What the expert-shares figure's two drawings (analyze's, report --layers') differ in. */
export interface ExpertSharesOptions {
  /** Rows of expert_shares.csv: layer, expert, domain, share, ci_low, ci_high. */
  values: readonly Record<string, unknown>[];
  experts: number;
  /** Pixels per layer facet. */
  width: number;
  layerTitle: string;
  expertAxis: Record<string, unknown>;
  /** The uniform-baseline rule's dash pattern, as the rest of its document draws baselines. */
  uniformDash: readonly number[];
}

/**
 * The expert-shares figure, faceted by layer: each domain's share of top-k
 * assignments per expert as bars, their intervals as rules, and the uniform
 * baseline 1/E as a dashed black rule.
 */
export function expertSharesSpec(o: ExpertSharesOptions): VegaLiteSpec {
  return {
    data: { values: o.values },
    facet: { column: { field: "layer", type: "ordinal", title: o.layerTitle } },
    spec: {
      width: o.width,
      height: 180,
      layer: [
        {
          mark: "bar",
          encoding: {
            x: { field: "expert", type: "ordinal", title: "expert", axis: o.expertAxis },
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
          mark: { type: "rule", strokeDash: o.uniformDash, color: "black" },
          encoding: { y: { datum: 1 / o.experts } },
        },
      ],
    },
  };
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
      `Share of top-${k} assignments going to each expert, per domain, at the first, middle and last MoE layer, with 95% intervals (document jackknife, t quantiles). The dashed line is the uniform baseline, the share 1/E = ${
        (1 / E).toFixed(4)
      } that uniform random routing gives; bars far from it mark experts a domain prefers or avoids.`,
    section: "shares",
    spec: {
      title: "Expert shares per domain (top-k assignments)",
      ...expertSharesSpec({
        values: shares,
        experts: E,
        width: shareWidth,
        layerTitle: "MoE layer",
        expertAxis: expertAxis(E),
        uniformDash: [4, 3],
      }),
    },
  });

  const repetition = clean(t.repetition!);
  figures.push({
    file: "repetition.svg",
    title: "Consecutive-token repetition per layer",
    caption:
      `Left: how often two consecutive tokens get the same first-choice expert; right: how often their top-${k} sets share at least one expert, per layer and domain (solid lines). Dashed black line: the uniform baseline, what independent uniform random routing gives (1/E and 1 − C(E−k,k)/C(E,k), 46.4% for top-2 of 8). Dotted line in each domain's colour: the marginal-preserving baseline, the same domain with its tokens shuffled within each document, which keeps every document's expert counts. A solid line above its dotted line is locality (routing follows the text); above the dashed line only, it is popular experts.`,
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
            mark: { type: "line", strokeDash: [2, 2] },
            encoding: {
              x: { field: "layer", type: "quantitative" },
              y: { field: "baseline_marginal", type: "quantitative" },
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
      `Share of top-${k} assignments per expert (columns) and MoE layer (rows), for the whole corpus ("all") and each domain. The uniform baseline, 1/E, would give the same colour everywhere; bright and dark cells are overused and underused experts.`,
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
        `For each pair, the lift over the uniform baseline, N(i,j)/N(i) ÷ (k−1)/(E−1): how much more often expert j is in a token's top-${k} when expert i is, than uniform random routing would give. 1 is chance; bright cells are experts that work together or are simply popular: lift_marginal in coactivation.csv divides by the popularity-adjusted baseline instead, which keeps each document's expert counts.`,
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
      `ExRep (= CoSMoEs H_norm, Eq. 5): the mean fraction of a token's ${k} experts that were not used by the previous token, per layer and domain, with 95% intervals (band). Dashed black line: the uniform baseline 1 − k/E of uniform random routing. Dotted line in each domain's colour: the marginal-preserving baseline, the same domain with its tokens shuffled within each document. Below the dotted line means fewer expert swaps than the documents' expert counts alone explain (locality an offloading cache can use).`,
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
          mark: { type: "line", strokeDash: [2, 2] },
          encoding: {
            x: { field: "layer", type: "quantitative" },
            y: { field: "baseline_marginal", type: "quantitative" },
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
    // Both orders of every pair, and each domain against the rest, one panel per layer.
    const cells = clean(t.domain_divergence!).flatMap((r) => {
      const star = (r.q_value as number) < 0.05 ? "*" : "";
      const cell = { layer: r.layer, jsd: r.jsd, star };
      return r.comparison === "pair"
        ? [
          { ...cell, row: r.domain_a, column: r.domain_b },
          { ...cell, row: r.domain_b, column: r.domain_a },
        ]
        : [{ ...cell, row: r.domain_a, column: "rest" }];
    });
    const names = result.domains.map((d) => d.name);
    const columns = [...names, ...(cells.some((c) => c.column === "rest") ? ["rest"] : [])];
    const side = Math.max(60, Math.min(200, names.length * 16));
    figures.push({
      file: "domain_divergence.svg",
      title: "Domain divergence per layer",
      caption:
        "One panel per MoE layer. Cell (row a, column b): the Jensen–Shannon divergence (bits, bias-corrected by the document jackknife) between the expert distributions of domains a and b; the column rest compares a with all other domains pooled, so the darkest cell of that column is the domain that differs most. The baseline is 0, no difference between domains (sampling noise alone gives about 0 after the correction); * marks a Benjamini–Hochberg q below 0.05 in the permutation test over document labels.",
      section: "divergence",
      spec: {
        title: "Jensen–Shannon divergence between domains, per layer",
        data: { values: cells },
        facet: { field: "layer", type: "ordinal", title: "MoE layer" },
        columns: Math.min(8, moe.length),
        spec: {
          width: side + (columns.length > names.length ? side / names.length : 0),
          height: side,
          layer: [
            {
              mark: "rect",
              encoding: {
                x: { field: "column", type: "nominal", title: null, sort: columns },
                y: { field: "row", type: "nominal", title: null, sort: names },
                color: {
                  field: "jsd",
                  type: "quantitative",
                  title: "JSD (bits)",
                  // Bias-corrected values a little below 0 are drawn as 0.
                  scale: { scheme: "blues", domainMin: 0, clamp: true },
                },
              },
            },
            {
              mark: { type: "text", fontSize: 10, color: "#c00" },
              encoding: {
                x: { field: "column", type: "nominal", sort: columns },
                y: { field: "row", type: "nominal", sort: names },
                text: { field: "star" },
              },
            },
          ],
        },
      },
    });
  }

  if (t.flow_information!.length > 0) {
    figures.push({
      file: "flow_information.svg",
      title: "Cross-layer flow",
      caption:
        "Mutual information (bits) between a token's first-choice expert at one MoE layer and at the next, bias-corrected by the jackknife over buckets of documents, with 95% intervals (band). The dashed line is the uniform baseline, 0 bits, what independent layers give (the plug-in in flow_information.csv sits above 0 even then); values far above it mean routing decisions carry over between layers.",
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
            mark: { type: "errorband", opacity: 0.2 },
            encoding: {
              x: {
                field: "layer",
                type: "quantitative",
                title: "MoE layer (to the next)",
                axis: LAYER_AXIS,
              },
              y: { field: "ci_low", type: "quantitative", title: "MI (bits)" },
              y2: { field: "ci_high" },
              color: { field: "domain", type: "nominal" },
            },
          },
          {
            mark: { type: "line", point: true },
            encoding: {
              x: { field: "layer", type: "quantitative" },
              y: { field: "mutual_information", type: "quantitative" },
              color: { field: "domain", type: "nominal" },
            },
          },
          {
            mark: { type: "rule", strokeDash: [4, 3], color: "black" },
            encoding: { y: { datum: 0 } },
          },
        ],
      },
    });
  }
  return figures;
}
