/**
 * Importing router logs recorded elsewhere (moetrace's interchange JSONL,
 * SGLang's per_token recorder and returned routed experts, vLLM's returned
 * routed experts, OLMoE's analysis output) into traces.
 */
export * from "./command.ts";
export * from "./interchange.ts";
export * from "./model_config.ts";
export * from "./sink.ts";
