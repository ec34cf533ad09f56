/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * Renders one chat template in a worker, so that a template that loops or
 * recurses without end can be stopped from outside (see tokenizer.ts).
 * Once loaded it posts {ready: true}; then message: {source, context}; reply:
 * {text} or {error}.
 */
import { Template } from "@huggingface/jinja";

self.onmessage = (event: MessageEvent<{ source: string; context: Record<string, unknown> }>) => {
  try {
    const text = new Template(event.data.source).render(event.data.context);
    self.postMessage({ text });
  } catch (error) {
    self.postMessage({ error: error instanceof Error ? error.message : String(error) });
  }
};

self.postMessage({ ready: true });
