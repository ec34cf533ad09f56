/** HTML pieces the report's sections share: escaping, number formats, tables, the style sheet. */

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Base64 of bytes (btoa takes a binary string; built in chunks to bound the argument count). */
export function encodeBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** A fraction in percent with one decimal ("31.1%"); "–" when undefined. */
export function percent(fraction: number): string {
  return Number.isFinite(fraction) ? `${(100 * fraction).toFixed(1)}%` : "–";
}

/** A number to `digits` significant digits; "–" when undefined. */
export function significant(value: number, digits = 4): string {
  return Number.isFinite(value) ? value.toPrecision(digits) : "–";
}

/** An interval "[low, high]" in `format`, or "" when either end is undefined. */
export function interval(low: number, high: number, format: (v: number) => string): string {
  return Number.isFinite(low) && Number.isFinite(high) ? `[${format(low)}, ${format(high)}]` : "";
}

/** An HTML table of already formatted cells (escaped here). */
export function htmlTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  return `<div class="table-wrap"><table class="data"><thead><tr>${
    header.map((c) => `<th>${escapeHtml(c)}</th>`).join("")
  }</tr></thead><tbody>${
    rows.map((r) => `<tr>${r.map((v) => `<td>${escapeHtml(v)}</td>`).join("")}</tr>`).join("")
  }</tbody></table></div>`;
}

/**
 * The report's content security policy: nothing loads from anywhere (no
 * scripts, no network), images only from data: URIs, inline styles only.
 */
export const CONTENT_SECURITY_POLICY =
  "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-src 'self'";

export const STYLE = `
body { font-family: Helvetica, Arial, sans-serif; margin: 0; color: #222; background: #fafafa; }
header { background: #1f2d3d; color: #fff; padding: 16px 32px; }
header h1 { margin: 0 0 8px; font-size: 22px; }
nav a { color: #cfe3ff; text-decoration: none; font-size: 13px; }
main { max-width: 1200px; margin: 0 auto; padding: 8px 32px 32px; }
section { background: #fff; border: 1px solid #e3e3e3; border-radius: 6px; padding: 12px 20px; margin: 18px 0; }
section#findings { border: 2px solid #2b6cb0; background: #f5f9ff; }
section#findings li { margin: 6px 0; line-height: 1.45; }
h2 { font-size: 19px; margin: 6px 0 8px; }
h3 { font-size: 15px; }
p.intro { color: #444; margin-top: 0; }
figure { margin: 16px 0; display: inline-block; vertical-align: top; max-width: 100%; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 13px; color: #333; max-width: 720px; margin-top: 4px; }
span.how { color: #666; font-style: italic; }
table { border-collapse: collapse; font-size: 12px; }
table.facts th { text-align: left; padding: 3px 14px 3px 0; color: #555; }
table.data th, table.data td { border: 1px solid #ddd; padding: 3px 6px; text-align: right; }
table.data th { background: #f0f3f7; }
.table-wrap { overflow-x: auto; }
div.scroll { max-height: 420px; overflow-y: auto; border: 1px solid #eee; }
dl.definitions { font-size: 13px; columns: 2; column-gap: 32px; }
dl.definitions dt { font-weight: bold; font-family: monospace; break-after: avoid; }
dl.definitions dd { margin: 0 0 8px 12px; color: #333; break-inside: avoid; }
iframe.colouring { width: 100%; height: 640px; border: 1px solid #eee; }
ul.csvs { columns: 2; font-size: 13px; }
footer { text-align: center; font-size: 12px; color: #777; padding: 16px; }
p.note { font-size: 12px; color: #666; }
`;
