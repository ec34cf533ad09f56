/**
 * The cost model: one (hardware, dtype, model) combination turned into the
 * few numbers the timing model needs per step — upload time, expert and
 * attention compute — measured where the hardware file gives them, else from
 * a batch-1 roofline of the device.
 */
import type { ModelFacts } from "../trace/mod.ts";
import { type DtypeInfo, expertBytes } from "./dtypes.ts";
import type { Hardware } from "./hardware.ts";

/** The per-step costs of one (hardware, dtype, model) combination. */
export interface StepCosts {
  expertBytes: number;
  /** One upload: latency + bytes / bandwidth, ms. */
  transferMs: number;
  /** One active expert for one token, ms. */
  expertMs: number;
  attentionMs: number;
  otherMs: number;
  /** Uploads share the compute queue: a layer waits for every upload issued at it. */
  serialUploads?: boolean;
}

/**
 * Costs for a model on a machine. The default compute model (when the
 * hardware gives no measured times) is a roofline for batch-1 decoding: time =
 * max(weight bytes / device memory bandwidth, 2 × params FLOPs / device
 * throughput). Experts are read in `dtype`; attention is 4 × hidden² weights
 * (q, k, v, o projections at full multi-head size; grouped-query attention
 * has fewer) in 16-bit. KV-cache reads are ignored.
 */
export function stepCosts(hardware: Hardware, dtype: DtypeInfo, model: ModelFacts): StepCosts {
  const bytes = expertBytes(model.expert_params, dtype);
  const roofline = (weightBytes: number, params: number) =>
    Math.max(
      weightBytes / (hardware.device_memory_gb_s! * 1e9),
      (2 * params) / (hardware.device_tflops! * 1e12),
    ) * 1000;
  const attentionParams = 4 * model.hidden_size * model.hidden_size;
  return {
    expertBytes: bytes,
    transferMs: hardware.latency_us / 1000 + (bytes / (hardware.bandwidth_gb_s * 1e9)) * 1000,
    expertMs: hardware.expert_ms ?? roofline(bytes, model.expert_params),
    attentionMs:
      (hardware.attention_ms_per_layer ?? roofline(2 * attentionParams, attentionParams)) +
      (hardware.readback_ms_per_layer ?? 0),
    otherMs: hardware.other_ms_per_token ?? 0,
    ...(hardware.uploads_overlap_compute === false ? { serialUploads: true } : {}),
  };
}
