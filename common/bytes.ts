/**
 * Byte sizes as users write them on the command line: `24GiB`, `512MB`, `1.5GB`. Decimal units
 * (kB, MB, GB, TB) are powers of 1000 and binary ones (KiB, MiB, GiB, TiB) powers of 1024, as
 * in IEC 80000-13; unit names are case-insensitive. `--capacity` and `--tier` read a bare
 * number as an expert count, so a unit is required unless the caller says a bare number is bytes.
 */

const BYTE_UNITS: Readonly<Record<string, number>> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
};

/**
 * The whole bytes `text` names (rounded down), or undefined when it is not a size: a number
 * followed by a unit, or with `bareIsBytes` also a plain number.
 */
export function parseByteSize(
  text: string,
  options: { bareIsBytes?: boolean } = {},
): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  if (!m) return undefined;
  const unitName = m[2]!.toLowerCase();
  const unit = unitName === "" ? (options.bareIsBytes ? 1 : undefined) : BYTE_UNITS[unitName];
  return unit === undefined ? undefined : Math.floor(Number(m[1]) * unit);
}
