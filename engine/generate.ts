/** The `generate` command. Not built yet: it says so and exits 1. */
import { notBuiltYet } from "../common/errors.ts";

// deno-lint-ignore require-await
export async function generateCommand(_flags: Record<string, unknown>): Promise<void> {
  notBuiltYet("generate");
}
