/**
 * Test helpers for the importers: the fixtures in fixtures/import/ (made by
 * fixtures/train/import_fixtures.py from known routing), their ground truth,
 * and an imported trace read back as plain arrays for exact comparison.
 */
import { runCli } from "../../tests/cli_helpers.ts";
import { type Manifest, TraceReader } from "../mod.ts";

export const FIXTURES = new URL("../../fixtures/import/", import.meta.url).pathname;

/** One document as the ground truth states it. */
export interface ExpectedDoc {
  tokens: number[];
  phase: number[];
  /** [T][M][k] logical experts. */
  experts: number[][][];
  request?: string;
  arrival_step?: number;
}

// deno-lint-ignore no-explicit-any
export const EXPECTED: Record<string, any> = JSON.parse(
  await Deno.readTextFile(`${FIXTURES}expected.json`),
);

export interface ReadBack {
  manifest: Manifest;
  docs: {
    tokens: number[];
    phase: number[];
    experts: number[][][];
    weights: number[];
    domain: string;
    request?: string;
    arrival_step?: number;
  }[];
}

/** Reads a trace back as plain arrays, experts reshaped to [T][M][k]. */
export async function readBack(dir: string): Promise<ReadBack> {
  const reader = await TraceReader.open(dir);
  const M = reader.manifest.model.moe_layers.length;
  const k = reader.manifest.model.top_k;
  const docs: ReadBack["docs"] = [];
  for await (const d of reader.documents()) {
    const experts: number[][][] = [];
    for (let t = 0; t < d.tokens.length; t++) {
      experts.push(
        Array.from(
          { length: M },
          (_, m) => Array.from(d.experts.subarray((t * M + m) * k, (t * M + m + 1) * k)),
        ),
      );
    }
    const doc: ReadBack["docs"][number] = {
      tokens: Array.from(d.tokens),
      phase: Array.from(d.phase ?? []),
      experts,
      weights: Array.from(d.weights),
      domain: d.domain,
    };
    if (d.request !== undefined) doc.request = d.request;
    if (d.arrivalStep !== undefined) doc.arrival_step = d.arrivalStep;
    docs.push(doc);
  }
  return { manifest: reader.manifest, docs };
}

/** Runs `moetrace import ARGS --out DIR/trace`; returns the CLI result and the trace path. */
export async function runImport(dir: string, args: string[]) {
  const out = `${dir}/trace`;
  const result = await runCli(["import", ...args, "--out", out]);
  return { ...result, out };
}

/** Names in `dir` (to show that a failed import left nothing behind). */
export function listDir(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}
