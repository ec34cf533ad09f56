/** `moetrace bench NAME`: dispatches to the benchmark of one part. */
import { UsageError } from "../common/errors.ts";
import { didYouMean } from "../common/suggest.ts";
import type { BenchOptions } from "./measure.ts";

export async function benchCommand(which: string, flags: Record<string, unknown>): Promise<void> {
  const options: BenchOptions = { json: flags.json === true };
  if (typeof flags.calibrate === "string") options.calibrate = flags.calibrate;
  if (flags.large === true) {
    if (which !== "offload") throw new UsageError(`--large is for bench offload, not ${which}.`);
    options.large = true;
  }
  switch (which) {
    case "trace":
      return (await import("./trace_bench.ts")).benchTrace(options);
    case "import":
      return (await import("./import_bench.ts")).benchImport(options);
    case "analysis":
      await (await import("../analysis/bench.ts")).benchAnalysis(options);
      return (await import("../analysis/sql/bench.ts")).benchCountEngines(options);
    case "coverage":
      return (await import("../analysis/coverage_bench.ts")).benchCoverage(options);
    case "cache":
      return (await import("../cache/bench.ts")).benchCache(options);
    case "engine":
      await (await import("../engine/bench.ts")).benchEngine(options);
      return;
    case "offload":
      await (await import("../engine/offload_bench.ts")).benchOffload(options);
      return;
    case "widths":
      await (await import("../engine/widths_bench.ts")).benchWidths(options);
      return;
    case "gpu":
      return (await import("../engine/gpu_bench.ts")).benchGpu(options);
    default:
      throw new UsageError(
        `bench takes engine, offload, widths, gpu, cache, analysis, coverage, trace or import, got "${which}".${
          didYouMean(which, [
            "engine",
            "offload",
            "widths",
            "gpu",
            "cache",
            "analysis",
            "coverage",
            "trace",
            "import",
          ])
        }`,
      );
  }
}
