// What a miss does in the timing model (--on-miss, --tier, --miss-dtype):
// small replays whose every event is worked out by hand in the comments.
import { deepStrictEqual as assertEquals, ok } from "node:assert";
import { syntheticModel } from "../trace/synthetic.ts";
import { NO_EXPERT } from "../trace/mod.ts";
import { accessTraceOf } from "./access_trace.ts";
import { type StepCosts, stepCosts } from "./costs.ts";
import { DTYPES } from "./dtypes.ts";
import { policyOptions } from "./expert_cache.ts";
import { HARDWARE_PRESETS } from "./hardware.ts";
import { createPolicy, type PolicyName } from "./policies/mod.ts";
import { SpeculativePrefetcher } from "./prefetch/mod.ts";
import { replay } from "./replay.ts";
import { parseTier, SSD_PRESETS } from "./tiers.ts";

/**
 * Top-2, one layer, 4 experts, LRU with 2 slots. Tokens pick {0,1}, {0,2},
 * {3,2}. Attention 1 ms, expert 2 ms on the GPU, upload 5 ms, other 0.
 * LRU: t1 hits 0 and loads 2 over 1; t2 loads 3 over 0 and hits 2.
 */
function cpuExample(onMiss: "cpu" | "cheaper" | undefined, cpuExpertMs: number) {
  const trace = accessTraceOf([[[0, 1]], [[0, 2]], [[3, 2]]], { experts: 4 });
  const costs: StepCosts = {
    expertBytes: 1000,
    transferMs: 5,
    expertMs: 2,
    attentionMs: 1,
    otherMs: 0,
    ...(onMiss ? { onMiss, cpuExpertMs } : {}),
  };
  const result = replay(trace, {
    policy: createPolicy("lru", policyOptions({ layers: 1, experts: 4, topK: 2, capacity: 2 })),
    budget: "per-layer",
    prefetcher: null,
    costs: [costs],
  });
  return { timing: result.timings[0]!, stats: result.stats };
}

Deno.test("on-miss transfer: every miss is uploaded and waited for", () => {
  // t0: router at 1; 0 uploads 1→6, 1 uploads 6→11; stall 10; compute 11→15.
  // t1: router at 16; 0 hits; 2 uploads 16→21; stall 5; compute →25.
  // t2: router at 26; 3 uploads 26→31, 2 hits; stall 5; compute →35.
  const { timing, stats } = cpuExample(undefined, 0);
  assertEquals(timing.now, 35);
  assertEquals([...timing.stallMs], [20]);
  assertEquals([...timing.cpuExperts], [0]);
  assertEquals([...stats.misses], [4]);
});

Deno.test("on-miss cpu: misses computed on the CPU beside the GPU's hits, uploads in the background (hand-computed)", () => {
  // CPU 3 ms per expert.
  // t0: router at 1; uploads of 0 (1→6) and 1 (6→11) go on in the background.
  //     CPU: 0 from 1→4, 1 from 4→7; the GPU has nothing to compute.
  //     end 7; stall = 7 − 1 − 0 = 6; layer 1 + 6 = 7.
  // t1: router at 8; 0 hits (resident since 6); 2 misses: upload 11→16 behind
  //     the queue, CPU 8→11; GPU computes 0 from 8→10. end max(10, 11) = 11;
  //     stall 11 − 8 − 2 = 1; layer 1 + 1 + 2 = 4.
  // t2: router at 12; 3 misses: upload 16→21, CPU 12→15; 2 hits but its upload
  //     is in flight until 16, so the CPU computes it too, 15→18. end 18;
  //     stall 6; layer 7.
  const { timing, stats } = cpuExample("cpu", 3);
  assertEquals(timing.now, 18);
  assertEquals([...timing.stallMs], [6 + 1 + 6]);
  assertEquals([...timing.layerMs], [7 + 4 + 7]);
  assertEquals([...timing.cpuExperts], [2 + 1 + 2]);
  // The cache's contents do not depend on --on-miss.
  assertEquals([...stats.misses], [4]);
  assertEquals(timing.queueFree, 21);
});

Deno.test("on-miss cheaper: per step, the smaller of waiting for uploads and computing on the CPU (hand-computed)", () => {
  // CPU 8 ms per expert: two misses on the CPU (16 ms) lose to uploading them
  // (5 + 5 + 2 × 2 = 14 ms), one miss on the CPU (8 ms) beats uploading it (5 + 2 × 2 = 9).
  // t0: router at 1; uploads 1→6, 6→11. transfer: 11 + 4 = 15; CPU: 1→9→17
  //     (GPU idle). 15 < 17: transfer; stall 10; layer 1 + 10 + 4 = 15.
  // t1: router at 16; 0 hits; 2 uploads 16→21. transfer: 21 + 4 = 25; CPU
  //     16→24, GPU computes 0 16→18: 24 < 25: CPU; stall 24 − 16 − 2 = 6; layer 9.
  // t2: router at 25; 3 uploads 25→30 (queue idle since 21); 2 hits (resident
  //     since 21). transfer: 30 + 4 = 34; CPU 25→33, GPU 25→27: 33: CPU; stall 6; layer 9.
  const cheaper = cpuExample("cheaper", 8);
  assertEquals(cheaper.timing.now, 33);
  assertEquals([...cheaper.timing.stallMs], [10 + 6 + 6]);
  assertEquals([...cheaper.timing.layerMs], [15 + 9 + 9]);
  assertEquals([...cheaper.timing.cpuExperts], [2]);
  // --on-miss cpu at 8 ms: t0 CPU 1→17 (stall 16); t1 router 18, upload 18→23,
  // CPU 18→26, GPU 18→20 (stall 6); t2 router 27, upload 27→32, 2 resident
  // since 23, CPU 27→35, GPU 27→29 (stall 6): 35, no better than transfer's 35.
  const cpu = cpuExample("cpu", 8);
  assertEquals(cpu.timing.now, 35);
  assertEquals([...cpu.timing.stallMs], [16 + 6 + 6]);
  assertEquals([...cpu.timing.cpuExperts], [4]);
});

Deno.test("the CPU's expert time is its roofline, or the measured cpu_expert_ms", () => {
  const model = { ...syntheticModel(), expert_params: 2_000_000, hidden_size: 1000 };
  const miss = {
    onMiss: "cpu" as const,
    missDtype: null,
    tier: null,
    budget: "per-layer" as const,
  };
  // bf16: 4,000,000 bytes. pcie4's host: 89.6 GB/s, 2.3 TFLOP/s:
  // max(4e6 / 89.6e9 s = 44.6 µs, 2 × 2e6 / 2.3e12 s = 1.7 µs) → memory-bound.
  const costs = stepCosts(HARDWARE_PRESETS.pcie4!, DTYPES.bf16!, model, miss);
  ok(Math.abs(costs.cpuExpertMs! - 0.044642857142857144) < 1e-15);
  assertEquals(costs.onMiss, "cpu");
  const measured = stepCosts(
    { ...HARDWARE_PRESETS.pcie4!, cpu_expert_ms: 7 },
    DTYPES.bf16!,
    model,
    miss,
  );
  assertEquals(measured.cpuExpertMs, 7);
  // Without a miss setting the costs are exactly the old ones (no new fields).
  assertEquals(
    Object.keys(stepCosts(HARDWARE_PRESETS.pcie4!, DTYPES.bf16!, model)).sort(),
    ["attentionMs", "expertBytes", "expertMs", "otherMs", "transferMs"],
  );
});

/**
 * Top-1, one layer, 4 experts. The GPU holds 1 expert (LRU), host RAM 2
 * (`ramPolicy`), the SSD everything. Tokens pick 0, 1, 0, 2, 1. Attention
 * 1 ms, expert 1 ms, upload from RAM 2 ms, read from the SSD 10 ms.
 */
function tierExample(ramPolicy: PolicyName) {
  const trace = accessTraceOf([[[0]], [[1]], [[0]], [[2]], [[1]]], { experts: 4 });
  const costs: StepCosts = {
    expertBytes: 1000,
    transferMs: 2,
    expertMs: 1,
    attentionMs: 1,
    otherMs: 0,
    tier: { ramCapacity: 2, ramPolicy, budget: "per-layer", ssdMs: 10, missSsdMs: 10 },
  };
  return replay(trace, {
    policy: createPolicy("lru", policyOptions({ layers: 1, experts: 4, topK: 1, capacity: 1 })),
    budget: "per-layer",
    prefetcher: null,
    costs: [costs],
  }).timings[0]!;
}

Deno.test("tiers: a GPU miss is served from RAM when RAM holds it, else from the SSD (hand-computed)", () => {
  // Every token misses on the GPU (1 slot, no two consecutive tokens alike).
  // t0: router at 1; RAM misses 0: SSD 1→11, RAM {0}; compute →12.
  // t1: router at 13; RAM misses 1: SSD 13→23, RAM {0,1}; →24.
  // t2: router at 25; RAM hits 0: link 25→27; →28.
  // t3: router at 29; RAM misses 2: SSD 29→39; RAM LRU evicts 1 (0 was used at t2); →40.
  // t4: router at 41; RAM misses 1: SSD 41→51; →52.
  const lru = tierExample("lru");
  assertEquals(lru.now, 52);
  assertEquals([...lru.stallMs], [10 + 10 + 2 + 10 + 10]);
  assertEquals([...lru.ramHits], [1]);
  assertEquals([...lru.ssdReads], [4]);
  // RAM under FIFO evicts 0 at t3 (the first in), so t4 finds 1 in RAM:
  // link 41→43, compute →44.
  const fifo = tierExample("fifo");
  assertEquals(fifo.now, 44);
  assertEquals([...fifo.ramHits], [2]);
  assertEquals([...fifo.ssdReads], [3]);
});

Deno.test("tiers: --tier parsing and the SSD read time from a preset", () => {
  const tier = parseTier("ram=64GiB:lfu,ssd=nvme-gen4");
  assertEquals(tier.ram, { kind: "bytes", bytes: 64 * 2 ** 30 });
  assertEquals(tier.ramPolicy, "lfu");
  assertEquals(tier.ssd, SSD_PRESETS["nvme-gen4"]);
  assertEquals(parseTier("ssd=3.5:20").ssd.read_gb_s, 3.5);
  assertEquals(parseTier("ssd=ufs4").ram, { kind: "experts", experts: 0 });
  // 2e8-parameter experts in bf16 = 4e8 bytes; RAM of 64 GiB holds
  // floor(68,719,476,736 / 4e8) = 171 experts, 5 per layer over 32 layers.
  // NVMe Gen4 (7.45 GB/s) is slower than PCIe 4.0 (25.2): 0.08 ms + 4e8 / 7.45e9 s.
  const model = { ...syntheticModel(), expert_params: 200_000_000, hidden_size: 1000 };
  model.moe_layers = Array.from({ length: 32 }, (_, i) => i);
  const costs = stepCosts(HARDWARE_PRESETS.pcie4!, DTYPES.bf16!, model, {
    onMiss: "transfer",
    missDtype: null,
    tier,
    budget: "per-layer",
  });
  assertEquals(costs.tier!.ramCapacity, 5);
  ok(Math.abs(costs.tier!.ssdMs - (0.08 + 4e8 / 7.45e9 * 1000)) < 1e-9);
  for (const bad of ["ram=8", "disk=nvme-gen4", "ram=8:belady,ssd=nvme-gen4", "ssd=fast"]) {
    let message = "";
    try {
      parseTier(bad);
    } catch (error) {
      message = (error as Error).message;
    }
    ok(message.startsWith("--tier"), `${bad}: ${message}`);
  }
});

Deno.test("miss-dtype: a demand miss fetches the low-precision copy, used until a full-precision load replaces it (hand-computed)", () => {
  // Top-1, two layers, 4 experts, LRU 1 slot per layer. Both tokens pick 0
  // at layer 0 and 1 at layer 1; at layer 0 the speculative pick for layer 1
  // is 1. Attention 1, expert 1, full upload 4, low-precision upload 1.
  const trace = accessTraceOf([[[0], [1]], [[0], [1]]], {
    experts: 4,
    spec: [[[[1]], [[NO_EXPERT]]], [[[1]], [[NO_EXPERT]]]],
  });
  const costs: StepCosts = {
    expertBytes: 1000,
    transferMs: 4,
    expertMs: 1,
    attentionMs: 1,
    otherMs: 0,
    missBytes: 250,
    missTransferMs: 1,
  };
  const timing = replay(trace, {
    policy: createPolicy("lru", policyOptions({ layers: 2, experts: 4, topK: 1, capacity: 1 })),
    budget: "per-layer",
    prefetcher: new SpeculativePrefetcher(trace, 1),
    costs: [costs],
  }).timings[0]!;
  // t0 L0: router at 1; 0 misses: low-precision copy 1→2 (degraded use); the
  //        prefetch of layer 1's expert 1 is full precision, 2→6; compute 2→3.
  // t0 L1: router at 4; 1 first used, in flight until 6 (late): stall 2; compute 6→7.
  // t1 L0: router at 8; 0 hits its low-precision copy (degraded use); →9.
  // t1 L1: router at 10; 1 hits its full copy; →11.
  assertEquals(timing.now, 11);
  assertEquals([...timing.stallMs], [1, 2]);
  assertEquals([...timing.degradedUses], [2, 0]);
  assertEquals([...timing.degradedSteps], [2, 0]);
  assertEquals(timing.degradedTokens, 2);
});

Deno.test("on-miss cpu: a prefetch still in flight at its first use is computed on the CPU too (hand-computed)", () => {
  // Top-1, two layers, 4 experts, LRU 1 slot per layer; token 0 picks 0 then
  // 1, and at layer 0 the speculative pick for layer 1 is 1. Attention 1,
  // expert 1 on the GPU, upload 4, CPU 2.
  const trace = accessTraceOf([[[0], [1]]], { experts: 4, spec: [[[[1]], [[NO_EXPERT]]]] });
  const costs: StepCosts = {
    expertBytes: 1000,
    transferMs: 4,
    expertMs: 1,
    attentionMs: 1,
    otherMs: 0,
    onMiss: "cpu",
    cpuExpertMs: 2,
  };
  const timing = replay(trace, {
    policy: createPolicy("lru", policyOptions({ layers: 2, experts: 4, topK: 1, capacity: 1 })),
    budget: "per-layer",
    prefetcher: new SpeculativePrefetcher(trace, 1),
    costs: [costs],
  }).timings[0]!;
  // L0: router at 1; 0 misses: upload 1→5 in the background, CPU 1→3; the
  //     prefetch of layer 1's expert 1 queues 5→9. End 3, stall 2.
  // L1: router at 4; 1 is in flight until 9 (late): the CPU computes it 4→6
  //     instead of the GPU waiting until 9 and computing →10. End 6, stall 2.
  assertEquals(timing.now, 6);
  assertEquals([...timing.stallMs], [2, 2]);
  assertEquals([...timing.late], [0, 1]);
  assertEquals([...timing.cpuExperts], [1, 1]);
});

Deno.test("tiers with on-miss cpu: SSD reads queue one after another and the CPU starts each expert when its read is done (hand-computed)", () => {
  // Top-2, one layer, 4 experts, GPU LRU 2 slots, RAM holding nothing: every
  // upload reads the SSD (10 ms each, one at a time). Attention 1, expert 2
  // on the GPU, CPU 3. Tokens pick {0,1} then {0,2}.
  const trace = accessTraceOf([[[0, 1]], [[0, 2]]], { experts: 4 });
  const costs: StepCosts = {
    expertBytes: 1000,
    transferMs: 2,
    expertMs: 2,
    attentionMs: 1,
    otherMs: 0,
    onMiss: "cpu",
    cpuExpertMs: 3,
    tier: { ramCapacity: 0, ramPolicy: "lru", budget: "per-layer", ssdMs: 10, missSsdMs: 10 },
  };
  const timing = replay(trace, {
    policy: createPolicy("lru", policyOptions({ layers: 1, experts: 4, topK: 2, capacity: 2 })),
    budget: "per-layer",
    prefetcher: null,
    costs: [costs],
  }).timings[0]!;
  // t0: router at 1; 0 is read 1→11, 1 is read 11→21; the CPU computes 0
  //     from 11→14 and 1 from 21→24; the GPU has none. End 24, stall 23.
  // t1: router at 25; 0 hits (resident since 11); 2 is read 25→35 and
  //     computed 35→38 on the CPU while the GPU computes 0 from 25→27.
  //     End 38, stall 38 − 25 − 2 = 11.
  assertEquals(timing.now, 38);
  assertEquals([...timing.stallMs], [23 + 11]);
  assertEquals([...timing.cpuExperts], [3]);
  assertEquals([...timing.ssdReads], [3]);
  assertEquals([...timing.ramHits], [0]);
  assertEquals(timing.ssdFree, 35);
  assertEquals(timing.queueFree, 0);
});
