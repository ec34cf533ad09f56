import assert from "node:assert/strict";
import { runCli } from "../../tests/cli_helpers.ts";
import { type TraceDoc, TraceReader, TraceWriter } from "../mod.ts";

const HEADER = { moetrace_import: 1, num_layers: 2, num_experts: 4, top_k: 2 };
const DOCS = [
  {
    domain: "ArXiv",
    tokens: [5, 9, 5],
    experts: [[[0, 1], [2, 3]], [[1, 0], [3, 2]], [[3, 2], [0, 1]]],
    weights: [[[0.6, 0.4], [0.5, 0.5]], [[0.7, 0.3], [0.9, 0.1]], [[0.55, 0.45], [0.8, 0.2]]],
    pieces: ["The", " cat", "The"],
  },
  { domain: "Github", tokens: [7], experts: [[[2, 1], [1, 0]]] },
];

function jsonl(lines: unknown[]): string {
  return lines.map((l) => JSON.stringify(l)).join("\n") + "\n";
}

async function docsOf(dir: string): Promise<TraceDoc[]> {
  const docs: TraceDoc[] = [];
  for await (const d of (await TraceReader.open(dir)).documents()) docs.push(structuredClone(d));
  return docs;
}

Deno.test("import of a hand-written JSONL equals the same data written directly", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/in.jsonl`, jsonl([HEADER, ...DOCS]));
  const result = await runCli(["import", `${dir}/in.jsonl`, "--out", `${dir}/imported`]);
  assert.equal(result.code, 0, result.stderr);

  const reader = await TraceReader.open(`${dir}/imported`);
  const direct = await TraceWriter.open(`${dir}/direct`, {
    model: reader.manifest.model,
    capture: { ...reader.manifest.capture, domains: [] },
  });
  await direct.add({
    doc: 0,
    domain: "ArXiv",
    tokens: Uint32Array.of(5, 9, 5),
    pieces: ["The", " cat", "The"],
    experts: Uint16Array.of(0, 1, 2, 3, 1, 0, 3, 2, 3, 2, 0, 1),
    weights: Float32Array.of(0.6, 0.4, 0.5, 0.5, 0.7, 0.3, 0.9, 0.1, 0.55, 0.45, 0.8, 0.2),
  });
  // No weights: 1/k each; no pieces: the id in decimal.
  await direct.add({
    doc: 1,
    domain: "Github",
    tokens: Uint32Array.of(7),
    pieces: ["7"],
    experts: Uint16Array.of(2, 1, 1, 0),
    weights: Float32Array.of(0.5, 0.5, 0.5, 0.5),
  });
  await direct.close();
  assert.deepEqual(await docsOf(`${dir}/imported`), await docsOf(`${dir}/direct`));
  assert.deepEqual(reader.manifest.model.moe_layers, [0, 1]);
  assert.deepEqual(reader.manifest.capture.domains, ["ArXiv", "Github"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("malformed interchange JSONL gives a one-line error with the line number and no output", async (t) => {
  const good = DOCS[1]!;
  const cases: [string, string, RegExp][] = [
    ["empty file", "", /in\.jsonl is empty; expected a header line\.$/],
    ["not JSON", jsonl([HEADER]) + "{oops\n", /in\.jsonl line 2 is not valid JSON: /],
    ["no header", jsonl([good]), /line 1 must be the header \{"moetrace_import": 1, /],
    [
      "header version",
      jsonl([{ ...HEADER, moetrace_import: 2 }]),
      /line 1 has "moetrace_import": 2, expected 1\.$/,
    ],
    [
      "header top_k > E",
      jsonl([{ ...HEADER, top_k: 5 }]),
      /line 1 field "top_k" must be an integer in 1\.\.4, got 5\.$/,
    ],
    [
      "tokens missing",
      jsonl([HEADER, { domain: "A", experts: [] }]),
      /line 2 field "tokens" must be a non-empty list/,
    ],
    [
      "negative token",
      jsonl([HEADER, { ...good, tokens: [-3] }]),
      /line 2 field "tokens\[0\]" must be a non-negative integer, got -3\.$/,
    ],
    [
      "experts per token",
      jsonl([HEADER, good, { ...good, experts: [] }]),
      /line 3 field "experts" must have one entry per token \(1\), got 0\.$/,
    ],
    [
      "experts per layer",
      jsonl([HEADER, { ...good, experts: [[[2, 1]]] }]),
      /line 2 field "experts\[0\]" must have one entry per MoE layer \(2\), got 1\.$/,
    ],
    [
      "k per layer",
      jsonl([HEADER, { ...good, experts: [[[2], [1, 0]]] }]),
      /line 2 field "experts\[0\]\[0\]" must list top_k = 2 values, got \[2\]\.$/,
    ],
    [
      "expert out of range",
      jsonl([HEADER, { ...good, experts: [[[2, 4], [1, 0]]] }]),
      /"experts\[0\]\[0\]\[1\]" must be an expert id in 0\.\.3, got 4\.$/,
    ],
    [
      "duplicate expert",
      jsonl([HEADER, { ...good, experts: [[[2, 2], [1, 0]]] }]),
      /line 2 field "experts\[0\]\[0\]" chooses expert 2 twice/,
    ],
    [
      "weights not numbers",
      jsonl([HEADER, { ...good, weights: [[[0.5, "x"], [0.5, 0.5]]] }]),
      /"weights\[0\]\[0\]\[1\]" must be a finite number, got "x"\.$/,
    ],
    [
      "domain not a string",
      jsonl([HEADER, { ...good, domain: 3 }]),
      /line 2 field "domain" must be a string, got 3\.$/,
    ],
  ];
  for (const [name, text, pattern] of cases) {
    await t.step(name, async () => {
      const dir = await Deno.makeTempDir();
      await Deno.writeTextFile(`${dir}/in.jsonl`, text);
      const result = await runCli(["import", `${dir}/in.jsonl`, "--out", `${dir}/trace`]);
      assert.equal(result.code, 1);
      assert.match(result.stderr, pattern);
      assert.equal(result.stderr.split("\n").length, 1, "one line");
      assert.deepEqual(
        [...Deno.readDirSync(dir)].map((e) => e.name),
        ["in.jsonl"],
        "no partial output",
      );
      await Deno.remove(dir, { recursive: true });
    });
  }
  await t.step("invalid UTF-8", async () => {
    const dir = await Deno.makeTempDir();
    const bytes = new TextEncoder().encode(jsonl([HEADER]) + '{"domain": "');
    await Deno.writeFile(
      `${dir}/in.jsonl`,
      new Uint8Array([...bytes, 0xff, 0xfe, 0x22, 0x7d, 0x0a]),
    );
    const result = await runCli(["import", `${dir}/in.jsonl`, "--out", `${dir}/trace`]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /in\.jsonl line \d+ is not valid UTF-8\.$/);
    await Deno.remove(dir, { recursive: true });
  });
});

Deno.test("interchange JSONL carries probs, phase, request and arrival_step into columns", async () => {
  const dir = await Deno.makeTempDir();
  const header = { ...HEADER, num_layers: 1, num_experts: 3, top_k: 1, mode: "generate" };
  const docs = [
    {
      domain: "chat",
      tokens: [4, 5],
      experts: [[[2]], [[0]]],
      weights: [[[1]], [[1]]],
      probs: [[[0.25, 0.25, 0.5]], [[0.625, 0.125, 0.25]]],
      phase: [0, 1],
      request: "req-7",
      arrival_step: 3,
    },
    {
      domain: "chat",
      tokens: [6],
      experts: [[[1]]],
      weights: [[[1]]],
      probs: [[[0, 1, 0]]],
      phase: [1],
      request: 12,
      arrival_step: 0,
    },
  ];
  await Deno.writeTextFile(`${dir}/in.jsonl`, jsonl([header, ...docs]));
  const result = await runCli(["import", `${dir}/in.jsonl`, "--out", `${dir}/t`]);
  assert.equal(result.code, 0, result.stderr);
  const reader = await TraceReader.open(`${dir}/t`);
  assert.equal(reader.manifest.capture.probs, true);
  assert.equal(reader.manifest.capture.requests, true);
  assert.equal(reader.manifest.capture.arrival_steps, true);
  assert.equal(reader.manifest.capture.weights_recorded, true);
  assert.equal(reader.manifest.capture.mode, "generate");
  const read = (await docsOf(`${dir}/t`)).map((d) => ({
    probs: Array.from(d.probs!),
    phase: Array.from(d.phase!),
    request: d.request,
    arrivalStep: d.arrivalStep,
  }));
  assert.deepEqual(read, [
    {
      probs: [0.25, 0.25, 0.5, 0.625, 0.125, 0.25],
      phase: [0, 1],
      request: "req-7",
      arrivalStep: 3,
    },
    { probs: [0, 1, 0], phase: [1], request: "12", arrivalStep: 0 },
  ]);
  // A later document without a column the first one had is refused, leaving nothing.
  const { probs: _, ...noProbs } = docs[1]!;
  await Deno.writeTextFile(`${dir}/bad.jsonl`, jsonl([header, docs[0], noProbs]));
  const bad = await runCli(["import", `${dir}/bad.jsonl`, "--out", `${dir}/u`]);
  assert.equal(bad.code, 1);
  assert.match(
    bad.stderr,
    /bad\.jsonl line 3 lacks field "probs", which the first document had; every document must carry the same optional fields\.$/,
  );
  assert.ok(!(await Deno.stat(`${dir}/u`).catch(() => null)));
  await Deno.remove(dir, { recursive: true });
});
