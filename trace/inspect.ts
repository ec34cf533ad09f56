/**
 * `moetrace inspect TRACE`: a one-screen summary of a trace (model facts,
 * capture settings, domains with document and token counts).
 */
import { type Manifest, TraceReader } from "./mod.ts";

/** What `inspect --json` prints for a trace: the manifest's facts and counts per domain. */
export interface TraceSummary {
  kind: "trace";
  path: string;
  model: Manifest["model"];
  capture: Manifest["capture"];
  complete: boolean;
  shards: number;
  documents: number;
  tokens: number;
  generated: number;
  domains: { domain: string; docs: number; tokens: number; generated: number }[];
}

/** Counts a trace's documents and tokens per domain (one pass over its shards). */
export async function summariseTrace(dir: string): Promise<TraceSummary> {
  const reader = await TraceReader.open(dir);
  const { model, capture } = reader.manifest;
  const perDomain = new Map<string, { docs: number; tokens: number; generated: number }>();
  for await (const batch of reader.batches()) {
    for (let i = 0; i < batch.rows; i++) {
      const name = batch.domainNames[batch.domainCodes[i]!]!;
      const entry = perDomain.get(name) ?? { docs: 0, tokens: 0, generated: 0 };
      if (i === 0 || batch.doc[i] !== batch.doc[i - 1]) entry.docs++;
      entry.tokens++;
      if (batch.phase[i] === 1) entry.generated++;
      perDomain.set(name, entry);
    }
  }
  const domains = [...perDomain.entries()].map(([domain, d]) => ({ domain, ...d }));
  return {
    kind: "trace",
    path: dir,
    model,
    capture,
    complete: capture.complete,
    shards: reader.manifest.shards.length,
    documents: reader.docs,
    tokens: domains.reduce((n, d) => n + d.tokens, 0),
    generated: domains.reduce((n, d) => n + d.generated, 0),
    domains,
  };
}

/** The summary text for a trace directory. */
export async function describeTrace(dir: string): Promise<string> {
  const s = await summariseTrace(dir);
  const { model, capture } = s;
  const width = Math.max(6, ...s.domains.map((d) => d.domain.length));
  const lines = [
    `trace      ${dir}`,
    `model      ${model.name} (${model.family}, ${model.dtype})`,
    `layers     ${model.num_layers} in all, ${model.moe_layers.length} MoE: ${
      compactRange(model.moe_layers)
    }`,
    `experts    ${model.num_experts} routed, top-${model.top_k}, ${model.num_shared_experts} shared; hidden ${model.hidden_size}, ${
      formatCount(model.expert_params)
    } parameters per expert`,
    `capture    ${capture.mode} from ${capture.corpus}; probs ${
      capture.probs ? "stored" : "not stored"
    }; lookahead ${capture.lookahead}; seed ${capture.seed}`,
    `status     ${
      capture.complete ? "complete" : "incomplete (resumable)"
    }; ${s.shards} shards; updated ${capture.updated}`,
    `documents  ${s.documents}; tokens ${s.tokens}${
      s.generated ? ` (${s.generated} generated)` : ""
    }`,
    "",
    `  ${"domain".padEnd(width)}  ${"docs".padStart(6)}  ${"tokens".padStart(9)}`,
    ...s.domains.map((d) =>
      `  ${d.domain.padEnd(width)}  ${String(d.docs).padStart(6)}  ${String(d.tokens).padStart(9)}`
    ),
  ];
  return lines.join("\n");
}

function compactRange(values: number[]): string {
  const contiguous = values.every((v, i) => i === 0 || v === values[i - 1]! + 1);
  return contiguous && values.length > 2 ? `${values[0]}..${values.at(-1)}` : values.join(", ");
}

function formatCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} k`;
  return String(n);
}
