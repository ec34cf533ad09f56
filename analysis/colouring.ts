/**
 * token_colouring.html: an HTML fragment (no <html>/<head>, inline styles
 * only, no scripts) that colours each token of a few sample documents per
 * domain by its first-choice expert at a few layers, like Mixtral's Figure 8.
 */
import type { AnalysisResult } from "./run.ts";

/** Ten clearly different colours for E ≤ 10 (Tableau 10), evenly spaced hues beyond. */
const TABLEAU = [
  "#4e79a7",
  "#f28e2b",
  "#e15759",
  "#76b7b2",
  "#59a14f",
  "#edc948",
  "#b07aa1",
  "#ff9da7",
  "#9c755f",
  "#bab0ac",
];

export function expertColour(e: number, E: number): string {
  if (E <= TABLEAU.length) return TABLEAU[e]!;
  const hue = Math.round((360 * e) / E);
  const light = 62 + 14 * (e % 2);
  return `hsl(${hue}, 70%, ${light}%)`;
}

/** Black or white text, whichever reads better on the expert's colour. */
export function textColour(e: number, E: number): string {
  const c = expertColour(e, E);
  if (c.startsWith("#")) {
    const [r, g, b] = [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16) / 255);
    return 0.299 * r! + 0.587 * g! + 0.114 * b! < 0.5 ? "#fff" : "#000";
  }
  return "#000"; // the hsl() colours are light (62–76% lightness)
}

export function escapeHtml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(
    /"/g,
    "&quot;",
  );
}

/** A token's text as shown: byte-level BPE markers made visible as space and newline. */
function showPiece(piece: string): string {
  return piece.replace(/Ġ/g, " ").replace(/Ċ/g, "↵\n").replace(/▁/g, " ");
}

export function tokenColouringHtml(result: AnalysisResult): string {
  const E = result.dims.experts;
  const moe = result.manifest.model.moe_layers;
  const layers = result.sampleLayers.map((l) => moe[l]!);
  const out: string[] = [];
  out.push(
    `<div style="font-family: Helvetica, Arial, sans-serif; font-size: 14px; line-height: 1.6;">`,
  );
  if (result.manifest.capture.tokens_recorded === false) {
    // The pieces of such a trace are placeholders: colouring them would show nothing true.
    out.push(
      `<p style="margin: 0;">No token colouring: the trace records no token ids or text (capture.tokens_recorded is false).</p>`,
      `</div>`,
    );
    return out.join("\n") + "\n";
  }
  out.push(
    `<p style="margin: 0 0 8px 0;">Each token is coloured by the expert its router chose first at MoE layer ${
      layers.join(", ")
    }; hover a token for its expert. Runs of one colour show consecutive tokens kept on the same expert.</p>`,
  );
  out.push(`<div style="margin: 0 0 12px 0;">`);
  for (let e = 0; e < E; e++) {
    out.push(
      `<span style="display: inline-block; margin: 0 6px 4px 0; padding: 0 6px; border-radius: 3px; background: ${
        expertColour(e, E)
      }; color: ${textColour(e, E)};">expert ${e}</span>`,
    );
  }
  out.push(`</div>`);
  for (const { domain, docs } of result.samples) {
    for (const doc of docs) {
      result.sampleLayers.forEach((_, i) => {
        out.push(
          `<div style="margin: 0 0 14px 0;"><div style="font-weight: bold; margin: 0 0 4px 0;">${
            escapeHtml(domain)
          } · document ${doc.doc} · layer ${layers[i]}</div>`,
        );
        out.push(
          `<div style="white-space: pre-wrap; word-break: break-word; border: 1px solid #ddd; padding: 6px; font-family: Menlo, Consolas, monospace; font-size: 13px;">`,
        );
        const first = doc.first[i]!;
        // One span per token, with the shortest inline style that works (the fragment
        // holds domains × documents × layers × tokens spans). Spans are joined with
        // nothing between them: the box keeps white space, so a newline would show.
        const spans = doc.pieces.map((piece, t) => {
          const e = first[t]!;
          return `<span title="expert ${e}" style="background:${expertColour(e, E)};color:${
            textColour(e, E)
          }">${escapeHtml(showPiece(piece))}</span>`;
        });
        out.push(spans.join("") + `</div></div>`);
      });
    }
  }
  out.push(`</div>`);
  return out.join("\n") + "\n";
}
