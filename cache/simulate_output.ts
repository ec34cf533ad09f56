/**
 * What `simulate` hands to the writers of its output files (simulate.ts for
 * the CSVs, simulate_figures.ts for the plots, simulate_readme.ts for the
 * README): a type of its own, so the three import it rather than each other.
 */
import type { Manifest } from "../trace/mod.ts";
import type { AccessTrace } from "./access_trace.ts";
import type { SweepResult, SweepSettings } from "./sweep.ts";
import type { SweepBootstrap } from "./bootstrap.ts";

export interface SimulationOutput {
  /** The trace directory as given on the command line. */
  traceDir: string;
  manifest: Manifest;
  trace: AccessTrace;
  settings: SweepSettings;
  result: SweepResult;
  /** The document-level bootstrap behind the intervals (absent or null: none, empty intervals). */
  bootstrap?: SweepBootstrap | null;
}
