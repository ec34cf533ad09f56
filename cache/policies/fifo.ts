/**
 * FIFO: evict the key that entered the cache first; hits change nothing.
 * Same intrusive list as LRU, but only insertion moves a key to the head.
 */
import { ListPolicy, type PolicyOptions } from "../policy.ts";

export class FifoPolicy extends ListPolicy {
  constructor(options: PolicyOptions) {
    super("fifo", options);
  }
}
