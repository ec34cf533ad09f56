import { deepStrictEqual as assertEquals, ok, rejects, throws } from "node:assert";
import { accessTraceOf } from "./access_trace.ts";
import { createPolicy } from "./policies/mod.ts";
import { policyOptions } from "./expert_cache.ts";
import { OraclePrefetcher, SpeculativePrefetcher } from "./prefetch/mod.ts";
import { replay } from "./replay.ts";
import { syntheticAccessTrace } from "./synthetic.ts";
import {
  DTYPES,
  expertBytes,
  HARDWARE_PRESETS,
  loadHardware,
  stepCosts,
  validateHardware,
} from "./timing.ts";
import { syntheticModel } from "../trace/synthetic.ts";

const NO = 65535;

/**
 * Top-1, 4 experts, LRU with 1 slot per layer. Token 0 picks 0 then 1, token
 * 1 picks 0 then 1 again. At layer 0 the speculative pick for layer 1 is 1.
 * Attention 1 ms, expert 2 ms, upload 5 ms, other 0.5 ms per token.
 */
function handExample(serialUploads: boolean) {
  const trace = accessTraceOf([[[0], [1]], [[0], [1]]], {
    experts: 4,
    spec: [[[[1]], [[NO]]], [[[1]], [[NO]]]],
  });
  const costs = {
    expertBytes: 1000,
    transferMs: 5,
    expertMs: 2,
    attentionMs: 1,
    otherMs: 0.5,
    serialUploads,
  };
  return replay(trace, {
    policy: createPolicy("lru", policyOptions({ layers: 2, experts: 4, topK: 1, capacity: 1 })),
    budget: "per-layer",
    prefetcher: new SpeculativePrefetcher(trace, 1),
    costs: [costs],
  });
}

Deno.test("timing: hand-computed example, two layers, two tokens, one miss, one late prefetch", () => {
  const result = handExample(false);
  // t0 L0: router at 1; miss on 0 uploads 1→6; prefetch of 1 queues behind it, 6→11;
  //        stall 5, compute 6→8.
  // t0 L1: router at 9; expert 1 in flight until 11: used late, stall 2; compute 11→13.
  //        other 13→13.5.
  // t1 L0: router at 14.5, hit (resident since 6), compute →16.5; prediction 1 already cached.
  // t1 L1: router at 17.5, hit, compute →19.5; other →20.
  const timing = result.timings[0]!;
  assertEquals(timing.now, 20);
  assertEquals([...timing.stallMs], [5, 2]);
  assertEquals([...timing.layerMs], [1 + 5 + 2 + 1 + 2, 1 + 2 + 2 + 1 + 2]);
  assertEquals([...timing.late], [0, 1]);
  assertEquals([...result.stats.misses], [1, 0]);
  assertEquals([...result.stats.hits], [1, 2]);
  assertEquals([...result.stats.prefetchIssued], [0, 1]);
  assertEquals([...result.stats.prefetchUsed], [0, 1]);
  assertEquals([...result.stats.prefetchWasted], [0, 0]);
});

Deno.test("timing: the same example when uploads share the compute queue (uploads_overlap_compute false)", () => {
  const result = handExample(true);
  // t0 L0: router at 1; miss on 0 uploads 1→6, prefetch of 1 6→11, and the
  //        layer waits for both: stall 10, compute 11→13.
  // t0 L1: router at 14; expert 1 resident since 11: in time, no stall; compute →16; other →16.5.
  // t1 L0: router at 17.5, hit, compute →19.5. t1 L1: router at 20.5, hit, →22.5; other →23.
  const timing = result.timings[0]!;
  assertEquals(timing.now, 23);
  assertEquals([...timing.stallMs], [10, 0]);
  assertEquals([...timing.layerMs], [1 + 10 + 2 + 1 + 2, 1 + 2 + 1 + 2]);
  assertEquals([...timing.late], [0, 0]);
  const hardware = validateHardware(
    {
      name: "webgpu",
      bandwidth_gb_s: 1,
      latency_us: 0,
      expert_ms: 1,
      attention_ms_per_layer: 1,
      uploads_overlap_compute: false,
    },
    "test",
  );
  assertEquals(stepCosts(hardware, DTYPES.fp32!, syntheticModel()).serialUploads, true);
  throws(
    () => validateHardware({ ...hardware, uploads_overlap_compute: "no" }, "hw.json"),
    /hw.json field "uploads_overlap_compute" must be true or false, got "no"\./,
  );
});

Deno.test("timing: without prefetch the stall is misses × upload time", () => {
  const trace = accessTraceOf([[[0, 1]], [[1, 2]], [[3, 0]]], { experts: 4 });
  const costs = { expertBytes: 1, transferMs: 3, expertMs: 1, attentionMs: 0.5, otherMs: 0 };
  const result = replay(trace, {
    policy: createPolicy("lru", policyOptions({ layers: 1, experts: 4, topK: 2, capacity: 2 })),
    budget: "per-layer",
    prefetcher: null,
    costs: [costs],
  });
  // Misses: 2, 1, 2 → stall 15; time 3 × (0.5 + 2) + 15.
  assertEquals(result.timings[0]!.stallMs[0], 15);
  assertEquals(result.timings[0]!.now, 22.5);
});

Deno.test("timing: costs from a hardware file and the roofline default", () => {
  const model = { ...syntheticModel(), expert_params: 2_000_000, hidden_size: 1000 };
  const measured = validateHardware({
    name: "lab",
    bandwidth_gb_s: 1,
    latency_us: 1000,
    attention_ms_per_layer: 1,
    expert_ms: 2,
    other_ms_per_token: 0.5,
  }, "test");
  // fp16: 4,000,000 bytes; 4e6 / 1e9 s = 4 ms, plus 1 ms latency.
  assertEquals(stepCosts(measured, DTYPES.fp16!, model), {
    expertBytes: 4_000_000,
    transferMs: 5,
    expertMs: 2,
    attentionMs: 1,
    otherMs: 0.5,
  });
  // Roofline on pcie4's desktop GPU (1008 GB/s, 165 TFLOP/s): memory-bound at batch 1.
  const costs = stepCosts(HARDWARE_PRESETS.pcie4!, DTYPES.bf16!, model);
  assertEquals(costs.expertMs, 4_000_000 / 1008e9 * 1000);
  assertEquals(costs.attentionMs, 8_000_000 / 1008e9 * 1000);
  assertEquals(costs.transferMs, 0.01 + 4_000_000 / 25.2e9 * 1000);
});

Deno.test("dtype sizes include the quantisation scales", () => {
  assertEquals(expertBytes(1024, DTYPES.fp32!), 4096);
  assertEquals(expertBytes(1024, DTYPES.bf16!), 2048);
  assertEquals(expertBytes(1024, DTYPES.int8!), 1040); // 1024 + 8 fp16 scales
  assertEquals(expertBytes(1024, DTYPES.int4!), 528); // 512 + 16
  assertEquals(expertBytes(1024, DTYPES.q3!), 448); // 384 + 16 groups × 4 bytes
  assertEquals(expertBytes(1024, DTYPES.q2!), 320); // 256 + 64
});

Deno.test("hardware validation names the bad field", async () => {
  const base = {
    name: "x",
    bandwidth_gb_s: 10,
    latency_us: 5,
    expert_ms: 1,
    attention_ms_per_layer: 1,
  };
  throws(() => validateHardware({ ...base, bandwidth_gb_s: 0 }, "f.json"), {
    message: 'f.json field "bandwidth_gb_s" must be a positive number, got 0.',
  });
  throws(() => validateHardware({ ...base, latency_us: "5" }, "f.json"), {
    message: 'f.json field "latency_us" must be a non-negative number, got "5".',
  });
  throws(
    () => validateHardware({ ...base, bandwith_gb_s: 3 }, "f.json"),
    /unknown field "bandwith_gb_s"/,
  );
  const { name: _name, ...nameless } = base;
  throws(() => validateHardware(nameless, "f.json"), {
    message: 'f.json lacks the required field "name".',
  });
  const { expert_ms: _e, ...noCompute } = base;
  throws(() => validateHardware(noCompute, "f.json"), /needs either "expert_ms"/);
  await rejects(loadHardware("pcie9"), /--hardware takes pcie3, pcie4, pcie5/);
  await rejects(loadHardware("/nowhere/hw.json"), {
    message:
      "--hardware file /nowhere/hw.json does not exist; give a preset (pcie3, pcie4, pcie5, nvlink-c2c, phone-ufs, phone-unified) or a JSON file.",
  });
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/hw.json`, JSON.stringify({ ...base, name: "lab" }));
  assertEquals((await loadHardware(`${dir}/hw.json`)).name, "lab");
  await Deno.writeTextFile(`${dir}/bad.json`, "{");
  await rejects(loadHardware(`${dir}/bad.json`), /bad.json is not valid JSON/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("oracle timing from miss counts equals replaying the oracle prefetcher, late uploads included", () => {
  const trace = syntheticAccessTrace({
    tokens: 3000,
    layers: 3,
    experts: 8,
    topK: 2,
    stickiness: 0.3,
    seed: 8,
  });
  // A slow link (4 ms per upload against 1.5 ms of compute per layer) so that
  // prefetches are often still in flight: late uploads and stalls both occur.
  const slow = { expertBytes: 1, transferMs: 4, expertMs: 0.5, attentionMs: 0.5, otherMs: 0.25 };
  const fast = { expertBytes: 1, transferMs: 0.2, expertMs: 0.5, attentionMs: 0.5, otherMs: 0.25 };
  const serial = { ...slow, serialUploads: true };
  for (const name of ["lru", "fifo", "lfu", "random"] as const) {
    for (const capacity of [2, 3, 5]) {
      const options = policyOptions({ layers: 3, experts: 8, topK: 2, capacity, seed: 2 });
      const shadowed = replay(trace, {
        policy: createPolicy(name, options),
        budget: "per-layer",
        prefetcher: null,
        costs: [],
        oracleCosts: [slow, fast, serial],
      });
      const direct = replay(trace, {
        policy: createPolicy(name, options),
        budget: "per-layer",
        prefetcher: new OraclePrefetcher(trace),
        costs: [slow, fast, serial],
      });
      direct.timings.forEach((timing, i) => {
        const shadow = shadowed.oracleTimings[i]!;
        const what = `${name}:${capacity} costs ${i}`;
        assertEquals(
          [shadow.now, [...shadow.stallMs], [...shadow.layerMs], [...shadow.late]],
          [timing.now, [...timing.stallMs], [...timing.layerMs], [...timing.late]],
          what,
        );
      });
      const lateTotal = direct.timings[0]!.late.reduce((a, b) => a + b, 0);
      if (capacity === 2 && name === "lru") {
        ok(lateTotal > 0, "the slow link makes prefetches late");
      }
    }
  }
});
