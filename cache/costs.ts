/**
 * The cost model: one (hardware, dtype, model) combination turned into the
 * few numbers the timing model needs per step — upload time, expert and
 * attention compute — measured where the hardware file gives them, else from
 * a batch-1 roofline of the device. What a miss does (`--on-miss`,
 * `--miss-dtype`, `--tier`) adds its own numbers: the CPU's time for one
 * expert, the low-precision copy's upload, the tiers' capacities and reads.
 */
import { UsageError } from "../common/errors.ts";
import type { ModelFacts } from "../trace/mod.ts";
import { type DtypeInfo, dtypeInfo, expertBytes } from "./dtypes.ts";
import type { Budget } from "./expert_cache.ts";
import type { Hardware } from "./hardware.ts";
import { parseTier, ramExperts, ssdReadMs, type TierCosts, type TierSpec } from "./tiers.ts";

/** `--on-miss`: a missed expert is uploaded, computed on the CPU, or whichever is faster for the step. */
export const ON_MISS = ["transfer", "cpu", "cheaper"] as const;
export type OnMiss = typeof ON_MISS[number];

/** What a miss does, for every combination of a run. */
export interface MissSetting {
  onMiss: OnMiss;
  /** `--miss-dtype`: a demand miss fetches this lower-precision copy (HOBBIT), or null. */
  missDtype: DtypeInfo | null;
  /** `--tier`: host RAM and SSD below the GPU cache, or null (every expert in host RAM). */
  tier: TierSpec | null;
  budget: Budget;
}

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
  /** `--on-miss` other than transfer (absent: every miss is waited for). */
  onMiss?: "cpu" | "cheaper";
  /** One missed expert computed on the host CPU for one token, ms (with `onMiss`). */
  cpuExpertMs?: number;
  /** `--miss-dtype`: the bytes of the low-precision copy a demand miss fetches. */
  missBytes?: number;
  /** Its upload: latency + missBytes / bandwidth, ms. */
  missTransferMs?: number;
  /** `--tier`: RAM and SSD below the GPU cache. */
  tier?: TierCosts;
}

/**
 * Whether the timing needs a replay with these costs: the miss counts alone
 * give the exact time only when every miss is uploaded and waited for from
 * host RAM in full precision (sweep.ts's `noPrefetchTiming` and the oracle
 * shadow rely on it).
 */
export function timedByReplay(costs: StepCosts): boolean {
  return costs.onMiss !== undefined || costs.missBytes !== undefined || costs.tier !== undefined;
}

/** Whether a miss setting changes anything from plain uploads. */
export function missSettingActive(miss: MissSetting | undefined): boolean {
  return miss !== undefined &&
    (miss.onMiss !== "transfer" || miss.missDtype !== null || miss.tier !== null);
}

/** The roofline of one operation reading `weightBytes` and doing 2 × `params` × `tokens` FLOPs, ms. */
function rooflineMs(
  weightBytes: number,
  params: number,
  memoryGbS: number,
  tflops: number,
  tokens = 1,
): number {
  return Math.max(weightBytes / (memoryGbS * 1e9), (2 * params * tokens) / (tflops * 1e12)) * 1000;
}

/**
 * One expert computed on the host CPU for `tokens` tokens, ms: the hardware's
 * measured `cpu_expert_ms` (one token) times the tokens, else the CPU's
 * roofline: max(bytes / cpu_memory_gb_s, 2 × params × tokens / cpu_tflops).
 * Null when the hardware gives neither.
 */
export function cpuExpertMs(
  hardware: Hardware,
  dtype: DtypeInfo,
  expertParams: number,
  tokens = 1,
): number | null {
  if (hardware.cpu_expert_ms !== undefined) return hardware.cpu_expert_ms * tokens;
  if (hardware.cpu_memory_gb_s === undefined || hardware.cpu_tflops === undefined) return null;
  return rooflineMs(
    expertBytes(expertParams, dtype),
    expertParams,
    hardware.cpu_memory_gb_s,
    hardware.cpu_tflops,
    tokens,
  );
}

/**
 * The miss setting of `simulate --on-miss`, `--tier` and `--miss-dtype`, or
 * undefined when none changes plain uploads. `dtypes` are the run's
 * `--dtype` values: the low-precision copy must be smaller than each.
 */
export function missSettingFromFlags(
  flags: { onMiss?: string; tier?: string; missDtype?: string },
  dtypes: readonly DtypeInfo[],
  budget: Budget,
): MissSetting | undefined {
  const onMiss = flags.onMiss ?? "transfer";
  if (!(ON_MISS as readonly string[]).includes(onMiss)) {
    throw new UsageError(`--on-miss takes ${ON_MISS.join(", ")}, got "${onMiss}".`);
  }
  const tier = flags.tier === undefined || flags.tier === "none" ? null : parseTier(flags.tier);
  let missDtype: DtypeInfo | null = null;
  if (flags.missDtype !== undefined && flags.missDtype !== "none") {
    try {
      missDtype = dtypeInfo(flags.missDtype.toLowerCase());
    } catch {
      throw new UsageError(
        `--miss-dtype takes none or a storage format smaller than --dtype (int8, int4, mxfp4, q3, q2, ...), got "${flags.missDtype}".`,
      );
    }
    for (const d of dtypes) {
      if (missDtype.bitsPerWeight >= d.bitsPerWeight) {
        throw new UsageError(
          `--miss-dtype ${missDtype.name} (${missDtype.bitsPerWeight} bits per weight) is not smaller than --dtype ${d.name} (${d.bitsPerWeight}).`,
        );
      }
    }
  }
  const miss: MissSetting = { onMiss: onMiss as OnMiss, missDtype, tier, budget };
  return missSettingActive(miss) ? miss : undefined;
}

/** Refuses `--on-miss cpu|cheaper` on a machine that gives no CPU time, in one sentence. */
export function checkMissSetting(miss: MissSetting, hardware: readonly Hardware[]): void {
  if (miss.onMiss === "transfer") return;
  for (const h of hardware) {
    if (h.cpu_expert_ms === undefined && h.cpu_memory_gb_s === undefined) {
      throw new UsageError(
        `--on-miss ${miss.onMiss} needs the CPU's expert time, but --hardware ${h.name} gives neither "cpu_expert_ms" nor "cpu_memory_gb_s" and "cpu_tflops".`,
      );
    }
  }
}

/**
 * Costs for a model on a machine. The default compute model (when the
 * hardware gives no measured times) is a roofline for batch-1 decoding: time =
 * max(weight bytes / device memory bandwidth, 2 × params FLOPs / device
 * throughput). Experts are read in `dtype`; attention is 4 × hidden² weights
 * (q, k, v, o projections at full multi-head size; grouped-query attention
 * has fewer) in 16-bit. KV-cache reads are ignored.
 */
export function stepCosts(
  hardware: Hardware,
  dtype: DtypeInfo,
  model: ModelFacts,
  miss?: MissSetting,
): StepCosts {
  const bytes = expertBytes(model.expert_params, dtype);
  const roofline = (weightBytes: number, params: number) =>
    rooflineMs(weightBytes, params, hardware.device_memory_gb_s!, hardware.device_tflops!);
  const attentionParams = 4 * model.hidden_size * model.hidden_size;
  const upload = (b: number) =>
    hardware.latency_us / 1000 + (b / (hardware.bandwidth_gb_s * 1e9)) * 1000;
  const costs: StepCosts = {
    expertBytes: bytes,
    transferMs: upload(bytes),
    expertMs: hardware.expert_ms ?? roofline(bytes, model.expert_params),
    attentionMs:
      (hardware.attention_ms_per_layer ?? roofline(2 * attentionParams, attentionParams)) +
      (hardware.readback_ms_per_layer ?? 0),
    otherMs: hardware.other_ms_per_token ?? 0,
    ...(hardware.uploads_overlap_compute === false ? { serialUploads: true } : {}),
  };
  if (miss === undefined) return costs;
  if (miss.onMiss !== "transfer") {
    const cpu = cpuExpertMs(hardware, dtype, model.expert_params);
    if (cpu === null) {
      throw new UsageError(
        `--on-miss ${miss.onMiss} needs the CPU's expert time, but --hardware ${hardware.name} gives none.`,
      );
    }
    costs.onMiss = miss.onMiss;
    costs.cpuExpertMs = cpu;
  }
  const missBytes = miss.missDtype ? expertBytes(model.expert_params, miss.missDtype) : bytes;
  if (miss.missDtype) {
    costs.missBytes = missBytes;
    costs.missTransferMs = upload(missBytes);
  }
  if (miss.tier) {
    costs.tier = {
      ramCapacity: ramExperts(miss.tier.ram, bytes, miss.budget, model.moe_layers.length),
      ramPolicy: miss.tier.ramPolicy,
      budget: miss.budget,
      ssdMs: ssdReadMs(miss.tier.ssd, bytes, hardware.bandwidth_gb_s),
      missSsdMs: ssdReadMs(miss.tier.ssd, missBytes, hardware.bandwidth_gb_s),
    };
  }
  return costs;
}
