/**
 * Machines for the timing model (`--hardware NAME|FILE`): the `Hardware`
 * fields, the built-in presets with their sources, and the JSON file format
 * (validated here; `bench engine --calibrate` writes such files).
 */
import { DataError, messageOf, UsageError } from "../common/errors.ts";
import { didYouMean } from "../common/suggest.ts";

/**
 * A machine, as a preset or a JSON file (`--hardware FILE`). Bandwidths are in
 * GB/s of 10^9 bytes. The compute fields are optional: when `expert_ms` or
 * `attention_ms_per_layer` is missing it is derived from the roofline of the
 * device (`device_memory_gb_s`, `device_tflops`), see `stepCosts`.
 */
export interface Hardware {
  name: string;
  /** Host (or storage) → device bandwidth for expert uploads, GB/s. */
  bandwidth_gb_s: number;
  /** Fixed cost of one upload (launch, synchronisation, I/O request), µs. */
  latency_us: number;
  /** Attention + router time of one layer for one token, ms. */
  attention_ms_per_layer?: number;
  /** Compute time of one active expert for one token, ms. */
  expert_ms?: number;
  /** Time per token outside the MoE layers (embedding, LM head, sampling), ms; default 0. */
  other_ms_per_token?: number;
  /**
   * Host round trip per MoE layer when the engine reads each router's choice
   * back before uploading (`generate --offload`; `bench engine --calibrate`
   * measures it), ms; added to the layer's attention + router time; default 0.
   */
  readback_ms_per_layer?: number;
  /**
   * Whether uploads run beside compute, on their own copy engine (default
   * true). False for an engine whose uploads share one queue with compute,
   * as `generate --offload` on WebGPU does (`bench engine --calibrate` writes
   * false): every upload issued at a layer, prefetches included, then
   * finishes before that layer's experts compute.
   */
  uploads_overlap_compute?: boolean;
  /** Device memory bandwidth for the default compute model, GB/s. */
  device_memory_gb_s?: number;
  /** Device dense half-precision throughput for the default compute model, TFLOP/s. */
  device_tflops?: number;
  /**
   * One expert computed on the host CPU for one token (`simulate --on-miss
   * cpu|cheaper`), ms, as measured; when missing it is derived from the CPU's
   * roofline (`cpu_memory_gb_s`, `cpu_tflops`), see `stepCosts`.
   */
  cpu_expert_ms?: number;
  /** Host memory bandwidth the CPU reads expert weights at, GB/s. */
  cpu_memory_gb_s?: number;
  /** Host CPU dense throughput (all cores, the expert's dtype decoded to fp32), TFLOP/s. */
  cpu_tflops?: number;
  /** Where the numbers come from. */
  source?: string;
}

// The desktop host CPU: a 16-core Ryzen 9 7950X class machine with two
// channels of DDR5-5600: 2 × 8 bytes × 5600 MT/s = 89.6 GB/s peak; 16 Zen 4
// cores × 4.5 GHz × 32 FP32 FLOP/cycle (two 256-bit FMA pipes) = 2.3 TFLOP/s.
// At batch 1 an expert on the CPU is memory-bound (2 FLOP per weight against
// 2 bytes of bf16), as llama.cpp's --n-cpu-moe relies on.
const DESKTOP_GPU = {
  device_memory_gb_s: 1008,
  device_tflops: 165,
  cpu_memory_gb_s: 89.6,
  cpu_tflops: 2.3,
};
const DESKTOP_SOURCE =
  "link: PCI-SIG x16 rate per direction; effective rate assumed 80% of it (typical pinned cudaMemcpy host→device); latency 10 µs per upload assumed; compute: RTX 4090 datasheet (1008 GB/s GDDR6X, 165 TFLOP/s dense FP16 tensor); CPU: 16-core Zen 4 (Ryzen 9 7950X class), dual-channel DDR5-5600 = 89.6 GB/s peak, 16 cores × 4.5 GHz × 32 FP32 FLOP/cycle = 2.3 TFLOP/s";

// The phone's CPU reads the same LPDDR5X as its accelerator (76.8 GB/s); its
// throughput is an assumption: 8 Armv9 cores (1 Cortex-X4, 5 A720, 2 A520)
// at about 0.5 TFLOP/s FP32 with NEON in all.
const PHONE_CPU = { cpu_memory_gb_s: 76.8, cpu_tflops: 0.5 };
const PHONE_CPU_SOURCE =
  "CPU: shares the 76.8 GB/s LPDDR5X; 0.5 TFLOP/s FP32 over 8 Armv9 cores assumed";

/** Built-in machines. Effective numbers are assumptions stated in `source`. */
export const HARDWARE_PRESETS: Record<string, Hardware> = {
  pcie3: {
    name: "pcie3",
    bandwidth_gb_s: 12.6,
    latency_us: 10,
    ...DESKTOP_GPU,
    source: `PCIe 3.0 x16, 15.75 GB/s; ${DESKTOP_SOURCE}`,
  },
  pcie4: {
    name: "pcie4",
    bandwidth_gb_s: 25.2,
    latency_us: 10,
    ...DESKTOP_GPU,
    source: `PCIe 4.0 x16, 31.5 GB/s; ${DESKTOP_SOURCE}`,
  },
  pcie5: {
    name: "pcie5",
    bandwidth_gb_s: 50.4,
    latency_us: 10,
    ...DESKTOP_GPU,
    source: `PCIe 5.0 x16, 63 GB/s; ${DESKTOP_SOURCE}`,
  },
  "nvlink-c2c": {
    name: "nvlink-c2c",
    bandwidth_gb_s: 450,
    latency_us: 5,
    device_memory_gb_s: 4000,
    device_tflops: 989,
    cpu_memory_gb_s: 500,
    cpu_tflops: 7.1,
    source:
      "NVIDIA GH200 datasheet: NVLink-C2C 900 GB/s total, 450 GB/s per direction (used as is); latency 5 µs assumed; H100 HBM3 4 TB/s, 989 TFLOP/s dense BF16; Grace CPU: LPDDR5X about 500 GB/s, 72 Neoverse V2 cores × 3.1 GHz × 32 FP32 FLOP/cycle (four 128-bit SVE2 FMA pipes) = 7.1 TFLOP/s",
  },
  "phone-ufs": {
    name: "phone-ufs",
    bandwidth_gb_s: 4.2,
    latency_us: 100,
    device_memory_gb_s: 76.8,
    device_tflops: 4,
    ...PHONE_CPU,
    source:
      `UFS 4.0 sequential read 4.2 GB/s (Samsung UFS 4.0 announcement); 100 µs per read request assumed; compute: LPDDR5X-9600 on a 64-bit bus = 76.8 GB/s, 4 TFLOP/s FP16 mobile GPU/NPU assumed; ${PHONE_CPU_SOURCE}`,
  },
  "phone-unified": {
    name: "phone-unified",
    bandwidth_gb_s: 38.4,
    latency_us: 5,
    device_memory_gb_s: 76.8,
    device_tflops: 4,
    ...PHONE_CPU,
    source:
      "Experts kept in the phone's unified LPDDR5X (76.8 GB/s) and copied into the accelerator's working set: a copy reads and writes, so half of 76.8 GB/s; 5 µs per copy assumed; compute and CPU as phone-ufs",
  },
};

const HARDWARE_FIELDS: Record<string, "string" | "positive" | "nonnegative" | "boolean"> = {
  name: "string",
  bandwidth_gb_s: "positive",
  latency_us: "nonnegative",
  attention_ms_per_layer: "nonnegative",
  expert_ms: "nonnegative",
  other_ms_per_token: "nonnegative",
  readback_ms_per_layer: "nonnegative",
  uploads_overlap_compute: "boolean",
  device_memory_gb_s: "positive",
  device_tflops: "positive",
  cpu_expert_ms: "nonnegative",
  cpu_memory_gb_s: "positive",
  cpu_tflops: "positive",
  source: "string",
};

/** Checks a parsed hardware JSON; `where` names it in errors. */
export function validateHardware(json: unknown, where: string): Hardware {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new DataError(`${where} must hold a JSON object.`);
  }
  const o = json as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!(key in HARDWARE_FIELDS)) {
      throw new DataError(
        `${where} has unknown field "${key}"; known fields are ${
          Object.keys(HARDWARE_FIELDS).join(", ")
        }.`,
      );
    }
  }
  for (const key of ["name", "bandwidth_gb_s", "latency_us"]) {
    if (o[key] === undefined) throw new DataError(`${where} lacks the required field "${key}".`);
  }
  for (const [key, kind] of Object.entries(HARDWARE_FIELDS)) {
    const value = o[key];
    if (value === undefined) continue;
    if (kind === "boolean") {
      if (typeof value !== "boolean") {
        throw new DataError(
          `${where} field "${key}" must be true or false, got ${JSON.stringify(value)}.`,
        );
      }
    } else if (kind === "string") {
      if (typeof value !== "string" || value === "") {
        throw new DataError(
          `${where} field "${key}" must be a non-empty string, got ${JSON.stringify(value)}.`,
        );
      }
    } else if (
      typeof value !== "number" || !Number.isFinite(value) ||
      (kind === "positive" ? value <= 0 : value < 0)
    ) {
      throw new DataError(
        `${where} field "${key}" must be a ${
          kind === "positive" ? "positive" : "non-negative"
        } number, got ${JSON.stringify(value)}.`,
      );
    }
  }
  const hasCompute = o.expert_ms !== undefined && o.attention_ms_per_layer !== undefined;
  const hasDevice = o.device_memory_gb_s !== undefined && o.device_tflops !== undefined;
  if (!hasCompute && !hasDevice) {
    throw new DataError(
      `${where} needs either "expert_ms" and "attention_ms_per_layer" or "device_memory_gb_s" and "device_tflops" for compute times.`,
    );
  }
  if ((o.cpu_memory_gb_s === undefined) !== (o.cpu_tflops === undefined)) {
    throw new DataError(
      `${where} gives only one of "cpu_memory_gb_s" and "cpu_tflops"; the CPU's roofline needs both.`,
    );
  }
  return o as unknown as Hardware;
}

/** A preset by name, or a hardware JSON file by path. */
export async function loadHardware(nameOrPath: string): Promise<Hardware> {
  const preset = HARDWARE_PRESETS[nameOrPath] ?? HARDWARE_PRESETS[nameOrPath.toLowerCase()];
  if (preset) return preset;
  if (!nameOrPath.endsWith(".json") && !nameOrPath.includes("/")) {
    throw new UsageError(
      `--hardware takes ${
        Object.keys(HARDWARE_PRESETS).join(", ")
      } or a JSON file, got "${nameOrPath}".${
        didYouMean(nameOrPath, Object.keys(HARDWARE_PRESETS))
      }`,
    );
  }
  let text: string;
  try {
    text = await Deno.readTextFile(nameOrPath);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new DataError(
        `--hardware file ${nameOrPath} does not exist; give a preset (${
          Object.keys(HARDWARE_PRESETS).join(", ")
        }) or a JSON file.`,
      );
    }
    throw new DataError(`Cannot read --hardware file ${nameOrPath}: ${messageOf(error)}.`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new DataError(`--hardware file ${nameOrPath} is not valid JSON: ${messageOf(error)}.`);
  }
  return validateHardware(json, `--hardware file ${nameOrPath}`);
}
