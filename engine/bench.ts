/** `moetrace bench engine`. Not built yet: it says so and exits 1. */
import { notBuiltYet } from "../common/errors.ts";
import type { BenchOptions } from "../bench/bench.ts";

// deno-lint-ignore require-await
export async function benchEngine(_options: BenchOptions): Promise<void> {
  notBuiltYet("bench engine");
}
