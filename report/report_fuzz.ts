/**
 * The fuzz target for every file `report` reads (tests/fuzz): a real
 * analysis, simulation and compare folder and an offloaded run's
 * measured.csv, one of whose files each case mutates (JSON values, CSV
 * cells, header names or raw bytes). A case must write the report or fail
 * with one sentence and leave neither the report nor its staging file; a
 * report that is written must hold no live script.
 */
import type { Rng } from "../common/random.ts";
import { writeSyntheticTrace } from "../trace/synthetic.ts";
import { TraceReader } from "../trace/mod.ts";
import { runAnalysis } from "../analysis/run.ts";
import { writeAnalysis } from "../analysis/write.ts";
import { pathExists } from "../common/fs.ts";
import { writeReport } from "./report.ts";

/** What the fuzz harness (tests/fuzz/fuzz.ts) needs of a target; kept structural here. */
export interface ReportFuzzTarget {
  name: string;
  make: (rng: Rng, i: number) => Promise<{
    label: string;
    run: () => Promise<void>;
    clean?: () => Promise<boolean>;
  }>;
  teardown?: () => Promise<void>;
}

const WEIRD_CELLS = [
  "",
  "NaN",
  "Infinity",
  "-1",
  "1e999",
  "abc",
  '"',
  "all",
  "0",
  "<script>alert(1)</script>",
  "javascript:alert(1)",
  "x".repeat(5000),
  "1,2",
];

const WEIRD_JSON: unknown[] = [
  null,
  0,
  -1,
  "",
  "../../etc/passwd",
  "/etc/hosts.svg",
  "x.svg",
  [],
  {},
  true,
  1e308,
  "<script>alert(1)</script>",
];

function mutateCsv(rng: Rng, text: string): { text: string; label: string } {
  const lines = text.split("\n");
  const row = rng.int(Math.max(1, lines.length - 1));
  const cells = (lines[row] ?? "").split(",");
  switch (rng.int(5)) {
    case 0: {
      const col = rng.int(cells.length);
      const cell = WEIRD_CELLS[rng.int(WEIRD_CELLS.length)]!;
      cells[col] = cell;
      lines[row] = cells.join(",");
      return {
        text: lines.join("\n"),
        label: `line ${row + 1} field ${col + 1} = ${cell.slice(0, 20)}`,
      };
    }
    case 1:
      cells.pop();
      lines[row] = cells.join(",");
      return { text: lines.join("\n"), label: `line ${row + 1} one field short` };
    case 2:
      lines.splice(row, 1);
      return { text: lines.join("\n"), label: `line ${row + 1} removed` };
    case 3: {
      const cut = rng.int(text.length + 1);
      return { text: text.slice(0, cut), label: `cut at byte ${cut}` };
    }
    default: {
      const at = rng.int(text.length + 1);
      const bytes = ['"', "\u0000", "\r", "\n\n", "\uFFFD", ","][rng.int(6)]!;
      return {
        text: text.slice(0, at) + bytes + text.slice(at),
        label: `${JSON.stringify(bytes)} at byte ${at}`,
      };
    }
  }
}

/** Replaces one value somewhere in `value` (a JSON document) with a weird one. */
function mutateJsonValue(rng: Rng, value: unknown, depth = 0): { value: unknown; label: string } {
  const weird = WEIRD_JSON[rng.int(WEIRD_JSON.length)];
  if (depth > 3 || typeof value !== "object" || value === null || rng.next() < 0.25) {
    return { value: weird, label: `${JSON.stringify(weird)}` };
  }
  const copy: Record<string, unknown> | unknown[] = Array.isArray(value)
    ? [...value]
    : { ...(value as Record<string, unknown>) };
  const keys = Object.keys(copy);
  if (keys.length === 0) return { value: weird, label: `${JSON.stringify(weird)}` };
  const key = keys[rng.int(keys.length)]!;
  const inner = mutateJsonValue(rng, (copy as Record<string, unknown>)[key], depth + 1);
  (copy as Record<string, unknown>)[key] = inner.value;
  return { value: copy, label: `${key}.${inner.label}` };
}

export async function reportFuzzTarget(): Promise<ReportFuzzTarget> {
  const root = await Deno.makeTempDir({ prefix: "moetrace-fuzz-report-" });
  await writeSyntheticTrace(`${root}/trace`, {
    numLayers: 2,
    numExperts: 4,
    topK: 2,
    tokensPerDoc: 12,
    probs: true,
    domains: [{ name: "A", docs: 3 }, { name: "B", docs: 3 }, { name: "C", docs: 2 }],
    vocabSize: 8,
  });
  const result = await runAnalysis(await TraceReader.open(`${root}/trace`), {
    bootstrap: 10,
    seed: 1,
  });
  await writeAnalysis(result, `${root}/an`, { bootstrap: 10, seed: 1, figures: false });
  await Deno.mkdir(`${root}/sim`);
  await Deno.writeTextFile(
    `${root}/sim/simulation.json`,
    JSON.stringify({ trace: `${root}/trace`, model: { num_experts: 4, top_k: 2 }, sweep: {} }),
  );
  await Deno.writeTextFile(`${root}/sim/figures.json`, "[]");
  await Deno.writeTextFile(
    `${root}/sim/simulation.csv`,
    [
      "policy,budget,capacity,capacity_spec,prefetch,dtype,hardware,layer,hit_rate,misses,prefetch_issued,ms_per_token,ms_per_token_ci_low,ms_per_token_ci_high",
      "lru,per-layer,2,2,none,bf16,box,0,0.4,6,0,0.5,,",
      "lru,per-layer,2,2,none,bf16,box,all,0.4,12,0,1.5,1.4,1.6",
      "belady,per-layer,2,2,none,bf16,box,all,0.6,8,0,1.2,1.1,1.3",
      "lru,per-layer,2,2,oracle,bf16,box,all,1,0,12,0.9,0.8,1",
    ].join("\n") + "\n",
  );
  await Deno.writeTextFile(
    `${root}/sim/prefetch_accuracy.csv`,
    "prefetch,layer,lookahead,n_docs,n_tokens,opportunities,predicted,correct,precision,recall\noracle,1,1,8,96,96,192,192,1,1\n",
  );
  await Deno.writeTextFile(
    `${root}/trace/measured.csv`,
    "doc,phase,token,pos,ms,uploads,misses,prefetched,bytes,policy,capacity,prefetch\n0,0,-1,0,,4,4,0,100,lru,2,none\n0,1,0,1,10,2,2,0,50,lru,2,none\n",
  );
  await Deno.mkdir(`${root}/cmp`);
  await Deno.writeTextFile(
    `${root}/cmp/compare.json`,
    JSON.stringify({
      format: "moetrace-compare/1",
      a: { label: "a" },
      b: { label: "b" },
      notes: [],
    }),
  );
  await Deno.writeTextFile(
    `${root}/cmp/summary.csv`,
    "statistic,layer,moe_layer,domain,quantity,value_a,value_b,difference,difference_ci_low,difference_ci_high,interval_excludes_zero\nfirst_choice_repeat,all,all,all,value,0.3,0.4,0.1,0.05,0.15,true\n",
  );
  const inputs = [
    "an/figures.json",
    "an/analysis.json",
    "an/summary.csv",
    "an/repetition.csv",
    "an/cosmoes.csv",
    "an/load_balance.csv",
    "an/domain_divergence.csv",
    "an/vocabulary_specialisation.csv",
    "an/expert_shares.csv",
    "an/coactivation.csv",
    "an/token_colouring.html",
    "sim/figures.json",
    "sim/simulation.json",
    "sim/simulation.csv",
    "sim/prefetch_accuracy.csv",
    "trace/measured.csv",
    "cmp/compare.json",
    "cmp/summary.csv",
  ];
  const pristine = new Map<string, string>();
  for (const file of inputs) pristine.set(file, await Deno.readTextFile(`${root}/${file}`));
  let mutated: string | null = null;
  const out = `${root}/report.html`;
  return {
    name: "report inputs (figures.json, facts JSON, CSVs, colouring, measured.csv, compare)",
    make: async (rng) => {
      if (mutated) await Deno.writeTextFile(`${root}/${mutated}`, pristine.get(mutated)!);
      await Deno.remove(out).catch(() => {});
      const file = inputs[rng.int(inputs.length)]!;
      const original = pristine.get(file)!;
      let text: string, label: string;
      if (file.endsWith(".json") && rng.next() < 0.8) {
        const m = mutateJsonValue(rng, JSON.parse(original));
        [text, label] = [JSON.stringify(m.value), m.label];
      } else {
        ({ text, label } = mutateCsv(rng, original));
      }
      await Deno.writeTextFile(`${root}/${file}`, text);
      mutated = file;
      return {
        label: `report with ${file}: ${label}`,
        run: async () => {
          await writeReport(`${root}/an`, `${root}/sim`, out, { compare: `${root}/cmp` });
          const html = await Deno.readTextFile(out);
          // Links are relative or anchors, images data: SVGs; no script element anywhere.
          if (/<script|(?:href|src)="(?!\.\/|#|data:image\/svg\+xml;base64,)/i.test(html)) {
            throw new Error("the report holds a live script or a scheme link");
          }
        },
        clean: async () => !(await pathExists(out)) && !(await pathExists(`${out}.partial`)),
      };
    },
    teardown: () => Deno.remove(root, { recursive: true }),
  };
}
