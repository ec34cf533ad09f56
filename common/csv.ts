/**
 * Tidy CSV output (DESIGN.md "Outputs"): a header of snake_case columns, one
 * observation per row, numbers in plain decimal (never exponent notation, so
 * every CSV reader parses them the same way), written atomically.
 */
import { stringify } from "csv-stringify/sync";
import { writeFileAtomic } from "./atomic_write.ts";
import { spreadsheetSafe } from "./text.ts";

export type CsvValue = string | number | boolean | null | undefined;
export type CsvRow = Record<string, CsvValue>;

/** A number as plain decimal text: up to 12 significant digits, no exponent; NaN as empty. */
export function formatNumber(value: number): string {
  if (!Number.isFinite(value)) return "";
  if (Number.isInteger(value)) return BigInt(value).toString();
  const magnitude = Math.floor(Math.log10(Math.abs(value)));
  const decimals = Math.min(20, Math.max(0, 11 - magnitude));
  return value.toFixed(decimals).replace(/\.?0+$/, "");
}

/** CSV text of `rows` with exactly `columns`, in that order. */
export function toCsv(rows: readonly CsvRow[], columns: readonly string[]): string {
  return stringify(
    rows.map((row) => columns.map((c) => row[c])),
    {
      header: true,
      columns: [...columns],
      cast: {
        number: formatNumber,
        boolean: (b) => (b ? "true" : "false"),
        // Domain names and other strangers' text must not become spreadsheet formulas.
        string: spreadsheetSafe,
      },
    },
  );
}

/** Writes `rows` as CSV to `path`, atomically. */
export async function writeCsv(
  path: string,
  rows: readonly CsvRow[],
  columns: readonly string[],
): Promise<void> {
  await writeFileAtomic(path, toCsv(rows, columns));
}
