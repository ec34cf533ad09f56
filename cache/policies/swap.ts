/**
 * Swap (CoSMoEs, Eq. 8): each layer's cache holds exactly its current
 * selection of k experts; when the selection changes, the new experts are
 * loaded over the ones no longer selected. Capacity is k per layer whatever
 * `--capacity` and `--budget` say (the rows report capacity k per layer).
 * Implemented as a per-layer cache of k slots; since the current selection is
 * guarded, every miss replaces an expert the layer no longer needs (the
 * oldest of them when a prefetch makes the choice).
 */
import {
  type CachePolicy,
  checkPolicyOptions,
  KeyLists,
  NONE,
  type PolicyOptions,
  REFUSED,
} from "../policy.ts";

export class SwapPolicy implements CachePolicy {
  readonly name: string = "swap";
  readonly capacity: number;
  #lists: KeyLists;
  #cached: Uint8Array;
  #size: Int32Array;
  #experts: number;

  constructor(options: PolicyOptions) {
    checkPolicyOptions("swap", {
      ...options,
      capacity: options.topK,
      partitionKeys: options.experts,
    });
    this.capacity = options.topK;
    this.#experts = options.experts;
    this.#lists = new KeyLists(options.keys, options.experts);
    this.#cached = new Uint8Array(options.keys);
    this.#size = new Int32Array(options.keys / options.experts);
  }

  has(key: number): boolean {
    return this.#cached[key] === 1;
  }

  hit(_key: number, _now: number): void {}

  admit(key: number, _now: number, _demand: boolean, guard: Uint8Array): number {
    const layer = (key / this.#experts) | 0;
    let victim = NONE;
    if (this.#size[layer]! >= this.capacity) {
      victim = this.#lists.lastUnguarded(key, guard);
      if (victim < 0) return REFUSED;
      this.#lists.unlink(victim);
      this.#cached[victim] = 0;
    } else {
      this.#size[layer]!++;
    }
    this.#lists.pushFront(key);
    this.#cached[key] = 1;
    return victim;
  }
}
