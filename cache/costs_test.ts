import { deepStrictEqual as assertEquals } from "node:assert";
import { syntheticModel } from "../trace/synthetic.ts";
import { stepCosts } from "./costs.ts";
import { DTYPES } from "./dtypes.ts";
import { HARDWARE_PRESETS, validateHardware } from "./hardware.ts";

Deno.test("costs from a hardware file and the roofline default", () => {
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

Deno.test("costs: uploads_overlap_compute false makes uploads serial", () => {
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
  const overlapped = validateHardware({ ...hardware, uploads_overlap_compute: true }, "test");
  assertEquals(stepCosts(overlapped, DTYPES.fp32!, syntheticModel()).serialUploads, undefined);
});
