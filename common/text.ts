/**
 * Text from strangers (domain names, model names, paths in a manifest) made
 * safe for where it is shown: a terminal, where an escape sequence could
 * rewrite the screen, and a spreadsheet, where a cell starting with "=" is a
 * formula (`=HYPERLINK(...)` runs when clicked).
 */

/** C0 controls but tab and newline, DEL and C1 controls (ESC and CSI start terminal sequences). */
// deno-lint-ignore no-control-regex -- matching control characters is the point
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;

/** True when `text` holds a control character other than tab and newline. */
export function hasControlCharacters(text: string): boolean {
  CONTROL.lastIndex = 0;
  return CONTROL.test(text);
}

/** `text` for a terminal: each control character but tab and newline shown as \u{XX}. */
export function printable(text: string): string {
  return text.replace(CONTROL, (c) => `\\u{${c.charCodeAt(0).toString(16)}}`);
}

/**
 * A CSV cell that a spreadsheet would run as a formula, with a leading
 * apostrophe (OWASP's advice): cells starting with "=", "+", "-", "@", a tab
 * or a carriage return, except plain numbers such as "-1.5" (payloads like
 * `-2+3+cmd|' /C calc'!A0` start with a digit after the sign too).
 */
export function spreadsheetSafe(cell: string): string {
  return /^[=+\-@\t\r]/.test(cell) && !/^[+-]?\d+(\.\d+)?$/.test(cell) ? `'${cell}` : cell;
}

/**
 * A JSON.parse error's message without the excerpt of the text V8 quotes
 * (`Unexpected token 'S', "SECRET 123"... is not valid JSON`): what was
 * wrong and where, never the file's bytes.
 */
export function jsonErrorMessage(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.replace(/, ".*"(\.\.\.)? is not valid JSON$/s, "").replace(/\.$/, "");
}
