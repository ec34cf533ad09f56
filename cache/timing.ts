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
 * What a miss does (costs.ts's `MissSetting`) changes steps 2-4:
 *
 * - `--tier`: a load is served from host RAM over the link when the RAM tier
 *   (tiers.ts, its own policy) holds the expert, else it is read from the SSD
 *   on the SSD's own FIFO queue, `ssdMs = ssd latency + bytes / min(ssd,
 *   link)`, streaming through RAM (and admitted there) without holding the
 *   link queue;
 * - `--miss-dtype`: a demand load fetches the low-precision copy
 *   (`missTransferMs`, `missSsdMs`); every use of it until the key is loaded
 *   again (a prefetch loads full precision) is a degraded use;
 * - `--on-miss cpu`: the m experts of the step that are not resident when
 *   the router decides (misses, hits whose background upload is still in
 *   flight, prefetches still in flight) are computed on the CPU, one after
 *   another from the decision time (an expert being read from the SSD once
 *   its read completes), while the GPU computes the other count − m at once;
 *   the uploads still go on the queue in the background (the cache's
 *   contents, hits and misses are the same for every `--on-miss`), so later
 *   loads queue behind them:
 *     cpuEnd = fold(t = now; t = max(t, available_i) + cpuExpertMs)
 *     end    = max(now + (count − m) × expertMs, cpuEnd)
 *   `--on-miss cheaper` takes, per step, the smaller of that end and the
 *   transfer end max(now, ready_i) + count × expertMs, where ready_i is when
 *   each of the m uploads completes.
 *
 * The stall is the layer's time beyond attention and its own GPU compute:
 * end − now − (experts computed on the GPU) × expertMs.
 *
 * The numbers per step (`StepCosts`: upload, expert and attention times)
 * come from costs.ts, out of dtypes.ts and hardware.ts. The oracle's timing
 * derived from miss counts is in oracle_shadow.ts.
 */
import { type StepCosts, timedByReplay } from "./costs.ts";
import type { CacheListener } from "./expert_cache.ts";
import { RamTier } from "./tiers.ts";

/**
 * Whether timing models of these costs must be told every hit (the cache's
 * `hits` option): uses of low-precision copies are counted, and under
 * --on-miss cpu|cheaper a hit may find its upload still in flight.
 */
export function timingNeedsHits(costs: readonly StepCosts[]): boolean {
  return costs.some((c) => c.missBytes !== undefined || c.onMiss !== undefined);
}

/** What the miss handling counted in one replay (per layer unless said). */
export interface MissCounts {
  cpuExperts: Float64Array;
  ramHits: Float64Array;
  ssdReads: Float64Array;
  degradedUses: Float64Array;
  degradedSteps: Float64Array;
  /** Tokens with a degraded expert at any layer. */
  degradedTokens: number;
}

export function missCounts(t: TimingModel): MissCounts {
  return {
    cpuExperts: t.cpuExperts,
    ramHits: t.ramHits,
    ssdReads: t.ssdReads,
    degradedUses: t.degradedUses,
    degradedSteps: t.degradedSteps,
    degradedTokens: t.degradedTokens,
  };
}

type Shape = { layers: number; experts: number; topK?: number };

/**
 * Clock, transfer queue and per-layer time of one replay under one cost
 * setting with plain uploads. `TimingModel.create` returns the subclass that
 * handles --on-miss, --tier and --miss-dtype when the costs ask for them, so
 * the plain replay's events stay as short as they were (the replay loop
 * calls them for every step).
 */
export class TimingModel implements CacheListener {
  readonly costs: StepCosts;
  /** Compute clock, ms. */
  now = 0;
  /** When the transfer queue is next idle, ms. */
  queueFree = 0;
  /** When the SSD's read queue is next idle, ms (with a tier). */
  ssdFree = 0;
  /** [keys] when each expert's last upload completes, ms. */
  readonly readyAt: Float64Array;
  /** [M] stall ms summed over tokens. */
  readonly stallMs: Float64Array;
  /** [M] attention + stall + expert compute ms summed over tokens. */
  readonly layerMs: Float64Array;
  /** [M] prefetched experts first used while still in flight. */
  readonly late: Float64Array;
  /** [M] experts computed on the CPU (`--on-miss cpu|cheaper`). */
  readonly cpuExperts: Float64Array;
  /** [M] uploads (demand and prefetch) served from host RAM, by the key's layer (with a tier). */
  readonly ramHits: Float64Array;
  /** [M] uploads read from the SSD, by the key's layer (with a tier). */
  readonly ssdReads: Float64Array;
  /** [M] expert uses served by a low-precision copy (`--miss-dtype`). */
  readonly degradedUses: Float64Array;
  /** [M] token-layers with at least one degraded expert. */
  readonly degradedSteps: Float64Array;
  /** Tokens with a degraded expert at any layer. */
  degradedTokens = 0;
  tokens = 0;
  /** The current step's decision time, ms. */
  protected decision = 0;
  /** When the current step's demand loads and first uses are all resident, ms. */
  protected ready = 0;
  /** The next model of a chain (see `chain`). */
  protected next: TimingModel | null = null;
  protected readonly attentionMs: number;
  protected readonly transferMs: number;
  protected readonly expertMs: number;
  protected readonly serial: boolean;

  constructor(costs: StepCosts, shape: Shape) {
    if (new.target === TimingModel && timedByReplay(costs)) {
      throw new RangeError("costs with --on-miss, --tier or --miss-dtype need TimingModel.create.");
    }
    this.costs = costs;
    this.attentionMs = costs.attentionMs;
    this.transferMs = costs.transferMs;
    this.expertMs = costs.expertMs;
    this.serial = costs.serialUploads === true;
    const keys = shape.layers * shape.experts;
    this.readyAt = new Float64Array(keys);
    this.stallMs = new Float64Array(shape.layers);
    this.layerMs = new Float64Array(shape.layers);
    this.late = new Float64Array(shape.layers);
    this.cpuExperts = new Float64Array(shape.layers);
    this.ramHits = new Float64Array(shape.layers);
    this.ssdReads = new Float64Array(shape.layers);
    this.degradedUses = new Float64Array(shape.layers);
    this.degradedSteps = new Float64Array(shape.layers);
  }

  /** The timing model for `costs`: plain, or the one that handles what a miss does. */
  static create(costs: StepCosts, shape: Shape): TimingModel {
    return timedByReplay(costs) ? new MissTimingModel(costs, shape) : new TimingModel(costs, shape);
  }

  // One layer of one token as events, in this order: `begin`; `load` for each
  // demand load, `use` for each prefetched key used for the first time and
  // `hit` for each other hit (only when the cache is asked to tell hits: with
  // --miss-dtype or --on-miss), in the order of the step's experts, then
  // `prefetch` for each prefetch issued; `end`. The replay gives the clock
  // (`begin`, `end`, `endToken`); `load`, `use`, `hit` and `prefetch` come
  // from the ExpertCache this model listens to, as it decides. The layer
  // waits only for its demand loads and first uses: every other expert it
  // needs was waited for by the layer that last used it, and has not been
  // uploaded since (a cached key is never uploaded again). timing_test.ts
  // checks this against waiting for every expert.
  //
  // Every event is passed on to the model `chain` linked after this one, so
  // a replay timing several settings sends each event once; with one setting
  // (the usual case) that costs a null check, not a loop over models.

  /** Links `models` in order; returns the first, whose events reach them all (null for none). */
  static chain(models: readonly TimingModel[]): TimingModel | null {
    for (let i = 0; i + 1 < models.length; i++) models[i]!.next = models[i + 1]!;
    return models[0] ?? null;
  }

  /** Attention and the router run; the router decides at `now + attentionMs`. */
  begin(): void {
    const decision = this.now + this.attentionMs;
    this.decision = decision;
    this.ready = decision;
    this.next?.begin();
  }

  /** Queues the demand upload of `key` at the decision time; the layer waits for it. */
  load(key: number): void {
    const done = this.upload(key, this.transferMs);
    if (done > this.ready) this.ready = done;
    this.next?.load(key);
  }

  /** Queues the upload of `key` at the decision time; the layer does not wait for it. */
  prefetch(key: number): void {
    this.upload(key, this.transferMs);
    this.next?.prefetch(key);
  }

  /** A hit that is not a first use: nothing to time with plain uploads. */
  hit(key: number): void {
    this.next?.hit(key);
  }

  /** Queues an upload of `key` taking `ms` on the link at the decision time; returns when it completes. */
  protected upload(key: number, ms: number): number {
    const now = this.decision;
    const free = this.queueFree;
    const done = (free > now ? free : now) + ms;
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
    if (r > this.decision) {
      this.late[layer]!++;
      if (r > this.ready) this.ready = r;
    }
    this.next?.use(layer, key);
  }

  /** The layer waits for its demand loads and first uses, then computes `count` experts. */
  end(layer: number, count: number): void {
    const now = this.decision;
    let ready = this.ready;
    // Serial uploads: this step's prefetches also run before its experts.
    if (this.serial && this.queueFree > ready) ready = this.queueFree;
    const stall = ready - now;
    const compute = count * this.expertMs;
    this.stallMs[layer]! += stall;
    this.layerMs[layer]! += this.attentionMs + stall + compute;
    this.now = ready + compute;
    this.next?.end(layer, count);
  }

  /** Ends a token. */
  endToken(): void {
    this.now += this.costs.otherMs;
    this.tokens++;
    this.next?.endToken();
  }
}

/**
 * The timing model with what a miss does: uploads from RAM or the SSD
 * (`--tier`), low-precision copies on demand misses (`--miss-dtype`), and
 * pending experts computed on the CPU (`--on-miss cpu|cheaper`); see the
 * file's comment for the equations. `ready` holds only the first uses of
 * prefetches here; demand loads and in-flight needs go to `#demandReady`.
 */
class MissTimingModel extends TimingModel {
  /** When the current step's demand loads (and in-flight needs) are all resident, ms. */
  #demandReady = 0;
  /** 0 transfer, 1 cpu, 2 cheaper. */
  #onMiss: number;
  #cpuMs: number;
  /** [keys] 1 while the cached copy is the low-precision one, or null without --miss-dtype. */
  #degraded: Uint8Array | null;
  #missTransferMs: number;
  #ram: RamTier | null;
  /** [keys] 1 when the key's last upload was read from the SSD (with a tier and --on-miss), else null. */
  #onSsd: Uint8Array | null;
  #ssdMs: number;
  #missSsdMs: number;
  #experts: number;
  // The current step's CPU work and degraded uses.
  #cpuEnd = 0;
  #cpuCount = 0;
  #degradedLoads = 0;
  #degradedHits = 0;
  #tokenDegraded = false;

  constructor(costs: StepCosts, shape: Shape) {
    super(costs, shape);
    const keys = shape.layers * shape.experts;
    this.#experts = shape.experts;
    this.#onMiss = costs.onMiss === "cpu" ? 1 : costs.onMiss === "cheaper" ? 2 : 0;
    this.#cpuMs = costs.cpuExpertMs ?? 0;
    this.#degraded = costs.missBytes !== undefined ? new Uint8Array(keys) : null;
    this.#missTransferMs = costs.missTransferMs ?? costs.transferMs;
    const tier = costs.tier;
    this.#ram = tier
      ? new RamTier(tier, { layers: shape.layers, experts: shape.experts, topK: shape.topK ?? 1 })
      : null;
    this.#onSsd = tier && this.#onMiss !== 0 ? new Uint8Array(keys) : null;
    this.#ssdMs = tier?.ssdMs ?? 0;
    this.#missSsdMs = tier?.missSsdMs ?? 0;
  }

  override begin(): void {
    const decision = this.now + this.attentionMs;
    this.decision = decision;
    this.ready = decision;
    this.#demandReady = decision;
    this.#cpuEnd = decision;
    this.#cpuCount = 0;
    this.#degradedLoads = 0;
    this.#degradedHits = 0;
    this.#ram?.step();
    this.next?.begin();
  }

  /** A demand load: waited for on the transfer path, computed on the CPU on the other. */
  override load(key: number): void {
    const done = this.#fetch(key, true);
    if (done > this.#demandReady) this.#demandReady = done;
    this.next?.load(key);
  }

  override prefetch(key: number): void {
    this.#fetch(key, false);
    this.next?.prefetch(key);
  }

  /**
   * A hit on a key not first used now. Under --on-miss cpu|cheaper a hit may
   * find its background upload still in flight: it is then computed like a
   * miss (on the CPU, or waited for when the step takes the transfer path).
   * A hit on a low-precision copy is a degraded use.
   */
  override hit(key: number): void {
    const degraded = this.#degraded;
    const low = degraded !== null && degraded[key] === 1;
    const r = this.readyAt[key]!;
    if (r > this.decision) {
      if (low) this.#degradedLoads++;
      if (this.#onMiss !== 0) this.#inFlight(key, r);
      else if (r > this.#demandReady) this.#demandReady = r;
    } else if (low) this.#degradedHits++;
    this.next?.hit(key);
  }

  /**
   * From RAM over the link or from the SSD, the low-precision copy for a
   * demand load under --miss-dtype, and the CPU's work for a demand load
   * under --on-miss. Returns when the upload completes.
   */
  #fetch(key: number, demand: boolean): number {
    const degraded = this.#degraded;
    const low = demand && degraded !== null;
    if (degraded !== null) degraded[key] = low ? 1 : 0;
    let done: number;
    // When the CPU can read the expert: at once from RAM, after the SSD read.
    let available = this.decision;
    const ram = this.#ram;
    if (ram !== null) {
      const layer = Math.floor(key / this.#experts);
      const fromRam = ram.fetch(key, demand);
      if (this.#onSsd !== null) this.#onSsd[key] = fromRam ? 0 : 1;
      if (fromRam) {
        this.ramHits[layer]!++;
        done = this.upload(key, low ? this.#missTransferMs : this.transferMs);
      } else {
        this.ssdReads[layer]!++;
        const free = this.ssdFree;
        done = (free > available ? free : available) + (low ? this.#missSsdMs : this.#ssdMs);
        this.ssdFree = done;
        this.readyAt[key] = done;
        available = done;
      }
    } else {
      done = this.upload(key, low ? this.#missTransferMs : this.transferMs);
    }
    if (demand) {
      if (low) this.#degradedLoads++;
      if (this.#onMiss !== 0) {
        const start = this.#cpuEnd > available ? this.#cpuEnd : available;
        this.#cpuEnd = start + this.#cpuMs;
        this.#cpuCount++;
      }
    }
    return done;
  }

  /**
   * A prefetched key's first use; under --on-miss cpu|cheaper a late one is
   * computed like a miss instead (on the CPU, or waited for when the step
   * takes the transfer path).
   */
  override use(layer: number, key: number): void {
    const r = this.readyAt[key]!;
    if (r > this.decision) {
      this.late[layer]!++;
      if (this.#onMiss !== 0) this.#inFlight(key, r);
      else if (r > this.ready) this.ready = r;
    }
    this.next?.use(layer, key);
  }

  /** Under --on-miss cpu|cheaper: an expert needed now whose upload completes at `r`. */
  #inFlight(key: number, r: number): void {
    if (r > this.#demandReady) this.#demandReady = r;
    // The CPU reads it from RAM at once, or once its SSD read is done.
    const available = this.#onSsd !== null && this.#onSsd[key] === 1 ? r : this.decision;
    const start = this.#cpuEnd > available ? this.#cpuEnd : available;
    this.#cpuEnd = start + this.#cpuMs;
    this.#cpuCount++;
  }

  override end(layer: number, count: number): void {
    const now = this.decision;
    // The GPU's own wait: first uses of prefetches (and, when uploads share
    // its queue, every upload issued).
    let gpuReady = this.ready;
    if (this.serial && this.queueFree > gpuReady) gpuReady = this.queueFree;
    const demand = this.#demandReady;
    const ready = demand > gpuReady ? demand : gpuReady;
    let stall = ready - now;
    let compute = count * this.expertMs;
    let end = ready + compute;
    const m = this.#cpuCount;
    let onCpu = false;
    if (m > 0) {
      // The GPU computes the resident experts; the CPU the m pending ones.
      const gpuCompute = (count - m) * this.expertMs;
      const gpuEnd = gpuReady + gpuCompute;
      const splitEnd = this.#cpuEnd > gpuEnd ? this.#cpuEnd : gpuEnd;
      if (this.#onMiss === 1 || splitEnd < end) {
        onCpu = true;
        end = splitEnd;
        this.cpuExperts[layer]! += m;
        compute = gpuCompute;
        stall = splitEnd - now - gpuCompute;
      }
    }
    const degraded = this.#degradedHits + (onCpu ? 0 : this.#degradedLoads);
    if (degraded > 0) {
      this.degradedUses[layer]! += degraded;
      this.degradedSteps[layer]!++;
      this.#tokenDegraded = true;
    }
    this.stallMs[layer]! += stall;
    this.layerMs[layer]! += this.attentionMs + stall + compute;
    this.now = end;
    this.next?.end(layer, count);
  }

  override endToken(): void {
    this.now += this.costs.otherMs;
    this.tokens++;
    if (this.#tokenDegraded) {
      this.degradedTokens++;
      this.#tokenDegraded = false;
    }
    this.next?.endToken();
  }
}
