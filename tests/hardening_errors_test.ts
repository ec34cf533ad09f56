/**
 * One sentence instead of a stack trace: shard entries ".", "" or a folder
 * in model.safetensors.index.json, a tensor too large to allocate, `import`
 * of a folder, and a full disk during import and trace writing (a real
 * file-size limit, `ulimit -f` with SIGXFSZ ignored, so writes fail as on a
 * full file system: no root, no special mount), leaving no partial output.
 */
import assert from "node:assert/strict";
import { DataError } from "../common/errors.ts";
import { openCheckpoint } from "../engine/checkpoint.ts";
import { readTensorBytes } from "../engine/safetensors.ts";
import { runCli } from "./cli_helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const TINY = `${ROOT}fixtures/models/tiny-moe`;

Deno.test("index entries '.', '' and a folder are one sentence naming the index", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-index-" });
  await Deno.copyFile(`${TINY}/config.json`, `${dir}/config.json`);
  await Deno.copyFile(`${TINY}/model.safetensors`, `${dir}/part-1.safetensors`);
  await Deno.mkdir(`${dir}/sub`);
  const bytes = await Deno.readFile(`${dir}/part-1.safetensors`);
  const length = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + length)));
  const names = Object.keys(header).filter((k) => k !== "__metadata__");
  const index = `${dir}/model.safetensors.index.json`;
  for (
    const [entry, expected] of [
      [".", `lists shard ".", expected a file name in ${dir}.`],
      ["", `lists shard "", expected a file name in ${dir}.`],
      ["..", `lists shard "..", expected a file name in ${dir}.`],
      ["sub", `lists shard "sub", which is not a file.`],
    ]
  ) {
    const weightMap = Object.fromEntries(names.map((n) => [n, "part-1.safetensors"]));
    weightMap[names[0]!] = entry!;
    await Deno.writeTextFile(index, JSON.stringify({ weight_map: weightMap }));
    await assert.rejects(
      openCheckpoint(dir),
      (e: Error) => e instanceof DataError && e.message === `${index} ${expected}`,
    );
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a tensor too large to allocate says how much memory it needs", async () => {
  const file = await Deno.makeTempFile();
  const length = 2 ** 44; // 16 TiB: past any host and the engine's typed-array limit
  await assert.rejects(
    readTensorBytes({ name: "w", dtype: "U8", shape: [length], begin: 64, end: 64 + length, file }),
    (e: Error) =>
      e instanceof DataError &&
      e.message ===
        `Cannot allocate 16384.00 GiB of host memory to read a tensor of ${file} (${length} bytes at byte 64): it is larger than this machine or the JavaScript engine can hold in one array.`,
  );
  await Deno.remove(file);
});

Deno.test("import of a folder is one sentence", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-importdir-" });
  const result = await runCli(["import", dir, "--out", `${dir}/t`]);
  assert.equal(result.code, 1);
  assert.equal(result.stderr.trim().split("\n").length, 1, result.stderr);
  assert.match(result.stderr, new RegExp(`${dir}`));
  await assert.rejects(Deno.stat(`${dir}/t`), Deno.errors.NotFound);
  await Deno.remove(dir, { recursive: true });
});

/** Runs main.ts with files limited to `kib` KiB (writes past it fail with EFBIG, as on a full disk). */
async function limited(kib: number, args: string[]): Promise<{ code: number; stderr: string }> {
  const command = new Deno.Command("bash", {
    args: [
      "-c",
      // An ignored SIGXFSZ stays ignored across exec: the write then fails instead of killing.
      `trap '' XFSZ; ulimit -f ${kib}; exec "$0" run --no-check -A "$@"`,
      Deno.execPath(),
      `${ROOT}main.ts`,
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", XDG_RUNTIME_DIR: "/tmp" },
  });
  const { code, stderr } = await command.output();
  return { code, stderr: new TextDecoder().decode(stderr) };
}

Deno.test("a full disk during import is one sentence and leaves no output", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-full-" });
  // 400 documents × 200 tokens × 4 layers × top-2 with weights: a trace of a few MiB.
  const lines = [JSON.stringify({ moetrace_import: 1, num_layers: 4, num_experts: 16, top_k: 2 })];
  for (let d = 0; d < 400; d++) {
    const tokens = Array.from({ length: 200 }, (_, t) => (d * 7 + t) % 1000);
    // Seeded pseudo-random choices, so the shards do not compress to nothing.
    const experts = tokens.map((_, t) =>
      Array.from({ length: 4 }, (_, l) => {
        const a = (d * 7919 + t * 104729 + l * 1299709) % 16;
        return [a, (a + 1 + ((d * 31 + t * 17 + l) % 15)) % 16];
      })
    );
    const weights = experts.map((layers, t) =>
      layers.map((_, l) => {
        const w = 0.5 + ((d * 13 + t * 7 + l) % 97) / 200;
        return [w, 1 - w];
      })
    );
    lines.push(JSON.stringify({ domain: d % 2 ? "A" : "B", tokens, experts, weights }));
  }
  await Deno.writeTextFile(`${dir}/log.jsonl`, lines.join("\n") + "\n");
  const result = await limited(64, ["import", `${dir}/log.jsonl`, "--out", `${dir}/t`]);
  assert.equal(result.code, 1, result.stderr);
  assert.equal(result.stderr.trim().split("\n").length, 1, result.stderr);
  assert.match(result.stderr, /Cannot write .*: the disk is full or a file-size limit was reached/);
  for (const path of [`${dir}/t`, `${dir}/t.partial`]) {
    await assert.rejects(Deno.stat(path), Deno.errors.NotFound, `${path} left behind`);
  }
  // Without the limit the same import succeeds.
  const ok = await limited(1 << 20, ["import", `${dir}/log.jsonl`, "--out", `${dir}/t`]);
  assert.equal(ok.code, 0, ok.stderr);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a full disk while a trace is written keeps the trace readable up to its last shard", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moetrace-fullw-" });
  const script = `${dir}/write.ts`;
  await Deno.writeTextFile(
    script,
    `import { writeSyntheticTrace } from "${ROOT}trace/synthetic.ts";
     await writeSyntheticTrace(Deno.args[0], {
       numExperts: 64, topK: 4, numLayers: 8, probs: true,
       domains: [{ name: "A", docs: 40 }], tokensPerDoc: 500, seed: 1,
     }, { rowsPerShard: 1000, encoders: 0 });`,
  );
  const command = new Deno.Command("bash", {
    args: [
      "-c",
      `trap '' XFSZ; ulimit -f 1024; exec "$0" run --no-check -A --config "$1" "\${@:2}"`,
      Deno.execPath(),
      `${ROOT}deno.json`,
      script,
      `${dir}/t`,
    ],
    stdout: "piped",
    stderr: "piped",
  });
  const { code, stderr } = await command.output();
  const message = new TextDecoder().decode(stderr);
  assert.notEqual(code, 0);
  assert.match(
    message,
    /DataError: Cannot write .*\/t\/shards\/part-\d+\.parquet: the disk is full/,
  );
  // No temporary file is left, and the trace reads: whole documents, as after a kill.
  const names = [...Deno.readDirSync(`${dir}/t/shards`)].map((e) => e.name);
  assert.ok(names.every((n) => !n.includes(".tmp-")), names.join(" "));
  const { TraceReader } = await import("../trace/mod.ts");
  const reader = await TraceReader.open(`${dir}/t`);
  let docs = 0;
  for await (const batch of reader.batches()) docs += new Set(batch.doc).size;
  assert.equal(docs, reader.docs);
  assert.equal(reader.manifest.capture.complete, false);
  await Deno.remove(dir, { recursive: true });
});
