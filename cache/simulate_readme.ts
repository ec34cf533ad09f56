/** The README.md written beside the simulation outputs. */
import type { SimulationFigure } from "./simulate_figures.ts";
import type { SimulationOutput } from "./simulate_output.ts";
import { DEFAULT_HALF_LIFE_TOKENS } from "./policies/mod.ts";
import { DTYPES, expertBytes } from "./dtypes.ts";
import { HARDWARE_PRESETS } from "./hardware.ts";
import { TOOL_VERSION } from "../trace/mod.ts";

function table(header: string[], rows: (string | number)[][]): string {
  return [
    `| ${header.join(" | ")} |`,
    `| ${header.map(() => "---").join(" | ")} |`,
    ...rows.map((r) => `| ${r.join(" | ")} |`),
  ].join("\n");
}

export function simulationReadme(o: SimulationOutput, figures: SimulationFigure[]): string {
  const { manifest, settings, trace } = o;
  const m = manifest.model;
  const costsSeen = new Set<string>();
  const costRows: (string | number)[][] = [];
  for (const c of o.result.combinations) {
    const key = `${c.dtype}|${c.hardware}`;
    if (costsSeen.has(key)) continue;
    costsSeen.add(key);
    costRows.push([
      c.dtype,
      c.hardware,
      c.costs.expertBytes,
      c.costs.transferMs.toPrecision(4),
      c.costs.expertMs.toPrecision(4),
      c.costs.attentionMs.toPrecision(4),
      c.costs.otherMs === 0 ? 0 : c.costs.otherMs.toPrecision(4),
    ]);
  }
  const hardwareRows = settings.hardware.map((h) => [
    h.name,
    h.bandwidth_gb_s,
    h.latency_us,
    h.expert_ms ?? "roofline",
    h.attention_ms_per_layer ?? "roofline",
    h.other_ms_per_token ?? 0,
    String(h.uploads_overlap_compute ?? true),
    h.device_memory_gb_s ?? "",
    h.device_tflops ?? "",
    h.source ?? (HARDWARE_PRESETS[h.name] ? "" : "user file"),
  ]);
  const presetRows = Object.values(HARDWARE_PRESETS).map((h) => [
    h.name,
    h.bandwidth_gb_s,
    h.latency_us,
    h.device_memory_gb_s ?? "",
    h.device_tflops ?? "",
    h.source ?? "",
  ]);
  const dtypeRows = Object.values(DTYPES).map((d) => [
    d.name,
    d.bitsPerWeight,
    expertBytes(m.expert_params, d),
    d.description,
  ]);
  return `# Expert-cache simulation

Made by \`moetrace simulate\` (moetrace ${TOOL_VERSION}) from the trace \`${o.traceDir}\`:
model ${m.name} (${m.family}), ${m.moe_layers.length} MoE layers, E = ${m.num_experts} experts,
top-${m.top_k}, ${m.expert_params} parameters per expert; ${trace.tokens} tokens.

Sweep: policies ${settings.policies.join(", ")}; capacities ${
    settings.capacities.map((c) => c.text).join(", ")
  } (${settings.budget} budget); prefetch ${settings.prefetchers.map((p) => p.name).join(", ")};
dtypes ${settings.dtypes.map((d) => d.name).join(", ")}; hardware ${
    settings.hardware.map((h) => h.name).join(", ")
  }; seed ${settings.seed}; batch ${settings.batch ?? 1}; ${
    o.bootstrap ? `${o.bootstrap.resamples} bootstrap resamples` : "no bootstrap"
  }. Every combination is one set of rows.

## Semantics

- **Access stream.** Tokens in trace order (documents one after another, the
  cache is not emptied between them); for each token the MoE layers in order;
  at each layer the k chosen experts, first choice first. A cached item is one
  expert of one layer. Caches start empty, so the first use of every expert is
  a (cold) miss.
- **One router decision at a time.** The k experts a layer needs are never
  evicted to make room for each other: all k are guarded while they are
  loaded, and stay guarded while the prefetches of the same step are issued.
  A hit on an expert still being prefetched counts as a hit (and as a late
  prefetch, see below); \`hit_rate_in_time\` leaves those out.
- **Batches** (\`--batch N\`, N > 1). N documents decode in lockstep, one
  token each per step; documents fill slots 0..N−1 in trace order and, when
  one has decoded its last token, the next document takes its slot at the
  next step (a trace with an \`arrival_step\` column admits documents in
  order of arrival, each at the first step not before its arrival at which
  a slot is free; steps with nothing to decode are skipped). At each step and
  MoE layer the cache is accessed once with the union of the active
  documents' experts, in slot order, each document's experts first choice
  first, each expert once; all of them are guarded together, so none evicts
  another of the same step. When the union is larger than the capacity, the
  experts that find only guarded victims are streamed: uploaded and used (a
  miss each) but not kept. The timing model charges a step like one token
  (attention and other_ms once, each expert of the union once): a
  memory-bound batch reads each weight once per step. Batches replay without
  prefetch, and every policy is replayed (the LRU shortcuts hold for one
  token per step only), so miss_ratio_curve.csv has LRU at the simulated
  capacities. \`--batch 1\` is exactly the plain replay.
- **Uncertainty** (\`--bootstrap B\`, default 20). A document-level
  bootstrap: each resample draws as many documents as the trace has, with
  replacement (documents are runs of one \`doc\` id), from a generator seeded
  by \`--seed\` (common/random.ts: \`Rng(seed)\`, document \`rng.int(G)\`,
  resample after resample), lays them out copy by copy (every document drawn,
  in trace order, then the second copies, and so on, so no copy runs right
  after or beside itself) and replays every combination on that trace from
  empty caches. \`*_ci_low\` and \`*_ci_high\` are the 2.5th and 97.5th
  percentiles of the B resampled values (linear interpolation between order
  statistics, h = (B − 1) p), shifted by the point estimate minus the
  resamples' mean: a repeated document finds some of its experts still
  cached from its first copy, which moves the resampled values (batched
  replays most) but not their spread. With B = 20 the interval is a rough one (its ends sit near the second
  smallest and second largest resample); ask for \`--bootstrap 200\` or more
  before telling two close policies apart. Empty when B = 0.
- **Budgets.** \`per-layer\`: each layer has its own cache of \`capacity\`
  experts (capacity ≥ k). \`global\`: one cache of \`capacity\` experts shared by
  all layers, evictions may cross layers. A byte capacity (\`24GiB\`) is turned
  into experts of the run's dtype: floor(bytes / expert bytes) in all, split
  equally over the layers for a per-layer budget. \`auto\` means every capacity
  k..E per layer (global: M·k..M·E in steps of M), or 16 evenly spaced
  values from k to E when there are more (the LRU miss-ratio curve still has
  every capacity). A capacity above E per
  layer (M·E in all) holds everything and is reported as E (M·E), with the
  value asked for in \`capacity_spec\`.
- **Policies** (one file each in \`cache/policies/\`):
  - \`lru\`: evict the least recently used (a prefetch counts as a use).
  - \`fifo\`: evict the oldest insertion; hits change nothing.
  - \`lfu\`: smallest in-cache use count (1 on a demand load, 0 on a prefetch,
    +1 per hit, forgotten on eviction); ties to the least recently used.
  - \`lrfu\`: LRFU (Lee et al. 2001): evict the smallest
    CRF = Σ 2^(−age/H) over the key's accesses since it entered, age in tokens,
    half-life H = ${DEFAULT_HALF_LIFE_TOKENS} tokens; H → 0 is LRU, H → ∞ is LFU.
  - \`random\`: a uniformly random unguarded expert (seeded by \`--seed\`).
  - \`belady\`: evict the expert whose next use is farthest (never used again
    counts as farthest). Optimal without prefetch; it needs the whole trace
    up front, so it is a bound, not something an engine can run.
  - \`swap\` (CoSMoEs Eq. 8): each layer holds exactly its current selection of
    k experts; when the selection changes the new experts are loaded. Capacity
    is k per layer whatever \`--capacity\` says, so it has one set of rows
    (capacity k, or M·k under a global budget, and \`capacity_spec\` = \`k\`).
  - \`pinned\`: the capacity − k most used experts of each layer (of all layers
    under a global budget) are pinned, loaded on first use and never evicted;
    k streaming slots serve the rest, LRU among them. "Most used" is counted
    over this whole trace (an offline choice).
  - At a capacity that holds every expert of a layer (every expert of the model
    for a global budget) nothing is ever evicted and all policies give the
    same rows; they are computed once.
- **Prefetchers** (\`cache/prefetch/\`), asked once layer l's router has chosen,
  for the steps d = 1..D ahead:
  - \`speculative\` / \`speculative:D\`: the trace's \`spec\` column, the top-k of
    layer l + d's router applied to the hidden state entering layer l's MoE
    block (Eliseev & Mazur 2023); never across tokens.
  - \`markov\`: transition counts from layer l's experts to layer l + 1's,
    learned online from earlier tokens only; the k best-scoring experts with a
    non-zero score.
  - \`oracle\`: the true experts of the next step, including layer 0 of the next
    token after the last layer (known in a teacher-forced trace): the bound.
  A predicted expert already cached is not loaded again; otherwise it is
  admitted like a demand load (same policy, the current layer's experts and
  the other predictions of the step guarded; if only guarded experts could be
  evicted the prefetch is dropped). Each loaded prefetch ends **used in time**
  (resident when its layer's router asked for it), **used late** (still in
  flight: a partial stall) or **wasted** (evicted before any use). Prefetches
  still unused at the end of the trace are neither.
- **LRU miss-ratio curve.** LRU is a stack policy, so one pass computing each
  access's stack distance (all k accesses of a step measured on the stack as
  it was before the step) gives its hits at every capacity at once;
  \`cache/stack_distance_test.ts\` checks the equality with separate runs.
  LRU rows without prefetch in \`simulation.csv\` come from that pass.

## Timing model

Per token, for each MoE layer l in order:

1. attention and router take \`attention_ms_per_layer\`; the router decides at
   the end of it (time *now*);
2. demand loads for the misses go on the single FIFO transfer queue at *now*,
   then the prefetches issued at this step. One transfer at a time; each takes
   latency + expert bytes / bandwidth and starts when issued or when the
   previous transfer ends, whichever is later;
3. the layer waits until every chosen expert is resident (stall);
4. the k chosen experts compute, \`expert_ms\` each.

With \`"uploads_overlap_compute": false\` in a hardware file (an engine whose
uploads share one queue with compute, as \`generate --offload\` on WebGPU) the
layer also waits in step 3 for the prefetches issued at it, so a prefetch is
never late but costs its transfer time at the layer that issued it.

After the last layer, \`other_ms_per_token\` (embeddings, LM head, sampling).
Without prefetch the queue is always idle when a router decides, so the
stall is exactly misses × transfer time. \`ms_per_token\` = total simulated time
/ tokens; \`tokens_per_s\` = 1000 / ms_per_token.

**Default compute model.** When a hardware entry gives no measured
\`expert_ms\` / \`attention_ms_per_layer\`, they come from a batch-1 roofline on
the device: max(weight bytes / \`device_memory_gb_s\`, 2 × params /
\`device_tflops\`). Experts are read in the run's dtype; attention is 4 × hidden²
weights (full multi-head q, k, v, o; grouped-query attention has fewer) in
16-bit; KV-cache reads are ignored.

Costs used in this run (ms; bytes per expert):

${
    table([
      "dtype",
      "hardware",
      "expert_bytes",
      "transfer_ms",
      "expert_ms",
      "attention_ms_per_layer",
      "other_ms_per_token",
    ], costRows)
  }

### Dtypes (bits per weight include quantisation scales)

${
    table([
      "dtype",
      "bits_per_weight",
      `bytes per expert here (${m.expert_params} params)`,
      "format",
    ], dtypeRows)
  }

### Hardware in this run

${
    table([
      "name",
      "bandwidth_gb_s",
      "latency_us",
      "expert_ms",
      "attention_ms_per_layer",
      "other_ms_per_token",
      "uploads_overlap_compute",
      "device_memory_gb_s",
      "device_tflops",
      "source",
    ], hardwareRows)
  }

### Hardware presets

${
    table([
      "preset",
      "bandwidth_gb_s",
      "latency_us",
      "device_memory_gb_s",
      "device_tflops",
      "source",
    ], presetRows)
  }

Effective link rates (80% of the PCIe rate, per-transfer latencies) are
assumptions, not measurements; calibrate a machine with a hardware JSON file:

\`\`\`json
{"name": "my-box", "bandwidth_gb_s": 24.1, "latency_us": 12,
 "attention_ms_per_layer": 0.05, "expert_ms": 0.31, "other_ms_per_token": 1.2,
 "source": "measured by moetrace bench engine --calibrate"}
\`\`\`

Required: \`name\`, \`bandwidth_gb_s\` (> 0, 10^9 bytes/s), \`latency_us\` (≥ 0), and
either \`expert_ms\` + \`attention_ms_per_layer\` or \`device_memory_gb_s\` +
\`device_tflops\`; optional \`other_ms_per_token\` (default 0),
\`readback_ms_per_layer\` (default 0), \`uploads_overlap_compute\` (default
true) and \`source\`.

## Files

### simulation.csv

One row per combination (policy × capacity × prefetch × dtype × hardware) and
MoE layer, plus a row with \`layer\` = \`moe_layer\` = \`all\` for the whole model.

${
    table(["column", "meaning"], [
      ["policy", "cache policy"],
      ["budget", "per-layer or global"],
      ["capacity", "experts the cache holds: per layer (per-layer budget) or in all (global)"],
      ["capacity_spec", "the --capacity value it came from (a count or a byte budget; k for swap)"],
      [
        "capacity_bytes",
        "bytes of all cache slots: capacity × (layers for per-layer) × expert bytes",
      ],
      ["prefetch", "prefetcher (none, speculative, speculative:D, markov, oracle)"],
      ["dtype", "expert storage format"],
      ["hardware", "machine preset or file name"],
      ["batch", "documents decoding in lockstep (--batch; 1: one token per step)"],
      [
        "layer",
        "the layer's index in the whole model (as in moe_layers and the analysis CSVs), or all",
      ],
      ["moe_layer", "index among the MoE layers, 0..M−1 in moe_layers order, or all"],
      ["n_docs, n_tokens", "documents and tokens replayed"],
      ["n_steps", "decoding steps: tokens, or with --batch N the batched steps"],
      ["accesses", "expert accesses (per step the union of its experts: tokens × k at batch 1)"],
      [
        "experts_per_step",
        "the union size: accesses / (steps × layers), i.e. distinct experts per layer per step",
      ],
      ["hits, misses", "accesses found in cache / loaded on demand (misses = demand uploads)"],
      ["hit_rate", "hits / accesses"],
      [
        "hit_rate_ci_low, hit_rate_ci_high",
        "95% document-bootstrap interval of hit_rate (see Uncertainty)",
      ],
      [
        "hit_rate_in_time",
        "(hits − prefetch_late) / accesses: hits whose expert was resident when the router asked (empty when times are)",
      ],
      ["loads_per_token", "uploads (demand + prefetch) per token"],
      ["bytes_per_token", "uploaded bytes per token"],
      ["prefetch_issued", "experts uploaded by prefetch"],
      ["prefetch_used", "prefetched experts used before eviction (in time or late)"],
      ["prefetch_late", "prefetched experts first used while still in flight"],
      ["prefetch_wasted_bytes", "bytes of prefetched experts evicted unused"],
      [
        "prefetch_precision",
        "predicted experts that the target layer chose / experts predicted (any lookahead)",
      ],
      ["prefetch_recall", "correctly predicted experts / (k × steps a prediction was asked for)"],
      ["stall_ms_per_token", "time layers waited for uploads, per token"],
      [
        "ms_per_token",
        "per layer: attention + stall + expert compute; all: whole token incl. other_ms",
      ],
      [
        "ms_per_token_ci_low, ms_per_token_ci_high",
        "95% document-bootstrap interval of ms_per_token",
      ],
      ["tokens_per_s", "1000 / ms_per_token (all rows only)"],
      ["on_miss", "--on-miss: transfer, cpu or cheaper"],
      [
        "cpu_experts",
        "experts computed on the host CPU instead of waiting for their upload (misses, and hits whose background upload was still in flight)",
      ],
      ["tier", "--tier (none: every expert in host RAM)"],
      [
        "ram_hits, ssd_reads",
        "uploads served from host RAM / read from the SSD, by the expert's layer",
      ],
      ["miss_dtype", "--miss-dtype, the low-precision copy a demand miss fetches (none)"],
      ["degraded_uses", "expert uses served by a low-precision copy"],
      [
        "degraded_tokens",
        "tokens that used a low-precision copy at this layer (all: at any layer)",
      ],
    ])
  }

Precision and recall are per target layer; \`prefetch_accuracy.csv\` splits them by lookahead.

### miss_ratio_curve.csv

${
    table(["column", "meaning"], [
      [
        "policy",
        "lru (every capacity, from stack distances; with --batch above 1 the simulated capacities) or belady (the simulated capacities, no prefetch)",
      ],
      ["budget, capacity, batch, layer, moe_layer, n_docs, n_tokens", "as above"],
      ["accesses, hits, misses", "counts"],
      ["hit_rate, miss_ratio", "hits / accesses, misses / accesses"],
    ])
  }

### prefetch_accuracy.csv

${
    table(["column", "meaning"], [
      ["prefetch", "prefetcher"],
      ["layer", "target layer of the prediction (the model's index)"],
      ["moe_layer", "its index among the MoE layers"],
      [
        "lookahead",
        "d: predicted at layer − d (for the oracle's wrap to the next token, at the previous token's last layers)",
      ],
      ["opportunities", "steps at which a prediction for this layer and lookahead was asked"],
      ["predicted", "experts predicted"],
      ["correct", "of those, experts the target layer chose"],
      ["precision, recall", "correct / predicted, correct / (k × opportunities)"],
    ])
  }

### Figures

${figures.map((f) => `- \`${f.file}\`: ${f.title}. ${f.caption}`).join("\n")}

\`figures.json\` lists them in display order; \`simulation.json\` holds the
trace's model facts, the sweep settings, the hardware used and the costs.
`;
}
