/**
 * The moetrace command line (DESIGN.md "Command line"): parses arguments and
 * dispatches to one module per command. Every flag, its default and its help
 * live in COMMANDS below, so `--help` and parsing cannot disagree.
 *
 * Exit status: 0 done, 1 bad data or runtime failure, 2 bad usage. A user
 * mistake is one sentence on stderr, never a stack trace.
 */
import { parseArgs } from "node:util";
import { isUserError, UsageError } from "./common/errors.ts";
import { didYouMean } from "./common/suggest.ts";
import { exitOnInterrupt } from "./common/interrupt.ts";
import { TOOL_VERSION } from "./trace/manifest.ts";
import { HARDWARE_PRESETS } from "./cache/hardware.ts";
import { DTYPES } from "./cache/dtypes.ts";
import { BATCH_HELP, POLICY_HELP, RESAMPLES_HELP, SIM_SEED_HELP } from "./cache/simulate_help.ts";

type FlagKind = "string" | "int" | "number" | "boolean" | "list" | "int-list";

interface FlagSpec {
  kind: FlagKind;
  help: string;
  /** Shown in --help and used when the flag is absent; undefined means required or off. */
  default?: string | number | boolean;
  required?: boolean;
  /** Smallest accepted value for int/number flags. */
  min?: number;
  /** Accepted values for string flags. */
  choices?: readonly string[];
  /** Placeholder shown in help. */
  value?: string;
  /**
   * What the launcher (moetrace.ts) grants for a path flag: "read" an input;
   * "write" an output folder (also read, for resume); "write-staged" an output
   * folder staged at `<path>.partial` and renamed into place; "write-file" a
   * file written to a temporary name beside it and renamed (so its folder).
   */
  path?: PathAccess;
  /**
   * The value of this flag that loads native code (DuckDB's Node addon): the
   * launcher then grants --allow-ffi, which native code is not bound by.
   */
  native?: string;
}

export type PathAccess = "read" | "write" | "write-staged" | "write-file";

interface CommandSpec {
  summary: string;
  /**
   * Name of the positional argument, if the command takes one; with
   * `multiple` it may be given several times (all reach `run` as its third
   * argument, and a `path` grant covers each).
   */
  positional?: {
    name: string;
    help: string;
    optional?: boolean;
    path?: "read";
    multiple?: boolean;
  };
  flags: Record<string, FlagSpec>;
  /** Writes scratch files to the system temporary folder (benchmarks). */
  scratch?: boolean;
  /** Running it again after Ctrl-C resumes (the trace writer commits whole shards). */
  resumable?: boolean;
  run: (
    positional: string | undefined,
    flags: Record<string, unknown>,
    positionals: string[],
  ) => Promise<void>;
}

export type ParsedFlags = Record<string, unknown>;

/** `--json` of every command that prints a summary. */
const JSON_FLAG: FlagSpec = {
  kind: "boolean",
  default: false,
  help: "Print the summary as one JSON object on stdout, and nothing else there.",
};

/** `--force` of the commands that refuse an --out folder holding other things. */
function forceFlag(what: string): FlagSpec {
  return {
    kind: "boolean",
    default: false,
    help:
      `Write into --out even when it holds files that are not ${what} (it is refused otherwise).`,
  };
}

export const COMMANDS: Readonly<Record<string, CommandSpec>> = {
  capture: {
    summary: "Run a model over a corpus and log every router decision to a trace.",
    flags: {
      model: {
        kind: "string",
        required: true,
        path: "read",
        value: "DIR",
        help: "Hugging Face MoE checkpoint directory.",
      },
      corpus: {
        kind: "string",
        required: true,
        path: "read",
        value: "PATH",
        help: "Pile JSONL, .jsonl.zst, or a folder of text files (one domain per sub-folder).",
      },
      out: {
        kind: "string",
        required: true,
        path: "write",
        value: "TRACE",
        help: "Trace directory to write (resumed if it exists).",
      },
      domains: {
        kind: "list",
        value: "A,B",
        help:
          "Only these domains (default: all); a name the corpus lacks is refused with the corpus's domains.",
      },
      "default-domain": {
        kind: "string",
        value: "NAME",
        help: "Domain of JSONL lines without meta.pile_set_name (default: such a line is refused).",
      },
      "docs-per-domain": {
        kind: "int",
        min: 1,
        value: "N",
        help: "Seeded sample of N documents per domain (default: all).",
      },
      "max-tokens": {
        kind: "int",
        min: 1,
        default: 512,
        value: "N",
        help: "Tokens per document, the rest cut.",
      },
      "batch-tokens": {
        kind: "int",
        min: 1,
        default: 2048,
        value: "N",
        help: "Tokens per forward batch.",
      },
      probs: { kind: "boolean", default: false, help: "Also store the full router distribution." },
      lookahead: {
        kind: "int",
        min: 0,
        default: 0,
        value: "D",
        help: "Store the speculative picks of layers l+1..l+D.",
      },
      seed: {
        kind: "int",
        min: 0,
        default: 0,
        value: "S",
        help: "Seed for document sampling.",
      },
      "shard-rows": {
        kind: "int",
        min: 1,
        default: 16384,
        value: "N",
        help: "Tokens per trace shard: an interrupted capture redoes at most this many.",
      },
      shard: {
        kind: "string",
        value: "i/n",
        help:
          "Capture only part i of n (0 ≤ i < n) of the selected documents, whole documents in contiguous blocks, for `moetrace merge` (Slurm: $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT).",
      },
      "gpu-memory": {
        kind: "string",
        value: "SIZE",
        help:
          "GPU memory the model may hold, such as 24GiB or 512MB (default: what the device allows). When the weights do not fit, everything but the routed experts stays on the GPU and the experts stream from host memory through a ring of slots in what is left, with the same router log; a size below the rest plus one expert is refused.",
      },
      force: forceFlag("a trace"),
      json: JSON_FLAG,
    },
    resumable: true,
    run: async (_p, f) => (await import("./engine/capture.ts")).captureCommand(f),
  },
  generate: {
    summary: "Generate from prompts and log the router decisions of prompt and generated tokens.",
    flags: {
      model: {
        kind: "string",
        required: true,
        path: "read",
        value: "DIR",
        help: "Hugging Face MoE checkpoint directory.",
      },
      prompts: {
        kind: "string",
        required: true,
        path: "read",
        value: "FILE",
        help:
          'Text file, one prompt per line, or JSONL: {"prompt": "...", "domain": "..."} per line ("domain" optional, default "prompts").',
      },
      out: {
        kind: "string",
        required: true,
        path: "write",
        value: "TRACE",
        help: "Trace directory to write.",
      },
      chat: {
        kind: "boolean",
        default: false,
        help: "Wrap each prompt in the model's chat template.",
      },
      "max-new-tokens": {
        kind: "int",
        min: 1,
        default: 64,
        value: "N",
        help: "Tokens to generate per prompt.",
      },
      temperature: {
        kind: "number",
        min: 0,
        default: 0,
        value: "T",
        help: "Sampling temperature; 0 is greedy.",
      },
      seed: { kind: "int", min: 0, default: 0, value: "S", help: "Sampling seed." },
      offload: {
        kind: "string",
        value: "POLICY:CAPACITY",
        help:
          `Keep routed experts in host memory; the GPU holds CAPACITY expert slots (see --budget), managed by POLICY: ${POLICY_HELP}.`,
      },
      prefetch: {
        kind: "string",
        default: "none",
        choices: ["none", "speculative"],
        help: "Prefetch for --offload.",
      },
      budget: {
        kind: "string",
        default: "per-layer",
        choices: ["per-layer", "global"],
        help: "--offload CAPACITY slots per MoE layer, or one pool shared by all layers.",
      },
      "gpu-memory": {
        kind: "string",
        value: "SIZE",
        help:
          "GPU memory the model may hold, such as 24GiB or 512MB (default: what the device allows). When the weights do not fit, everything but the routed experts stays on the GPU and the experts stream from host memory through a ring of slots in what is left, with the same router log; a size below the rest plus one expert is refused.",
      },
      json: {
        ...JSON_FLAG,
        help:
          "Print one JSON object on stdout at the end (completions, where the outputs went, the offload summary) instead of a line per completion.",
      },
    },
    resumable: true,
    run: async (_p, f) => (await import("./engine/generate.ts")).generateCommand(f),
  },
  import: {
    summary:
      "Convert router logs recorded elsewhere (SGLang, vLLM, OLMoE, interchange JSONL) into a trace.",
    positional: {
      name: "FILE...",
      help:
        "Router logs of one format: SGLang per_token .pt files (one per rank), saved SGLang or vLLM responses with routed experts (JSONL), OLMoE run_moe_analysis.py output, or interchange JSONL (see README).",
      path: "read",
      multiple: true,
    },
    flags: {
      out: {
        kind: "string",
        required: true,
        path: "write-staged",
        value: "TRACE",
        help: "Trace directory to write.",
      },
      from: {
        kind: "string",
        value: "FORMAT",
        choices: ["interchange", "sglang-pt", "sglang-response", "vllm", "olmoe"],
        help: "Format of the FILEs (default: told from each file's first bytes or line).",
      },
      "model-config": {
        kind: "string",
        path: "read",
        value: "config.json",
        help:
          "The model's Hugging Face config.json: expert count, layers, hidden size, expert size and dtype the log lacks.",
      },
      force: {
        kind: "boolean",
        default: false,
        help: "Replace an existing TRACE once the import succeeds (it is refused otherwise).",
      },
      json: JSON_FLAG,
    },
    run: async (_p, f, files) =>
      (await import("./trace/import/command.ts")).importCommand(files, f),
  },
  merge: {
    summary:
      "Join the parts of a capture split with --shard i/n into one trace, after checking they fit.",
    positional: {
      name: "TRACE...",
      help:
        "The part traces, each made by capture --shard i/n with the same model, corpus and options, one for every i.",
      path: "read",
      multiple: true,
    },
    flags: {
      out: {
        kind: "string",
        required: true,
        path: "write-staged",
        value: "TRACE",
        help:
          "Trace directory to write: a manifest listing the parts' shards by relative path (they stay where they are).",
      },
      copy: {
        kind: "boolean",
        default: false,
        help:
          "Copy the parts' shards into TRACE/shards instead (for parts on another file system, or to move TRACE alone).",
      },
      json: JSON_FLAG,
    },
    run: async (_p, f, traces) => (await import("./trace/merge.ts")).mergeCommand(traces, f),
  },
  inspect: {
    summary: "One-screen summary of a trace or a model directory.",
    positional: {
      name: "TRACE|MODEL",
      help: "Trace directory or checkpoint directory.",
      path: "read",
    },
    flags: { json: JSON_FLAG },
    run: async (p, f) => (await import("./engine/inspect.ts")).inspectCommand(p!, f),
  },
  analyze: {
    summary: "Routing statistics per domain and layer with confidence intervals, as CSV and SVG.",
    positional: { name: "TRACE", help: "Trace directory.", path: "read", optional: true },
    flags: {
      out: {
        kind: "string",
        required: true,
        path: "write-staged",
        value: "DIR",
        help: "Output directory.",
      },
      bootstrap: {
        kind: "int",
        min: 0,
        default: 1000,
        value: "N",
        help:
          "0: point estimates only; N > 0: document-jackknife intervals and tests, with clamp(N, 99, 999) permutations per domain comparison.",
      },
      seed: {
        kind: "int",
        min: 0,
        default: 0,
        value: "S",
        help: "Permutation seed.",
      },
      "router-temperature": {
        kind: "number",
        min: 0,
        default: 1,
        value: "T",
        help: "τ of W = softmax(τ·router logits) in CoSMoEs Eq. 6 (l_norm, bies; needs --probs).",
      },
      engine: {
        kind: "string",
        default: "stream",
        choices: ["stream", "duckdb"],
        native: "duckdb",
        help:
          "stream: the statistics from one streaming pass; duckdb: only the count tables (counts/*.csv), by DuckDB running analysis/sql/ on the Parquet shards, for traces past memory-friendly size.",
      },
      counts: {
        kind: "boolean",
        default: false,
        help:
          "With --engine stream, also write the streaming pass's count tables to counts/*.csv (one more pass).",
      },
      "from-counts": {
        kind: "string",
        path: "read",
        value: "DIR",
        help:
          'Analyse the per-document count tables of analysis/sql/ in DIR (run by Spark or DuckDB; README "Analysis on DuckDB and Spark") instead of a TRACE.',
      },
      force: forceFlag("an analysis"),
      json: JSON_FLAG,
    },
    run: async (p, f) => (await import("./analysis/analyze.ts")).analyzeCommand(p, f),
  },
  compare: {
    summary:
      "Every statistic of two runs side by side, with the difference B − A and its 95% interval, as CSV.",
    positional: {
      name: "A B",
      help:
        "Two traces (analysed into DIR/a and DIR/b as analyze would) or two analyze output folders, or one of each.",
      path: "read",
      multiple: true,
    },
    flags: {
      out: {
        kind: "string",
        required: true,
        path: "write",
        value: "DIR",
        help: "Output directory (new, empty, or an earlier compare's).",
      },
      labels: {
        kind: "list",
        value: "NAME_A,NAME_B",
        help: "Names of A and B in compare.json and the report (default: the folders' names).",
      },
      bootstrap: {
        kind: "int",
        min: 0,
        default: 1000,
        value: "N",
        help: "As analyze's, for a trace given as A or B.",
      },
      seed: { kind: "int", min: 0, default: 0, value: "S", help: "As analyze's." },
      pairing: {
        kind: "string",
        default: "auto",
        choices: ["auto", "none"],
        help:
          "auto: when A and B are traces of the same documents, paired jackknife intervals for the document statistics' differences; none: MOVER intervals for independent samples throughout.",
      },
      json: JSON_FLAG,
    },
    run: async (_p, f, inputs) => (await import("./analysis/compare.ts")).compareCommand(inputs, f),
  },
  simulate: {
    summary: "Replay a trace through expert caches and prefetchers; predict offload latency.",
    positional: { name: "TRACE", help: "Trace directory.", path: "read" },
    flags: {
      out: {
        kind: "string",
        required: true,
        path: "write",
        value: "DIR",
        help: "Output directory.",
      },
      policy: {
        kind: "list",
        default: "lru,lfu,belady",
        value: "LIST",
        help:
          `Cache policies, any case: ${POLICY_HELP}, belady (optimal, offline: evicts the expert used furthest in the future), pinned (offline: the capacity − k experts used most in the whole trace stay; k LRU slots stream the rest).`,
      },
      capacity: {
        kind: "list",
        default: "auto",
        value: "LIST",
        help:
          "Expert slots per layer (per-layer) or in all (global), from top_k to the model's experts; or byte budgets such as 24GiB or 512MB (the experts of each --dtype that fit); auto: k..E.",
      },
      prefetch: {
        kind: "list",
        default: "none",
        value: "LIST",
        help: "Prefetchers: none, speculative, speculative:D, markov, oracle.",
      },
      hardware: {
        kind: "list",
        default: "pcie4",
        value: "NAME|FILE",
        path: "read",
        help: `Hardware presets (${
          Object.keys(HARDWARE_PRESETS).join(", ")
        }) or JSON files (bench engine --calibrate writes one).`,
      },
      dtype: {
        kind: "list",
        default: "bf16",
        value: "NAME",
        help: `Expert storage: ${Object.keys(DTYPES).join(", ")}.`,
      },
      budget: {
        kind: "string",
        default: "per-layer",
        choices: ["per-layer", "global"],
        help: "Capacity per layer or shared by all layers.",
      },
      batch: { kind: "int", min: 1, default: 1, value: "N", help: BATCH_HELP },
      bootstrap: { kind: "int", min: 0, default: 20, value: "B", help: RESAMPLES_HELP },
      seed: { kind: "int", min: 0, default: 0, value: "S", help: SIM_SEED_HELP },
      "on-miss": {
        kind: "string",
        default: "transfer",
        choices: ["transfer", "cpu", "cheaper"],
        help:
          "A missed expert is uploaded and waited for (transfer), computed on the host CPU while the GPU computes the hits (cpu; the upload goes on in the background), or whichever is faster for the step (cheaper). The CPU's time is the hardware's cpu_expert_ms or its roofline.",
      },
      tier: {
        kind: "string",
        value: "ram=CAP[:POLICY],ssd=DEVICE",
        help:
          "Memory below the GPU cache: host RAM holding CAP experts (per layer or in all, as --budget) or bytes such as 64GiB under its own POLICY (lru, fifo, lfu, lrfu, random; default lru), and the SSD every expert lives on (nvme-gen4, nvme-gen5, ufs4, or READ_GB_S:LATENCY_US). A GPU miss is served from RAM when RAM holds it, else read from the SSD.",
      },
      "miss-dtype": {
        kind: "string",
        value: "NAME",
        help:
          "On a demand miss fetch this lower-precision copy (HOBBIT), e.g. int4 under --dtype bf16; it serves until the expert is loaded again. simulation.csv counts the degraded uses and tokens.",
      },
      force: forceFlag("a simulation"),
      json: JSON_FLAG,
    },
    run: async (p, f) => (await import("./cache/simulate.ts")).simulateCommand(p!, f),
  },
  report: {
    summary: "Assemble analysis and simulation outputs into one self-contained HTML report.",
    flags: {
      analysis: {
        kind: "string",
        required: true,
        path: "read",
        value: "DIR",
        help: "Output of analyze.",
      },
      simulation: {
        kind: "string",
        required: true,
        path: "read",
        value: "DIR",
        help: "Output of simulate.",
      },
      out: {
        kind: "string",
        required: true,
        path: "write-staged",
        value: "FILE.html",
        help: "Report file (its folder must exist; nothing else is written there).",
      },
      layers: {
        kind: "list",
        value: "L,...",
        help:
          "Layers (as in the CSVs' layer column) for the figures that show a few layers: expert shares and co-activation (default: analyze's first, middle and last).",
      },
      capacity: {
        kind: "string",
        value: "C",
        help:
          "Capacity (as in simulation.csv's capacity or capacity_spec) for the hit-rate-per-layer figure and the results table (default: simulate's middle capacity, every capacity).",
      },
      compare: {
        kind: "string",
        path: "read",
        value: "DIR",
        help: "Output of `moetrace compare`: a section with the two runs side by side.",
      },
    },
    run: async (_p, f) => (await import("./report/report.ts")).reportCommand(f),
  },
  bench: {
    summary: "Benchmarks that print figures and ratios measured side by side.",
    scratch: true,
    positional: {
      name: "engine|offload|widths|gpu|cache|analysis|coverage|trace|import",
      help:
        "What to measure (offload: the simulator's predicted ms/token against generate --offload measured on tiny-moe, about 2 min; widths: random checkpoints at the real widths of six published MoE models against transformers on the same weights, cached in $TMPDIR/moetrace-widths, long on a CPU; gpu: a reduced widths run, engine and offload --large in one table, for a machine with a real GPU, under 8 min there).",
    },
    flags: {
      json: { kind: "boolean", default: false, help: "Print results as JSON." },
      calibrate: {
        kind: "string",
        value: "FILE",
        path: "write-file",
        help: "engine only: write a hardware JSON for simulate --hardware.",
      },
      large: {
        kind: "boolean",
        default: false,
        help:
          "offload only: a random Mixtral-shaped checkpoint with 44 MB experts, whose uploads are a larger part of each token's time (about 3 min).",
      },
    },
    run: async (p, f) => (await import("./bench/bench.ts")).benchCommand(p!, f),
  },
};

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  return [
    `moetrace ${TOOL_VERSION}: how Mixture-of-Experts models route tokens, and what it costs to offload experts.`,
    "",
    "Usage: moetrace <command> [options]",
    "",
    "Commands:",
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    "",
    "Run `moetrace <command> --help` for a command's options. Exit status: 0 done, 1 bad data, 2 bad usage.",
  ].join("\n");
}

function commandUsage(name: string, spec: CommandSpec): string {
  const lines = [
    `Usage: moetrace ${name}${spec.positional ? ` ${spec.positional.name}` : ""} [options]`,
    "",
    spec.summary,
    "",
  ];
  if (spec.positional) lines.push(`  ${spec.positional.name}: ${spec.positional.help}`, "");
  lines.push("Options:");
  for (const [flag, f] of Object.entries(spec.flags)) {
    const left = `  --${flag}${f.kind === "boolean" ? "" : ` ${f.value ?? "VALUE"}`}`;
    const extra = f.required
      ? " (required)"
      : f.default !== undefined
      ? ` (default: ${f.default})`
      : "";
    const choices = f.choices ? ` One of: ${f.choices.join(", ")}.` : "";
    lines.push(`${left.padEnd(34)} ${f.help}${choices}${extra}`);
  }
  lines.push(`  --help                           Show this help.`);
  return lines.join("\n");
}

/** Parses a command's arguments into typed flags; throws UsageError on any mistake. */
export function parseCommand(
  name: string,
  argv: string[],
): { positional: string | undefined; positionals: string[]; flags: ParsedFlags; help: boolean } {
  const spec = COMMANDS[name];
  if (!spec) {
    throw new UsageError(
      `Unknown command "${name}"; run \`moetrace --help\` for the list.${
        didYouMean(name, Object.keys(COMMANDS))
      }`,
    );
  }
  const options: Record<string, { type: "string" | "boolean" }> = { help: { type: "boolean" } };
  for (const [flag, f] of Object.entries(spec.flags)) {
    options[flag] = { type: f.kind === "boolean" ? "boolean" : "string" };
  }
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    const unknown = /Unknown option '([^']+)'/.exec(message);
    if (unknown) {
      const known = ["help", ...Object.keys(spec.flags)];
      throw new UsageError(
        `Unknown option ${unknown[1]} for ${name}; run \`moetrace ${name} --help\`.${
          didYouMean(unknown[1]!.replace(/^-+/, ""), known, "--")
        }`,
      );
    }
    const missing = /Option '([^']+?)(?: <value>)?' argument missing/.exec(message);
    if (missing) throw new UsageError(`Option ${missing[1]} of ${name} needs a value.`);
    const ambiguous = /Option '([^']+?)' argument is ambiguous/.exec(message);
    if (ambiguous) {
      throw new UsageError(
        `Option ${ambiguous[1]} of ${name} got a value starting with "-"; write it as ${
          ambiguous[1]
        }=VALUE.`,
      );
    }
    throw new UsageError(`${message.replace(/\.$/, "")} (in ${name}).`);
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  if (values.help) return { positional: undefined, positionals: [], flags: {}, help: true };
  const positionals = parsed.positionals;
  if (spec.positional) {
    if (positionals.length === 0 && !spec.positional.optional) {
      throw new UsageError(
        `${name} needs a ${spec.positional.name} argument; run \`moetrace ${name} --help\`.`,
      );
    }
    if (positionals.length > 1 && !spec.positional.multiple) {
      throw new UsageError(
        `${name} takes one ${spec.positional.name} argument, got ${positionals.length}.`,
      );
    }
  } else if (positionals.length > 0) {
    throw new UsageError(`${name} takes no positional arguments, got "${positionals[0]}".`);
  }
  if (spec.positional?.path && positionals.includes("")) {
    throw new UsageError(`${name} was given an empty ${spec.positional.name} path.`);
  }
  const flags: ParsedFlags = {};
  for (const [flag, f] of Object.entries(spec.flags)) {
    const raw = values[flag] ?? (f.default !== undefined ? String(f.default) : undefined);
    if (raw === undefined) {
      if (f.required) throw new UsageError(`${name} needs --${flag} ${f.value ?? "VALUE"}.`);
      continue;
    }
    flags[flag] = convertFlag(name, flag, f, raw);
    // An empty path would reach Deno's file system as "", refused there with a stack trace.
    if (f.path && [flags[flag]].flat().includes("")) {
      throw new UsageError(`--${flag} of ${name} needs a path, got an empty one.`);
    }
  }
  return { positional: positionals[0], positionals, flags, help: false };
}

function convertFlag(command: string, flag: string, f: FlagSpec, raw: string | boolean): unknown {
  if (f.kind === "boolean") return raw === true || raw === "true";
  const text = String(raw);
  const number = (part: string, integer: boolean) => {
    const value = Number(part);
    if (part.trim() === "" || !Number.isFinite(value) || (integer && !Number.isInteger(value))) {
      throw new UsageError(
        `--${flag} of ${command} must be ${integer ? "an integer" : "a number"}, got "${part}".`,
      );
    }
    if (f.min !== undefined && value < f.min) {
      throw new UsageError(`--${flag} of ${command} must be at least ${f.min}, got ${value}.`);
    }
    // Seeds seed a 32-bit PRNG: a larger one would silently be taken modulo 2^32.
    if (flag === "seed" && value > 0xffffffff) {
      throw new UsageError(`--seed of ${command} must be at most 4294967295, got ${part}.`);
    }
    return value;
  };
  switch (f.kind) {
    case "int":
      return number(text, true);
    case "number":
      return number(text, false);
    case "list":
    case "int-list": {
      const parts = text.split(",").map((s) => s.trim()).filter((s) => s !== "");
      if (parts.length === 0) {
        throw new UsageError(`--${flag} of ${command} needs at least one value.`);
      }
      return f.kind === "list" ? parts : parts.map((p) => number(p, true));
    }
    default:
      if (f.choices && !f.choices.includes(text)) {
        throw new UsageError(
          `--${flag} of ${command} must be one of ${f.choices.join(", ")}, got "${text}".${
            didYouMean(text, f.choices)
          }`,
        );
      }
      return text;
  }
}

/** Runs the CLI and returns the exit status. */
export async function main(argv: string[]): Promise<number> {
  try {
    const [name, ...rest] = argv;
    if (name === undefined || name === "--help" || name === "-h" || name === "help") {
      console.log(usage());
      return name === undefined ? 2 : 0;
    }
    if (name === "--version" || name === "-V") {
      console.log(`moetrace ${TOOL_VERSION}`);
      return 0;
    }
    const { positional, positionals, flags, help } = parseCommand(name, rest);
    const spec = COMMANDS[name]!;
    if (help) {
      console.log(commandUsage(name, spec));
      return 0;
    }
    const stopListening = exitOnInterrupt(spec.resumable === true);
    try {
      await spec.run(positional, flags, positionals);
    } finally {
      stopListening();
    }
    return 0;
  } catch (error) {
    if (isUserError(error)) {
      console.error(`moetrace: ${error.message}`);
      return error.exitCode;
    }
    if (error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied) {
      console.error(`moetrace: permission refused: ${error.message.split("\n")[0]}`);
      return 1;
    }
    throw error;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
