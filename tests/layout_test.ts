/**
 * The layout's rules, checked on the source: no source file outside tests/ and
 * fixtures/ exceeds 800 lines (one concept per file); analysis/, cache/, trace/,
 * corpus/ and report/ never import engine/ (a trace made on a big GPU
 * elsewhere analyses on a laptop), no project file imports another through a
 * computed path (which no type check follows), and the project's imports —
 * static, dynamic and type-only alike — form no cycle.
 */
import assert from "node:assert/strict";
import { dirname, join, normalize, relative } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = normalize(join(dirname(fileURLToPath(import.meta.url)), ".."));
const SELF = relative(ROOT, fileURLToPath(import.meta.url));
const SKIP = new Set(["node_modules", "out", ".cache", ".venv", ".git", "fixtures"]);
/** Longest source file, in lines: past it a file holds more than one concept. */
const MAX_LINES = 800;
/** Top-level folders that must stay free of GPU code. */
const GPU_FREE = ["analysis", "cache", "trace", "corpus", "report"];

/** Every `.ts` file under the repository root, as a path relative to it. */
async function sourceFiles(dir = ROOT): Promise<string[]> {
  const files: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (SKIP.has(entry.name)) continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory) files.push(...await sourceFiles(path));
    else if (entry.isFile && entry.name.endsWith(".ts")) files.push(relative(ROOT, path));
  }
  return files.sort();
}

/** A file's project imports: relative specifiers, resolved to repository paths. */
export interface Imports {
  resolved: string[];
  /** `import(expr)` whose argument is not a string literal. */
  computed: string[];
}

/** Reads the import specifiers of TypeScript source (comments stripped first). */
export function parseImports(file: string, source: string): Imports {
  const code = source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
  const specifiers: string[] = [];
  const staticImport = /(?:^|\n)\s*(?:import|export)\b[^;"'`]*?\bfrom\s*["']([^"']+)["']/g;
  const bareImport = /(?:^|\n)\s*import\s*["']([^"']+)["']/g;
  const dynamicImport = /\bimport\s*\(\s*([^)]*?)\s*[,)]/g;
  const computed: string[] = [];
  for (const m of code.matchAll(staticImport)) specifiers.push(m[1]!);
  for (const m of code.matchAll(bareImport)) specifiers.push(m[1]!);
  for (const m of code.matchAll(dynamicImport)) {
    const literal = /^["']([^"'`]+)["']$/.exec(m[1]!);
    if (literal) specifiers.push(literal[1]!);
    else computed.push(m[1]!);
  }
  const resolved = specifiers
    .filter((s) => s.startsWith("./") || s.startsWith("../"))
    .map((s) => normalize(join(dirname(file), s)));
  return { resolved: [...new Set(resolved)], computed };
}

/** One cycle per strongly connected component with more than one file (or a self-import). */
export function findCycles(graph: Map<string, string[]>): string[][] {
  // Tarjan's algorithm, iterative so deep chains do not overflow the stack.
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const cycles: string[][] = [];
  for (const root of graph.keys()) {
    if (index.has(root)) continue;
    const work: [string, number][] = [[root, 0]];
    while (work.length > 0) {
      const frame = work[work.length - 1]!;
      const [node, next] = frame;
      if (next === 0) {
        index.set(node, counter);
        low.set(node, counter++);
        stack.push(node);
        onStack.add(node);
      }
      const edges = graph.get(node) ?? [];
      if (next < edges.length) {
        frame[1]++;
        const to = edges[next]!;
        if (!graph.has(to)) continue;
        if (!index.has(to)) work.push([to, 0]);
        else if (onStack.has(to)) low.set(node, Math.min(low.get(node)!, index.get(to)!));
        continue;
      }
      work.pop();
      const parent = work[work.length - 1];
      if (parent) low.set(parent[0], Math.min(low.get(parent[0])!, low.get(node)!));
      if (low.get(node) === index.get(node)) {
        const component: string[] = [];
        let member: string;
        do {
          member = stack.pop()!;
          onStack.delete(member);
          component.push(member);
        } while (member !== node);
        if (component.length > 1 || edges.includes(node)) cycles.push(component.sort());
      }
    }
  }
  return cycles;
}

async function projectGraph(): Promise<{ graph: Map<string, string[]>; computed: string[] }> {
  const graph = new Map<string, string[]>();
  const computed: string[] = [];
  for (const file of await sourceFiles()) {
    // This file's own examples are strings, not imports.
    if (file === SELF) continue;
    const imports = parseImports(file, await Deno.readTextFile(join(ROOT, file)));
    graph.set(file, imports.resolved);
    for (const expr of imports.computed) computed.push(`${file}: import(${expr})`);
  }
  return { graph, computed };
}

Deno.test("import graph: the parser sees static, type-only, re-exported and dynamic imports", () => {
  const imports = parseImports(
    "cache/x.ts",
    [
      'import { a } from "./a.ts";',
      'import type { B } from "../trace/b.ts";',
      "import {\n  c,\n  type D,\n} from './c.ts';",
      'export * from "./e.ts";',
      "// import { gone } from './commented.ts';",
      'const m = await import("../engine/model.ts");',
      "const n = await import(name);",
      'import assert from "node:assert/strict";',
    ].join("\n"),
  );
  assert.deepEqual(imports.resolved.sort(), [
    "cache/a.ts",
    "cache/c.ts",
    "cache/e.ts",
    "engine/model.ts",
    "trace/b.ts",
  ]);
  assert.deepEqual(imports.computed, ["name"]);
});

Deno.test("import graph: cycles are found, acyclic graphs pass", () => {
  const cyclic = new Map([["a", ["b"]], ["b", ["c"]], ["c", ["a", "d"]], ["d", []], ["e", ["e"]]]);
  assert.deepEqual(findCycles(cyclic).map((c) => c.join(",")).sort(), ["a,b,c", "e"]);
  assert.deepEqual(findCycles(new Map([["a", ["b", "c"]], ["b", ["c"]], ["c", []]])), []);
});

Deno.test("analysis/, cache/, trace/, corpus/ and report/ never import engine/", async () => {
  const { graph } = await projectGraph();
  const offending: string[] = [];
  for (const [file, imports] of graph) {
    if (!GPU_FREE.some((dir) => file.startsWith(`${dir}/`))) continue;
    for (const target of imports) {
      if (target.startsWith("engine/")) offending.push(`${file} → ${target}`);
    }
  }
  assert.deepEqual(offending, []);
  assert.ok(graph.size > 100, `expected the whole project, found ${graph.size} files`);
});

Deno.test("no project file imports through a computed path or in a cycle", async () => {
  const { graph, computed } = await projectGraph();
  assert.deepEqual(computed, []);
  assert.deepEqual(findCycles(graph), []);
});

Deno.test("no source file outside tests/ and fixtures/ exceeds 800 lines", async () => {
  const long: string[] = [];
  for (const file of await sourceFiles()) {
    if (file.startsWith("tests/")) continue;
    const lines = (await Deno.readTextFile(join(ROOT, file))).split("\n").length - 1;
    if (lines > MAX_LINES) long.push(`${file}: ${lines} lines`);
  }
  assert.deepEqual(long, []);
});

Deno.test("every path ARCHITECTURE.md names exists, and it names every top-level folder", async () => {
  const text = await Deno.readTextFile(join(ROOT, "ARCHITECTURE.md"));
  const named = [...text.matchAll(/`([a-z_]+\/[\w./]*|[a-z_]+\.ts)`/g)].map((m) => m[1]!);
  const missing: string[] = [];
  for (const path of new Set(named)) {
    try {
      await Deno.stat(join(ROOT, path));
    } catch {
      missing.push(path);
    }
  }
  assert.deepEqual(missing, []);
  const folders = new Set(
    (await sourceFiles()).filter((f) => f.includes("/")).map((f) => f.split("/")[0]!),
  );
  const unnamed = [...folders].filter((folder) => !named.includes(`${folder}/`));
  assert.deepEqual(unnamed, []);
  // README's layout tree lists the same folders, one per line.
  const readme = await Deno.readTextFile(join(ROOT, "README.md"));
  const tree = [...readme.matchAll(/^ {2}([a-z_]+)\/ {2,}/gm)].map((m) => m[1]!);
  assert.deepEqual([...folders].filter((folder) => !tree.includes(folder)), []);
  for (const folder of tree) assert.ok((await Deno.stat(join(ROOT, folder))).isDirectory, folder);
});
