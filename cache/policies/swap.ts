/**
 * Swap (CoSMoEs, Eq. 8): each layer's cache holds exactly its current
 * selection of k experts; when the selection changes, the new experts are
 * loaded over the ones no longer selected. Capacity is k per layer whatever
 * `--capacity` and `--budget` say (the rows report capacity k per layer).
 * Implemented as a per-layer cache of k slots; since the current selection is
 * guarded, every miss replaces an expert the layer no longer needs (the
 * oldest of them when a prefetch makes the choice).
 */
import { ListPolicy, type PolicyOptions } from "../policy.ts";

export class SwapPolicy extends ListPolicy {
  constructor(options: PolicyOptions) {
    super("swap", { ...options, capacity: options.topK, partitionKeys: options.experts });
  }
}
