/**
 * Routing analysis (issue 5): `runAnalysis` turns a trace into tidy tables,
 * `writeAnalysis` writes them with figures, README and token colouring.
 * This module only re-exports.
 */
export { analyzeCommand } from "./analyze.ts";
export {
  accumulateTrace,
  ALL,
  type AnalysisOptions,
  type AnalysisResult,
  type DomainTotals,
  runAnalysis,
} from "./run.ts";
export { COLUMNS, writeAnalysis, type WriteOptions } from "./write.ts";
export { buildFigures, type Figure } from "./plots.ts";
export { tokenColouringHtml } from "./colouring.ts";
