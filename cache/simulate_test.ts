import { deepStrictEqual as assertEquals, ok, rejects } from "node:assert";
import { parse } from "csv-parse/sync";
import { writeSyntheticTrace } from "../trace/synthetic.ts";
import { UsageError } from "../common/errors.ts";
import {
  ACCURACY_COLUMNS,
  autoCapacities,
  MRC_COLUMNS,
  simulateCommand,
  SIMULATION_COLUMNS,
} from "./simulate.ts";

const dir = await Deno.makeTempDir({ prefix: "moetrace-simulate-test-" });
const trace = `${dir}/trace`;
await writeSyntheticTrace(trace, {
  numLayers: 4,
  numExperts: 8,
  topK: 2,
  stickiness: 0.4,
  lookahead: 1,
  domains: [{ name: "A", docs: 10 }, { name: "B", docs: 10 }],
  tokensPerDoc: 50,
  seed: 3,
});
const noSpec = `${dir}/nospec`;
await writeSyntheticTrace(noSpec, {
  numLayers: 2,
  numExperts: 4,
  topK: 2,
  domains: [{ name: "A", docs: 2 }],
  tokensPerDoc: 10,
});
await Deno.writeTextFile(
  `${dir}/lab.json`,
  JSON.stringify({
    name: "lab",
    bandwidth_gb_s: 16,
    latency_us: 20,
    expert_ms: 0.3,
    attention_ms_per_layer: 0.1,
  }),
);

function readCsv(path: string): Record<string, string>[] {
  return parse(Deno.readTextFileSync(path), { columns: true });
}

Deno.test("simulate writes every output with the documented columns", async () => {
  const out = `${dir}/out`;
  await simulateCommand(trace, {
    out,
    policy: ["lru", "belady", "swap", "pinned"],
    capacity: ["auto"],
    prefetch: ["none", "speculative", "oracle"],
    hardware: ["pcie4", `${dir}/lab.json`],
    dtype: ["bf16", "q3"],
    budget: "per-layer",
    seed: 0,
  });
  const text = await Deno.readTextFile(`${out}/simulation.csv`);
  assertEquals(text.split("\n")[0], SIMULATION_COLUMNS.join(","));
  ok(!/\d[eE][+-]?\d/.test(text), "no exponent notation");
  const rows = readCsv(`${out}/simulation.csv`);
  // (3 policies × 7 capacities (2..8) + swap once) × 3 prefetchers × 2 hardware × 2 dtypes
  // × (4 layers + all).
  assertEquals(rows.length, (3 * 7 + 1) * 3 * 2 * 2 * 5);
  const allRows = rows.filter((r) => r.layer === "all");
  for (const row of allRows) {
    const layers = rows.filter((r) =>
      r.layer !== "all" && r.policy === row.policy && r.capacity_spec === row.capacity_spec &&
      r.prefetch === row.prefetch && r.dtype === row.dtype && r.hardware === row.hardware
    );
    assertEquals(layers.length, 4);
    assertEquals(layers.reduce((s, r) => s + Number(r.hits), 0), Number(row.hits));
    assertEquals(Number(row.accesses), 1000 * 2 * 4);
    ok(Math.abs(Number(row.tokens_per_s) * Number(row.ms_per_token) - 1000) < 1e-6);
  }
  // Swap reports its real capacity, k per layer.
  ok(
    allRows.filter((r) => r.policy === "swap").every((r) =>
      r.capacity === "2" && r.capacity_spec === "k"
    ),
  );
  // Belady bounds LRU at every capacity without prefetch.
  for (const c of ["2", "3", "4", "5", "6", "7", "8"]) {
    const pick = (p: string) =>
      Number(
        allRows.find((r) =>
          r.policy === p && r.capacity === c && r.prefetch === "none" && r.dtype === "bf16" &&
          r.hardware === "pcie4"
        )!.hit_rate,
      );
    ok(pick("belady") >= pick("lru"), `capacity ${c}`);
  }
  const mrc = await Deno.readTextFile(`${out}/miss_ratio_curve.csv`);
  assertEquals(mrc.split("\n")[0], MRC_COLUMNS.join(","));
  const accuracy = await Deno.readTextFile(`${out}/prefetch_accuracy.csv`);
  assertEquals(accuracy.split("\n")[0], ACCURACY_COLUMNS.join(","));
  const figures = JSON.parse(await Deno.readTextFile(`${out}/figures.json`));
  ok(figures.length >= 3);
  for (const f of figures) {
    assertEquals(Object.keys(f).sort(), ["caption", "file", "section", "title"]);
    assertEquals(f.section, "cache");
    ok((await Deno.readTextFile(`${out}/${f.file}`)).startsWith("<svg"), f.file);
  }
  const facts = JSON.parse(await Deno.readTextFile(`${out}/simulation.json`));
  assertEquals(facts.model.num_experts, 8);
  assertEquals(facts.sweep.hardware, ["pcie4", "lab"]);
  const readme = await Deno.readTextFile(`${out}/README.md`);
  for (const column of SIMULATION_COLUMNS) {
    ok(readme.includes(column), `README documents ${column}`);
  }
  for (const preset of ["pcie3", "pcie5", "nvlink-c2c", "phone-ufs", "phone-unified"]) {
    ok(readme.includes(preset), `README documents ${preset}`);
  }
});

Deno.test("simulate turns a byte budget into experts of each dtype", async () => {
  const out = `${dir}/bytes`;
  // Synthetic experts have 3 × 4096 × 14336 parameters: 352,321,536 bytes in bf16.
  // 8 GB in bf16 buys 22 experts, 5 per layer; in int4 (4.125 bits) 44, 11 → capped at E = 8.
  await simulateCommand(trace, {
    out,
    policy: ["lru"],
    capacity: ["8GB"],
    dtype: ["bf16", "int4"],
    budget: "per-layer",
    seed: 0,
  });
  const rows = readCsv(`${out}/simulation.csv`).filter((r) => r.layer === "all");
  assertEquals(rows.map((r) => [r.dtype, r.capacity, r.capacity_spec]), [
    ["bf16", "5", "8GB"],
    ["int4", "8", "8GB"],
  ]);
});

Deno.test("simulate names the bad flag and value", async () => {
  const run = (flags: Record<string, unknown>, target = trace) =>
    simulateCommand(target, { out: `${dir}/bad`, budget: "per-layer", seed: 0, ...flags });
  await rejects(run({ policy: ["lru", "arc"] }), {
    name: "UsageError",
    message: '--policy takes lru, fifo, lfu, lrfu, random, belady, swap, pinned, got "arc".',
  });
  await rejects(run({ capacity: ["1"] }), {
    message: '--capacity "1" is below top_k (2): a layer\'s 2 experts must fit at once.',
  });
  await rejects(
    run({ capacity: ["lots"] }),
    /--capacity takes auto, expert counts or byte budgets/,
  );
  await rejects(run({ capacity: ["100MB"] }), /--capacity "100MB" \(0 experts of bf16 per layer\)/);
  await rejects(run({ prefetch: ["psychic"] }), /--prefetch takes none, speculative/);
  await rejects(
    run({ dtype: ["fp8"] }),
    /--dtype takes fp32, fp16, bf16, int8, int4, mxfp4, q3, q2, got "fp8"/,
  );
  await rejects(run({ hardware: ["pcie9"] }), UsageError);
  await rejects(
    run({ prefetch: ["speculative"] }, noSpec),
    {
      message:
        `--prefetch speculative needs a trace captured with --lookahead 1 or more; ${noSpec} has lookahead 0.`,
    },
  );
  await rejects(run({ prefetch: ["speculative:2"] }), /--lookahead 2 or more/);
});

Deno.test("--policy lfru still works as a deprecated name of lrfu, with a one-line warning", async () => {
  const flags = { capacity: ["3"], budget: "per-layer", seed: 0 };
  const printed: string[] = [];
  const error = console.error;
  console.error = (...args: unknown[]) => printed.push(args.join(" "));
  try {
    await simulateCommand(trace, { ...flags, out: `${dir}/old-name`, policy: ["lfru", "lru"] });
  } finally {
    console.error = error;
  }
  // One line about the name, besides simulate's own summary.
  assertEquals(printed.filter((line) => line.includes("lfru")), [
    "--policy lfru is deprecated: it names LRFU (Lee et al. 2001); use lrfu.",
  ]);
  await simulateCommand(trace, { ...flags, out: `${dir}/new-name`, policy: ["lrfu", "lru"] });
  const old = await Deno.readTextFile(`${dir}/old-name/simulation.csv`);
  assertEquals(old, await Deno.readTextFile(`${dir}/new-name/simulation.csv`));
  assertEquals(
    [...new Set(readCsv(`${dir}/old-name/simulation.csv`).map((r) => r.policy))],
    ["lrfu", "lru"],
  );
});

Deno.test("a trace without the model's sizes gets hit counts, empty times and one line saying why", async () => {
  // As a log imported without --model-config records it.
  const sizeless = `${dir}/sizeless`;
  await writeSyntheticTrace(sizeless, {
    numLayers: 2,
    numExperts: 4,
    topK: 2,
    domains: [{ name: "A", docs: 2 }],
    tokensPerDoc: 10,
  });
  const manifest = JSON.parse(await Deno.readTextFile(`${sizeless}/manifest.json`));
  manifest.model.expert_params = 0;
  manifest.model.hidden_size = 0;
  await Deno.writeTextFile(`${sizeless}/manifest.json`, JSON.stringify(manifest));
  const printed: string[] = [];
  const error = console.error;
  console.error = (...args: unknown[]) => printed.push(args.join(" "));
  try {
    await simulateCommand(sizeless, {
      out: `${dir}/sizeless-out`,
      policy: ["lru"],
      capacity: ["2"],
      budget: "per-layer",
      seed: 0,
    });
  } finally {
    console.error = error;
  }
  assertEquals(printed.filter((line) => line.includes("expert_params")), [
    `simulate: ${sizeless} does not record the model's expert_params and hidden_size (import it with --model-config config.json); latencies need them, so only hit and miss counts are written.`,
  ]);
  const rows = readCsv(`${dir}/sizeless-out/simulation.csv`);
  ok(rows.length > 0);
  for (const row of rows) {
    assertEquals([row.ms_per_token, row.tokens_per_s, row.bytes_per_token], ["", "", ""]);
    // 2 documents × 10 tokens × top-2 per layer; "all" sums both layers.
    assertEquals(Number(row.accesses), row.layer === "all" ? 80 : 40);
    assertEquals(Number(row.hits) + Number(row.misses), Number(row.accesses));
  }
});

Deno.test("auto capacities: every one up to 16 values, then 16 evenly spaced", () => {
  assertEquals(autoCapacities(2, 8), [2, 3, 4, 5, 6, 7, 8]);
  assertEquals(autoCapacities(1, 16), Array.from({ length: 16 }, (_, i) => i + 1));
  // OLMoE: k = 8 of E = 64.
  assertEquals(autoCapacities(8, 64), [
    8,
    12,
    15,
    19,
    23,
    27,
    30,
    34,
    38,
    42,
    45,
    49,
    53,
    57,
    60,
    64,
  ]);
});
