/**
 * The timing model: turns the cache's loads into time per token.
 *
 * One token runs the MoE layers in order. At layer l:
 *
 * 1. attention (and the router) take `attentionMs`; the router decides at the
 *    end of it, at time `now`;
 * 2. demand loads for the misses are put on the single transfer queue at
 *    `now`, then the prefetches issued at this step (speculative picks are
 *    known at layer l's MoE input, markov and oracle predictions once layer l
 *    has chosen: the same instant). The queue is FIFO and serves one transfer
 *    at a time; each takes `transferMs = latency + bytes / bandwidth` and
 *    starts at max(issue time, end of the previous transfer);
 * 3. the layer waits until every chosen expert is resident: stall =
 *    max(0, latest ready time − now). A prefetched expert still in flight is
 *    "used late" and costs part of a stall;
 * 4. the k chosen experts compute, `expertMs` each.
 *
 * After the last layer `otherMs` (embeddings, norms, LM head, sampling) ends
 * the token. Without prefetch the queue is always empty when the router
 * decides, so the stall is exactly misses × transferMs.
 *
 * Expert sizes come from the manifest's `expert_params` and `--dtype`
 * (`DTYPES`); link and compute numbers from `--hardware` (`HARDWARE_PRESETS`
 * or a JSON file in the `Hardware` format, which `bench engine --calibrate`
 * writes too).
 */
import { DataError, messageOf, UsageError } from "../common/errors.ts";
import type { ModelFacts } from "../trace/mod.ts";

// ---------------------------------------------------------------------------
// Dtypes

export interface DtypeInfo {
  name: string;
  /** Bits per weight including quantisation scales and zero points. */
  bitsPerWeight: number;
  description: string;
}

/**
 * Storage formats for expert weights. Grouped formats store one fp16 scale (and
 * for q3/q2 one fp16 zero point) per group; the overhead is included in
 * bitsPerWeight. int8/int4 follow GPTQ/AWQ-style groups of 128 with an fp16
 * scale; q3/q2 follow HQQ as used by Eliseev & Mazur (groups of 64, fp16 scale
 * and zero point).
 */
export const DTYPES: Record<string, DtypeInfo> = {
  fp32: { name: "fp32", bitsPerWeight: 32, description: "IEEE 754 single precision" },
  fp16: { name: "fp16", bitsPerWeight: 16, description: "IEEE 754 half precision" },
  bf16: { name: "bf16", bitsPerWeight: 16, description: "bfloat16" },
  int8: {
    name: "int8",
    bitsPerWeight: 8 + 16 / 128,
    description: "8-bit integers, one fp16 scale per group of 128 weights (8.125 bits/weight)",
  },
  int4: {
    name: "int4",
    bitsPerWeight: 4 + 16 / 128,
    description: "4-bit integers, one fp16 scale per group of 128 weights (4.125 bits/weight)",
  },
  q3: {
    name: "q3",
    bitsPerWeight: 3 + 32 / 64,
    description:
      "3-bit grouped quantisation, fp16 scale and zero per group of 64 (3.5 bits/weight)",
  },
  q2: {
    name: "q2",
    bitsPerWeight: 2 + 32 / 64,
    description:
      "2-bit grouped quantisation, fp16 scale and zero per group of 64 (2.5 bits/weight)",
  },
};

export function dtypeInfo(name: string): DtypeInfo {
  const info = DTYPES[name];
  if (!info) {
    throw new UsageError(
      `--dtype takes ${Object.keys(DTYPES).join(", ")}, got "${name}".`,
    );
  }
  return info;
}

/** Bytes of one expert stored as `dtype`. */
export function expertBytes(expertParams: number, dtype: DtypeInfo): number {
  return Math.ceil(expertParams * dtype.bitsPerWeight / 8);
}

// ---------------------------------------------------------------------------
// Hardware

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
  /** Where the numbers come from. */
  source?: string;
}

const DESKTOP_GPU = {
  device_memory_gb_s: 1008,
  device_tflops: 165,
};
const DESKTOP_SOURCE =
  "link: PCI-SIG x16 rate per direction; effective rate assumed 80% of it (typical pinned cudaMemcpy host→device); latency 10 µs per upload assumed; compute: RTX 4090 datasheet (1008 GB/s GDDR6X, 165 TFLOP/s dense FP16 tensor)";

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
    source:
      "NVIDIA GH200 datasheet: NVLink-C2C 900 GB/s total, 450 GB/s per direction (used as is); latency 5 µs assumed; H100 HBM3 4 TB/s, 989 TFLOP/s dense BF16",
  },
  "phone-ufs": {
    name: "phone-ufs",
    bandwidth_gb_s: 4.2,
    latency_us: 100,
    device_memory_gb_s: 76.8,
    device_tflops: 4,
    source:
      "UFS 4.0 sequential read 4.2 GB/s (Samsung UFS 4.0 announcement); 100 µs per read request assumed; compute: LPDDR5X-9600 on a 64-bit bus = 76.8 GB/s, 4 TFLOP/s FP16 mobile GPU/NPU assumed",
  },
  "phone-unified": {
    name: "phone-unified",
    bandwidth_gb_s: 38.4,
    latency_us: 5,
    device_memory_gb_s: 76.8,
    device_tflops: 4,
    source:
      "Experts kept in the phone's unified LPDDR5X (76.8 GB/s) and copied into the accelerator's working set: a copy reads and writes, so half of 76.8 GB/s; 5 µs per copy assumed; compute as phone-ufs",
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
  return o as unknown as Hardware;
}

/** A preset by name, or a hardware JSON file by path. */
export async function loadHardware(nameOrPath: string): Promise<Hardware> {
  const preset = HARDWARE_PRESETS[nameOrPath];
  if (preset) return preset;
  if (!nameOrPath.endsWith(".json") && !nameOrPath.includes("/")) {
    throw new UsageError(
      `--hardware takes ${
        Object.keys(HARDWARE_PRESETS).join(", ")
      } or a JSON file, got "${nameOrPath}".`,
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

// ---------------------------------------------------------------------------
// Costs

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

// ---------------------------------------------------------------------------
// The model

/** Clock, transfer queue and per-layer time of one replay under one cost setting. */
export class TimingModel {
  readonly costs: StepCosts;
  /** Compute clock, ms. */
  now = 0;
  /** When the transfer queue is next idle, ms. */
  queueFree = 0;
  /** [keys] when each expert's last upload completes, ms. */
  readonly readyAt: Float64Array;
  /** [M] stall ms summed over tokens. */
  readonly stallMs: Float64Array;
  /** [M] attention + stall + expert compute ms summed over tokens. */
  readonly layerMs: Float64Array;
  /** [M] prefetched experts first used while still in flight. */
  readonly late: Float64Array;
  tokens = 0;
  /** The current step's decision time, ms. */
  #decision = 0;
  /** When the current step's demand loads and first uses are all resident, ms. */
  #ready = 0;
  /** The next model of a chain (see `chain`). */
  #next: TimingModel | null = null;
  #attentionMs: number;
  #transferMs: number;
  #expertMs: number;
  #serial: boolean;

  constructor(costs: StepCosts, shape: { layers: number; experts: number }) {
    this.costs = costs;
    this.#attentionMs = costs.attentionMs;
    this.#transferMs = costs.transferMs;
    this.#expertMs = costs.expertMs;
    this.#serial = costs.serialUploads === true;
    this.readyAt = new Float64Array(shape.layers * shape.experts);
    this.stallMs = new Float64Array(shape.layers);
    this.layerMs = new Float64Array(shape.layers);
    this.late = new Float64Array(shape.layers);
  }

  // One layer of one token as events, in this order: `begin`; `load` for each
  // demand load, then `prefetch` for each prefetch issued; `use` for each
  // prefetched key used for the first time (before or after the loads: they
  // never touch the same key); `end`. The simulator's replay loop calls them
  // as the cache decides. The layer waits only for its demand loads and first
  // uses: every other expert it needs was waited for by the layer that last
  // used it, and has not been uploaded since (a cached key is never uploaded
  // again). replay_test.ts checks this against waiting for every expert.
  //
  // Every event is passed on to the model `chain` linked after this one, so
  // a replay timing several settings sends each event once; with one setting
  // (the usual case) that costs a null check, not a loop over models.

  /** Links `models` in order; returns the first, whose events reach them all (null for none). */
  static chain(models: readonly TimingModel[]): TimingModel | null {
    for (let i = 0; i + 1 < models.length; i++) models[i]!.#next = models[i + 1]!;
    return models[0] ?? null;
  }

  /** Attention and the router run; the router decides at `now + attentionMs`. */
  begin(): void {
    const decision = this.now + this.#attentionMs;
    this.#decision = decision;
    this.#ready = decision;
    this.#next?.begin();
  }

  /** Queues the demand upload of `key` at the decision time; the layer waits for it. */
  load(key: number): void {
    const done = this.#upload(key);
    if (done > this.#ready) this.#ready = done;
    this.#next?.load(key);
  }

  /** Queues the upload of `key` at the decision time; the layer does not wait for it. */
  prefetch(key: number): void {
    this.#upload(key);
    this.#next?.prefetch(key);
  }

  /** Queues an upload of `key` at the decision time; returns when it completes. */
  #upload(key: number): number {
    const now = this.#decision;
    const free = this.queueFree;
    const done = (free > now ? free : now) + this.#transferMs;
    this.readyAt[key] = done;
    this.queueFree = done;
    return done;
  }

  /**
   * A prefetched key's first demand use: the layer waits for it, and it is
   * late when its upload is still in flight.
   */
  use(layer: number, key: number): void {
    const r = this.readyAt[key]!;
    if (r > this.#decision) {
      this.late[layer]!++;
      if (r > this.#ready) this.#ready = r;
    }
    this.#next?.use(layer, key);
  }

  /** The layer waits for its demand loads and first uses, then computes `count` experts. */
  end(layer: number, count: number): void {
    const now = this.#decision;
    let ready = this.#ready;
    // Serial uploads: this step's prefetches also run before its experts.
    if (this.#serial && this.queueFree > ready) ready = this.queueFree;
    const stall = ready - now;
    const compute = count * this.#expertMs;
    this.stallMs[layer]! += stall;
    this.layerMs[layer]! += this.#attentionMs + stall + compute;
    this.now = ready + compute;
    this.#next?.end(layer, count);
  }

  /**
   * Steps of the oracle shadow (OracleShadow) from counts, in one tight loop.
   * Step s (layer `layer0 + s` modulo `layers`) needs `misses[s]` uploads:
   * demand loads queued now at the very first step (`first`), else
   * prefetches queued one step earlier that complete at `done[0..misses[s])`;
   * then it queues the uploads for the step after it (`misses[s + 1]`, or
   * `lastNext` after the last), their completion times written to `done`.
   * The same arithmetic as `begin`, `load`, `use` and `end`, in the same
   * order; a token ends after the last layer.
   */
  oracleSteps(
    misses: Uint16Array,
    n: number,
    lastNext: number,
    first: boolean,
    layer0: number,
    layers: number,
    done: Float64Array,
    topK: number,
  ): void {
    const attention = this.#attentionMs;
    const transfer = this.#transferMs;
    const compute = topK * this.#expertMs;
    const other = this.costs.otherMs;
    const serial = this.#serial;
    const { stallMs, layerMs, late } = this;
    let now = this.now;
    let free = this.queueFree;
    let layer = layer0;
    for (let s = 0; s < n; s++) {
      const count = misses[s]!;
      const next = s + 1 < n ? misses[s + 1]! : lastNext;
      const decision = now + attention;
      let ready = decision;
      if (first && s === 0) {
        for (let i = 0; i < count; i++) {
          free = (free > decision ? free : decision) + transfer;
          if (free > ready) ready = free;
        }
      } else {
        for (let i = 0; i < count; i++) {
          const r = done[i]!;
          if (r > decision) {
            late[layer]!++;
            if (r > ready) ready = r;
          }
        }
      }
      for (let i = 0; i < next; i++) {
        free = (free > decision ? free : decision) + transfer;
        done[i] = free;
      }
      if (serial && free > ready) ready = free;
      const stall = ready - decision;
      stallMs[layer]! += stall;
      layerMs[layer]! += attention + stall + compute;
      now = ready + compute;
      if (++layer === layers) {
        layer = 0;
        now += other;
        this.tokens++;
      }
    }
    this.now = now;
    this.queueFree = free;
  }

  /** Ends a token. */
  endToken(): void {
    this.now += this.costs.otherMs;
    this.tokens++;
    this.#next?.endToken();
  }
}

/**
 * Timing of the oracle prefetcher derived from the misses of a per-layer cache
 * without prefetch. With a per-layer budget the oracle's cache evolves exactly
 * like that cache (each layer's cache is only touched by its own accesses and,
 * just before them, by the prefetch of exactly those experts), so its uploads
 * at step s are the misses of step s + 1, issued one step early; only the very
 * first step loads on demand. The counts of misses are enough: every other
 * expert a step needs was waited for at an earlier step, so only the uploads
 * issued for this step can still be in flight. Feed every step's miss count
 * in order with `push`, then call `finish`.
 */
/** Steps an OracleShadow buffers before taking them. */
const SHADOW_CHUNK = 4096;

export class OracleShadow {
  readonly timings: TimingModel[];
  #layers: number;
  #topK: number;
  /**
   * Miss counts of the steps pushed and not yet taken. A step is taken once
   * the next one's count is known, a chunk at a time: one tight loop per
   * timing model instead of a chain of calls per step.
   */
  #pending = new Uint16Array(SHADOW_CHUNK);
  #count = 0;
  /** Steps taken so far. */
  #taken = 0;
  /** Per timing model: [k] when the uploads for the next step to take complete, ms. */
  #done: Float64Array[];

  constructor(
    costs: readonly StepCosts[],
    shape: { layers: number; experts: number; topK: number },
  ) {
    this.timings = costs.map((c) => new TimingModel(c, shape));
    this.#layers = shape.layers;
    this.#topK = shape.topK;
    this.#done = costs.map(() => new Float64Array(shape.topK));
  }

  /** The number of misses of the next step (the one after the last pushed). */
  push(misses: number): void {
    this.#pending[this.#count++] = misses;
    if (this.#count === SHADOW_CHUNK) {
      // All but the last step know their successor's count: take them.
      const n = SHADOW_CHUNK - 1;
      this.#take(n, this.#pending[n]!);
      this.#pending[0] = this.#pending[n]!;
      this.#count = 1;
    }
  }

  /** Takes the remaining steps (nothing left to prefetch after the last). */
  finish(): void {
    this.#take(this.#count, 0);
    this.#count = 0;
  }

  /** Takes the first `n` pending steps; the step after the last of them needs `lastNext` uploads. */
  #take(n: number, lastNext: number): void {
    if (n === 0) return;
    const first = this.#taken === 0;
    const layer0 = this.#taken % this.#layers;
    for (let i = 0; i < this.timings.length; i++) {
      this.timings[i]!.oracleSteps(
        this.#pending,
        n,
        lastNext,
        first,
        layer0,
        this.#layers,
        this.#done[i]!,
        this.#topK,
      );
    }
    this.#taken += n;
  }
}
