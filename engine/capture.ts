/** The `capture` command. Not built yet: it says so and exits 1. */
import { notBuiltYet } from "../common/errors.ts";

// deno-lint-ignore require-await
export async function captureCommand(_flags: Record<string, unknown>): Promise<void> {
  notBuiltYet("capture");
}
