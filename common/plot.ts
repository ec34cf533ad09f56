/**
 * Vega-Lite specs rendered headless to SVG strings (no browser, no canvas):
 * the one way moetrace draws figures.
 */
import * as vega from "vega";
import * as vegaLite from "vega-lite";

/** A Vega-Lite specification (kept loose: specs are plain JSON). */
export type VegaLiteSpec = Record<string, unknown>;

/** Default look: readable in a report and on a laptop screen. */
const CONFIG = {
  font: "Helvetica, Arial, sans-serif",
  view: { stroke: "#ddd" },
  axis: { labelFontSize: 11, titleFontSize: 12, gridColor: "#eee" },
  legend: { labelFontSize: 11, titleFontSize: 12 },
  title: { fontSize: 14, anchor: "start" },
};

// deno-lint-ignore no-control-regex -- the characters XML 1.0 forbids
const XML_INVALID = /[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g;

/** Compiles a Vega-Lite spec and renders it to a standalone SVG document. */
export async function renderSvg(spec: VegaLiteSpec): Promise<string> {
  const full = {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    config: CONFIG,
    ...spec,
  };
  const compiled = vegaLite.compile(full as unknown as vegaLite.TopLevelSpec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: "none" });
  try {
    // Labels come from strangers (domain names, pieces): a control character other than
    // tab and newline is not allowed in XML and would make the whole figure invalid.
    return (await view.toSVG()).replace(XML_INVALID, "\uFFFD");
  } finally {
    view.finalize();
  }
}
