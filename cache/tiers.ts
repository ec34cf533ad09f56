/**
 * Memory tiers below the GPU (`simulate --tier`): host RAM with its own
 * capacity and policy, and the SSD every expert lives on.
 *
 * The GPU cache is the one `--policy` and `--capacity` describe; a miss there
 * (or a prefetch) is served from host RAM when RAM holds the expert, over the
 * hardware's link (`bandwidth_gb_s`, `latency_us`), else from the SSD. The
 * RAM tier is a second cache that sees only the GPU cache's uploads (as an
 * L2 sees L1 misses): a GPU hit does not touch it. An expert read from the
 * SSD is admitted to RAM under the RAM policy.
 *
 * An SSD read streams through host RAM to the GPU in chunks, as
 * MoE-Infinity's and GPUDirect-style loaders do, so it takes
 * `ssd latency + bytes / min(ssd, link bandwidth)` on the SSD's own queue
 * (one read at a time, in issue order); the link's share of it is not
 * charged to the link queue (at most ssd/link of the link's time: 28% for
 * NVMe Gen4 over PCIe 4.0).
 */
import { UsageError } from "../common/errors.ts";
import { parseByteSize } from "../common/bytes.ts";
import { policyOptions } from "./expert_cache.ts";
import type { Budget } from "./expert_cache.ts";
import { Guard } from "./policy.ts";
import type { CachePolicy } from "./policy.ts";
import { createPolicy, type PolicyName } from "./policies/mod.ts";

/** A storage device experts are read from. */
export interface Ssd {
  name: string;
  /** Sequential read, GB/s of 10^9 bytes. */
  read_gb_s: number;
  /** Fixed cost of one read request, µs. */
  latency_us: number;
  source: string;
}

/**
 * Built-in storage. Bandwidths are the makers' sequential-read figures (a
 * whole expert is one large sequential read); latencies are assumptions of
 * the order of one NVMe or UFS read request.
 */
export const SSD_PRESETS: Record<string, Ssd> = {
  // Samsung 990 PRO (PCIe 4.0 x4 NVMe) datasheet: sequential read up to 7,450 MB/s.
  "nvme-gen4": {
    name: "nvme-gen4",
    read_gb_s: 7.45,
    latency_us: 80,
    source:
      "Samsung 990 PRO datasheet, sequential read up to 7,450 MB/s (PCIe 4.0 x4); 80 µs per read request assumed",
  },
  // Samsung 9100 PRO (PCIe 5.0 x4 NVMe) announcement, 2025: sequential read up to 14,700 MB/s.
  "nvme-gen5": {
    name: "nvme-gen5",
    read_gb_s: 14.7,
    latency_us: 80,
    source:
      "Samsung 9100 PRO announcement (2025), sequential read up to 14,700 MB/s (PCIe 5.0 x4); 80 µs per read request assumed",
  },
  // Samsung UFS 4.0 announcement (2022): sequential read up to 4,200 MB/s.
  ufs4: {
    name: "ufs4",
    read_gb_s: 4.2,
    latency_us: 100,
    source:
      "Samsung UFS 4.0 announcement (2022), sequential read up to 4,200 MB/s; 100 µs per read request assumed",
  },
};

/** Policies a RAM tier may use: online ones (belady and pinned need the whole trace, swap keeps k). */
export const RAM_POLICIES: readonly PolicyName[] = ["lru", "fifo", "lfu", "lrfu", "random"];

/** A RAM capacity as given: experts (per layer or in all, as --budget says) or bytes. */
export type RamCapacity = { kind: "experts"; experts: number } | { kind: "bytes"; bytes: number };

/** `--tier` parsed. */
export interface TierSpec {
  /** The flag's text, written to the output's `tier` column. */
  text: string;
  /** Host RAM's capacity; experts 0: RAM holds nothing, every upload reads the SSD. */
  ram: RamCapacity;
  ramPolicy: PolicyName;
  ssd: Ssd;
}

const TIER_USAGE =
  `--tier takes ram=CAPACITY[:POLICY],ssd=DEVICE, with CAPACITY an expert count or bytes such as 64GiB, POLICY one of ${
    RAM_POLICIES.join(", ")
  } (default lru), DEVICE one of ${
    Object.keys(SSD_PRESETS).join(", ")
  } or READ_GB_S:LATENCY_US; ram may be left out (RAM holds nothing)`;

/** Parses `--tier ram=64GiB:lru,ssd=nvme-gen4`. */
export function parseTier(text: string): TierSpec {
  let ram: RamCapacity = { kind: "experts", experts: 0 };
  let ramPolicy: PolicyName = "lru";
  let ssd: Ssd | null = null;
  for (const part of text.split(",").map((s) => s.trim()).filter((s) => s !== "")) {
    const eq = part.indexOf("=");
    const name = eq < 0 ? part : part.slice(0, eq);
    const value = eq < 0 ? "" : part.slice(eq + 1);
    if (name === "ram") {
      const [capacity, policy] = value.split(":");
      ram = parseRamCapacity(capacity ?? "", text);
      if (policy !== undefined) {
        if (!(RAM_POLICIES as readonly string[]).includes(policy)) {
          throw new UsageError(
            `--tier "${text}": the RAM policy must be one of ${
              RAM_POLICIES.join(", ")
            }, got "${policy}".`,
          );
        }
        ramPolicy = policy as PolicyName;
      }
    } else if (name === "ssd") {
      ssd = parseSsd(value, text);
    } else {
      throw new UsageError(`${TIER_USAGE}; got "${text}".`);
    }
  }
  if (ssd === null) throw new UsageError(`${TIER_USAGE}; "${text}" names no ssd.`);
  return { text, ram, ramPolicy, ssd };
}

function parseRamCapacity(value: string, text: string): RamCapacity {
  if (/^\d+$/.test(value)) return { kind: "experts", experts: Number(value) };
  const bytes = parseByteSize(value);
  if (bytes === undefined) {
    throw new UsageError(
      `--tier "${text}": the RAM capacity must be an expert count or bytes such as 64GiB, got "${value}".`,
    );
  }
  return { kind: "bytes", bytes };
}

function parseSsd(value: string, text: string): Ssd {
  const preset = SSD_PRESETS[value];
  if (preset) return preset;
  const m = /^(\d+(?:\.\d+)?):(\d+(?:\.\d+)?)$/.exec(value);
  if (!m || Number(m[1]) <= 0) {
    throw new UsageError(
      `--tier "${text}": ssd must be one of ${
        Object.keys(SSD_PRESETS).join(", ")
      } or READ_GB_S:LATENCY_US such as 7:80, got "${value}".`,
    );
  }
  return {
    name: value,
    read_gb_s: Number(m[1]),
    latency_us: Number(m[2]),
    source: "given on the command line",
  };
}

/** Experts per partition (a layer, or all layers under a global budget) a RAM capacity buys. */
export function ramExperts(
  ram: RamCapacity,
  expertBytes: number,
  budget: Budget,
  layers: number,
): number {
  if (ram.kind === "experts") return ram.experts;
  const total = Math.floor(ram.bytes / expertBytes);
  return budget === "global" ? total : Math.floor(total / layers);
}

/** The tier part of a timing setting: what `TimingModel` needs per upload. */
export interface TierCosts {
  /** Experts RAM holds per partition (0: none). */
  ramCapacity: number;
  ramPolicy: PolicyName;
  budget: Budget;
  /** One full-precision expert read from the SSD and streamed to the GPU, ms. */
  ssdMs: number;
  /** The same for the low-precision copy of `--miss-dtype` (equal to ssdMs without it). */
  missSsdMs: number;
}

/** ssd latency + bytes / min(ssd, link) bandwidth, ms. */
export function ssdReadMs(ssd: Ssd, bytes: number, linkGbS: number): number {
  return ssd.latency_us / 1000 + (bytes / (Math.min(ssd.read_gb_s, linkGbS) * 1e9)) * 1000;
}

/**
 * Host RAM as a second cache over the same keys (layer × E + expert) that
 * sees the GPU cache's uploads only. Keys fetched within one step are guarded
 * together, so they never evict each other. Its policy's clock counts RAM
 * accesses, not the trace's: lrfu's half-life (set in tokens of layers × k
 * accesses) therefore spans more tokens here, as many more as GPU hits are
 * left out.
 */
export class RamTier {
  readonly policy: CachePolicy | null;
  readonly guard: Guard;
  /** RAM accesses so far: the policies' clock. */
  position = 0;

  constructor(tier: TierCosts, shape: { layers: number; experts: number; topK: number }) {
    const keys = shape.layers * shape.experts;
    const partitionKeys = tier.budget === "global" ? keys : shape.experts;
    const capacity = Math.min(tier.ramCapacity, partitionKeys);
    this.policy = capacity > 0
      ? createPolicy(
        tier.ramPolicy,
        policyOptions({
          layers: shape.layers,
          experts: shape.experts,
          topK: shape.topK,
          capacity,
          budget: tier.budget,
        }),
      )
      : null;
    this.guard = new Guard(keys);
  }

  /** A new step: the keys fetched at the last one may be evicted again. */
  step(): void {
    this.guard.clear();
  }

  /**
   * The GPU uploads `key`: true when RAM holds it (a RAM hit); otherwise it is
   * read from the SSD and admitted to RAM (unless every victim is guarded).
   */
  fetch(key: number, demand: boolean): boolean {
    const policy = this.policy;
    if (policy === null) return false;
    const now = this.position++;
    this.guard.add(key);
    if (policy.has(key)) {
      policy.hit(key, now);
      return true;
    }
    // REFUSED (every victim guarded) leaves it out of RAM: it was still read.
    policy.admit(key, now, demand, this.guard);
    return false;
  }
}
