/**
 * The trace format, version 1 (DESIGN.md "Trace format"): a directory with a
 * `manifest.json` and Arrow IPC shards of one row per token. Nothing under
 * trace/ imports GPU code, so a trace made on a big GPU elsewhere analyses on
 * a laptop (tests/import_graph_test.ts checks it).
 */
export * from "./manifest.ts";
export * from "./schema.ts";
export * from "./reader.ts";
export * from "./writer.ts";
