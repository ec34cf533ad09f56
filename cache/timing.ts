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
 * The numbers per step (`StepCosts`: upload, expert and attention times)
 * come from costs.ts, out of dtypes.ts and hardware.ts. The oracle's timing
 * derived from miss counts is in oracle_shadow.ts.
 */
import type { StepCosts } from "./costs.ts";
import type { CacheListener } from "./expert_cache.ts";

/** Clock, transfer queue and per-layer time of one replay under one cost setting. */
export class TimingModel implements CacheListener {
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
  // demand load and `use` for each prefetched key used for the first time
  // (in the order of the step's experts), then `prefetch` for each prefetch
  // issued; `end`. The replay gives the clock (`begin`, `end`, `endToken`);
  // `load`, `use` and `prefetch` come from the ExpertCache this model listens
  // to, as it decides. The layer waits only for its demand loads and first
  // uses: every other expert it needs was waited for by the layer that last
  // used it, and has not been uploaded since (a cached key is never uploaded
  // again). timing_test.ts checks this against waiting for every expert.
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

  /** Ends a token. */
  endToken(): void {
    this.now += this.costs.otherMs;
    this.tokens++;
    this.#next?.endToken();
  }
}
