/** The prefetchers, one per file, and a parser for `--prefetch` values. */
import type { AccessTrace } from "../access_trace.ts";
import { MarkovPrefetcher } from "./markov.ts";
import { OraclePrefetcher } from "./oracle.ts";
import type { Prefetcher } from "./prefetcher.ts";
import { SpeculativePrefetcher } from "./speculative.ts";

export type { Prefetcher } from "./prefetcher.ts";
export { MarkovPrefetcher } from "./markov.ts";
export { OraclePrefetcher } from "./oracle.ts";
export { SpeculativePrefetcher } from "./speculative.ts";

/** A parsed `--prefetch` value. */
export interface PrefetchSpec {
  /** Canonical name: none, speculative, speculative:D, markov, oracle. */
  name: string;
  kind: "none" | "speculative" | "markov" | "oracle";
  /** Lookahead for speculative (1 otherwise; 0 for none). */
  depth: number;
}

/** Parses one `--prefetch` value, or returns null when it is not one. */
export function parsePrefetch(value: string): PrefetchSpec | null {
  if (value === "none") return { name: "none", kind: "none", depth: 0 };
  if (value === "markov" || value === "oracle") return { name: value, kind: value, depth: 1 };
  const m = /^speculative(?::(\d+))?$/.exec(value);
  if (!m) return null;
  const depth = m[1] === undefined ? 1 : Number(m[1]);
  if (!Number.isInteger(depth) || depth < 1) return null;
  return { name: depth === 1 ? "speculative" : `speculative:${depth}`, kind: "speculative", depth };
}

/** The prefetcher for a spec, or null for none. */
export function createPrefetcher(spec: PrefetchSpec, trace: AccessTrace): Prefetcher | null {
  switch (spec.kind) {
    case "none":
      return null;
    case "speculative":
      return new SpeculativePrefetcher(trace, spec.depth);
    case "markov":
      return new MarkovPrefetcher(trace);
    case "oracle":
      return new OraclePrefetcher(trace);
  }
}
