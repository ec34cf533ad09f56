// simulate --on-miss, --tier and --miss-dtype through the command, checked
// against counts derived in the test from the trace and the flags' definitions.
import { deepStrictEqual as assertEquals, ok, rejects } from "node:assert";
import { parse } from "csv-parse/sync";
import { UsageError } from "../common/errors.ts";
import { writeSyntheticTrace } from "../trace/synthetic.ts";
import { loadAccessTrace } from "./access_trace.ts";
import { DTYPES, expertBytes } from "./dtypes.ts";
import { simulateCommand, SIMULATION_COLUMNS } from "./simulate.ts";

const dir = await Deno.makeTempDir({ prefix: "moetrace-simulate-miss-test-" });
const trace = `${dir}/trace`;
await writeSyntheticTrace(trace, {
  numLayers: 3,
  numExperts: 8,
  topK: 2,
  stickiness: 0.5,
  domains: [{ name: "A", docs: 4 }],
  tokensPerDoc: 40,
  seed: 5,
});
const base = {
  policy: ["lru"],
  capacity: ["3"],
  prefetch: ["none"],
  hardware: ["pcie4"],
  dtype: ["bf16"],
  budget: "per-layer",
  seed: 0,
  bootstrap: 0,
};

function allRow(out: string): Record<string, string> {
  const rows: Record<string, string>[] = parse(Deno.readTextFileSync(`${out}/simulation.csv`), {
    columns: true,
  });
  const all = rows.filter((r) => r.layer === "all");
  assertEquals(all.length, 1);
  return all[0]!;
}

/** Distinct keys (layer × E + expert) the trace touches: the SSD reads of a RAM that never evicts. */
async function distinctKeys(): Promise<number> {
  const { trace: t } = await loadAccessTrace(trace);
  const seen = new Set<number>();
  for (let i = 0; i < t.chosen.length; i++) {
    const layer = Math.floor(i / t.topK) % t.layers;
    seen.add(layer * t.experts + t.chosen[i]!);
  }
  return seen.size;
}

Deno.test("simulate --tier: with RAM holding every expert, only first touches read the SSD", async () => {
  const out = `${dir}/tier`;
  await simulateCommand(trace, { ...base, out, tier: "ram=8:lru,ssd=nvme-gen4" });
  const row = allRow(out);
  assertEquals(Object.keys(row), [...SIMULATION_COLUMNS]);
  const first = await distinctKeys();
  assertEquals(Number(row.ssd_reads), first);
  assertEquals(Number(row.ram_hits), Number(row.misses) - first);
  assertEquals(row.tier, "ram=8:lru,ssd=nvme-gen4");
  const facts = JSON.parse(Deno.readTextFileSync(`${out}/simulation.json`));
  assertEquals(facts.sweep.tier.ssd.read_gb_s, 7.45);
  assertEquals(facts.sweep.tier.ram, { kind: "experts", experts: 8 });
  assertEquals([facts.sweep.on_miss, facts.sweep.miss_dtype], ["transfer", null]);
  assertEquals(facts.costs[0].ram_experts, 8);
  // Every SSD read is slower than an upload from RAM: the tiered run is slower.
  const plain = `${dir}/plain`;
  await simulateCommand(trace, { ...base, out: plain });
  ok(Number(row.ms_per_token) > Number(allRow(plain).ms_per_token));
  assertEquals(allRow(plain).ssd_reads, "0");
  assertEquals(allRow(plain).on_miss, "transfer");
});

Deno.test("simulate --miss-dtype: without prefetch every use is of a low-precision copy", async () => {
  const out = `${dir}/hobbit`;
  await simulateCommand(trace, { ...base, out, "miss-dtype": "int4" });
  const row = allRow(out);
  // Every key enters the cache by a demand miss (no prefetch), so every
  // access, hit or miss, uses the int4 copy, and every token has one.
  assertEquals(Number(row.degraded_uses), Number(row.accesses));
  assertEquals(Number(row.degraded_tokens), Number(row.n_tokens));
  const int4 = expertBytes(3 * 4096 * 14336, DTYPES.int4!);
  const perToken = Number(row.misses) * int4 / Number(row.n_tokens);
  ok(Math.abs(Number(row.bytes_per_token) - perToken) < 1e-6 * perToken);
  assertEquals(row.miss_dtype, "int4");
});

Deno.test("simulate --on-miss cpu computes at least every miss on the CPU, faster than uploads for Mixtral-sized experts on pcie4", async () => {
  const cpu = `${dir}/cpu`;
  await simulateCommand(trace, { ...base, out: cpu, "on-miss": "cpu" });
  const row = allRow(cpu);
  ok(Number(row.cpu_experts) >= Number(row.misses));
  assertEquals(row.on_miss, "cpu");
  // Mixtral-sized bf16 experts: the desktop CPU's 3.9 ms (352 MB at 89.6 GB/s)
  // beats the 14 ms upload over PCIe 4.0, so cpu is faster than transfer.
  const plain = `${dir}/plain-cpu`;
  await simulateCommand(trace, { ...base, out: plain });
  ok(Number(row.ms_per_token) < Number(allRow(plain).ms_per_token));
});

Deno.test("simulate refuses bad miss flags in one sentence", async () => {
  await Deno.writeTextFile(
    `${dir}/nocpu.json`,
    JSON.stringify({
      name: "nocpu",
      bandwidth_gb_s: 16,
      latency_us: 20,
      expert_ms: 0.3,
      attention_ms_per_layer: 0.1,
    }),
  );
  const cases: [Record<string, unknown>, string][] = [
    [
      { "miss-dtype": "bf16" },
      "--miss-dtype bf16 (16 bits per weight) is not smaller than --dtype bf16 (16).",
    ],
    [
      { "on-miss": "cpu", hardware: [`${dir}/nocpu.json`] },
      `--on-miss cpu needs the CPU's expert time, but --hardware nocpu gives neither "cpu_expert_ms" nor "cpu_memory_gb_s" and "cpu_tflops".`,
    ],
    [{ tier: "ram=4" }, "--tier takes"],
    [
      { tier: "ssd=nvme-gen4", batch: 2 },
      "--on-miss, --tier and --miss-dtype time one document's steps",
    ],
  ];
  for (const [flags, message] of cases) {
    await rejects(
      simulateCommand(trace, { ...base, out: `${dir}/bad`, ...flags }),
      (error: Error) => {
        ok(error instanceof UsageError, `${JSON.stringify(flags)}: ${error.message}`);
        ok(error.message.startsWith(message), `${JSON.stringify(flags)}: ${error.message}`);
        return true;
      },
    );
  }
});
