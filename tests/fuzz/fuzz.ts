/**
 * A small seeded fuzzing harness: each target takes a valid input, mutates
 * it, runs the code under test in-process and classifies the outcome.
 *
 * Acceptable outcomes: success, or a DataError/UsageError whose message is
 * one sentence (one line, ending in a full stop). Anything else — another
 * exception type, a multi-line message, a case slower than the per-case
 * bound, or output left behind after a failure — is recorded as a finding.
 */
import { isUserError } from "../../common/errors.ts";
import { Rng } from "../../common/random.ts";

export interface FuzzCase {
  /** Short description of the mutation, for findings. */
  label: string;
  /** Runs the case; throws what the code under test throws. */
  run: () => Promise<void>;
  /** Checked after a failed case: true when the failure left no partial output. */
  clean?: () => Promise<boolean>;
}

export interface FuzzTarget {
  name: string;
  /** Builds case number `i` from the seeded generator (set-up happens here). */
  make: (rng: Rng, i: number) => Promise<FuzzCase>;
  /** Called once after all cases. */
  teardown?: () => Promise<void>;
  /** Every case is a valid input (concurrent runs): only the outcome is checked, none need fail. */
  validInputs?: true;
}

export interface FuzzResult {
  target: string;
  cases: number;
  succeeded: number;
  rejected: number;
  findings: string[];
}

/** Runs `cases` cases of `target`; each case bounded by `caseMs` milliseconds. */
export async function fuzz(
  target: FuzzTarget,
  options: { cases: number; seed: number; caseMs?: number },
): Promise<FuzzResult> {
  const rng = new Rng(options.seed);
  const bound = options.caseMs ?? 5000;
  const result: FuzzResult = {
    target: target.name,
    cases: 0,
    succeeded: 0,
    rejected: 0,
    findings: [],
  };
  for (let i = 0; i < options.cases; i++) {
    const c = await target.make(rng, i);
    const start = performance.now();
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        c.run(),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new HangError()), bound);
        }),
      ]);
      result.succeeded++;
    } catch (error) {
      if (error instanceof HangError) {
        result.findings.push(`${c.label}: no answer within ${bound} ms`);
      } else if (!isUserError(error)) {
        result.findings.push(`${c.label}: crashed with ${describe(error)}`);
      } else if (!/^[^\n]+\.$/.test(error.message)) {
        result.findings.push(
          `${c.label}: message is not one sentence: ${JSON.stringify(error.message)}`,
        );
      } else if (c.clean && !(await c.clean())) {
        result.findings.push(`${c.label}: left partial output after "${error.message}"`);
      } else {
        result.rejected++;
      }
    } finally {
      clearTimeout(timer);
    }
    const elapsed = performance.now() - start;
    if (elapsed > bound) result.findings.push(`${c.label}: took ${elapsed.toFixed(0)} ms`);
    result.cases++;
  }
  await target.teardown?.();
  return result;
}

class HangError extends Error {}

function describe(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message.split("\n")[0]}`;
  return String(error);
}

// ---------------------------------------------------------------------------
// Mutators

const INTERESTING_VALUES: unknown[] = [
  null,
  -1,
  0,
  1e300,
  -1e300,
  2 ** 53,
  0.5,
  "",
  "x",
  "\u0000",
  [],
  {},
  [[[]]],
  true,
  65535,
  4294967296,
];

/** Flips, deletes, duplicates or inserts bytes, or truncates. */
export function mutateBytes(rng: Rng, input: Uint8Array): { bytes: Uint8Array; label: string } {
  const bytes = Array.from(input);
  const kind = rng.int(5);
  const at = rng.int(Math.max(1, bytes.length));
  switch (kind) {
    case 0: {
      const n = 1 + rng.int(4);
      for (let j = 0; j < n; j++) {
        const p = rng.int(Math.max(1, bytes.length));
        if (bytes.length) bytes[p] = bytes[p]! ^ (1 << rng.int(8));
      }
      return { bytes: Uint8Array.from(bytes), label: `flip ${n} bits near ${at}` };
    }
    case 1:
      return { bytes: Uint8Array.from(bytes.slice(0, at)), label: `truncate at ${at}` };
    case 2: {
      const len = 1 + rng.int(16);
      bytes.splice(at, len);
      return { bytes: Uint8Array.from(bytes), label: `delete ${len} at ${at}` };
    }
    case 3: {
      const len = 1 + rng.int(32);
      bytes.splice(at, 0, ...bytes.slice(at, at + len));
      return { bytes: Uint8Array.from(bytes), label: `duplicate ${len} at ${at}` };
    }
    default: {
      const junk = Array.from({ length: 1 + rng.int(8) }, () => rng.int(256));
      bytes.splice(at, 0, ...junk);
      return { bytes: Uint8Array.from(bytes), label: `insert ${junk.length} bytes at ${at}` };
    }
  }
}

/** Replaces, deletes or retypes one value somewhere inside a JSON value. */
export function mutateJson(rng: Rng, value: unknown): { value: unknown; label: string } {
  const copy = structuredClone(value);
  const paths: (string | number)[][] = [];
  const walk = (v: unknown, path: (string | number)[]) => {
    paths.push(path);
    if (paths.length > 2000) return;
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, [...path, i]));
    else if (v && typeof v === "object") {
      for (const [k, x] of Object.entries(v)) walk(x, [...path, k]);
    }
  };
  walk(copy, []);
  const path = paths[1 + rng.int(Math.max(1, paths.length - 1))] ?? [];
  if (path.length === 0) {
    return { value: pick(rng, INTERESTING_VALUES), label: "replace the whole value" };
  }
  let parent = copy as Record<string | number, unknown>;
  for (const key of path.slice(0, -1)) parent = parent[key] as Record<string | number, unknown>;
  const key = path.at(-1)!;
  const where = path.join(".");
  if (rng.next() < 0.25 && !Array.isArray(parent)) {
    delete parent[key];
    return { value: copy, label: `delete ${where}` };
  }
  const replacement = pick(rng, INTERESTING_VALUES);
  parent[key] = structuredClone(replacement);
  return { value: copy, label: `set ${where} = ${JSON.stringify(replacement)}` };
}

export function pick<T>(rng: Rng, values: readonly T[]): T {
  return values[rng.int(values.length)]!;
}
