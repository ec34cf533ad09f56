import assert from "node:assert/strict";
import { unzipSync, zipSync } from "fflate";
import {
  EXPECTED,
  type ExpectedDoc,
  FIXTURES,
  listDir,
  readBack,
  runImport,
} from "./fixtures_test_helpers.ts";
import { isTensorRef, readPickle } from "./pickle.ts";
import { DataError } from "../../common/errors.ts";
import { importSglangPt } from "./sglang_pt.ts";
import { field, storedDirectory } from "./torch_zip.ts";
import { type RecordedSequence, sglangRecording } from "./sglang_synthetic.ts";
import { readManifest, TraceReader, TraceWriter } from "../mod.ts";

const RANK0 = `${FIXTURES}sglang_rank0.pt`;
const RANK1 = `${FIXTURES}sglang_rank1.pt`;
const REPLICA = `${FIXTURES}sglang_rank2_replica.pt`;
const CONFIG = `${FIXTURES}deepseek_config.json`;
const truth = EXPECTED.sglang_pt;

function expectedDocs() {
  return (truth.documents as ExpectedDoc[]).map((d) => ({
    tokens: d.tokens,
    phase: d.phase,
    experts: d.experts,
    arrival_step: d.arrival_step,
  }));
}

/** What the ground truth fixes of each imported document. */
function routingOf(docs: Awaited<ReturnType<typeof readBack>>["docs"]) {
  return docs.map(({ tokens, phase, experts, arrival_step }) => ({
    tokens,
    phase,
    experts,
    arrival_step,
  }));
}

Deno.test("SGLang per_token files from two ranks import with logical ids, rebuilt sequences, phases and arrival steps", async () => {
  const dir = await Deno.makeTempDir();
  const { code, stderr, out } = await runImport(dir, [RANK0, RANK1]);
  assert.equal(code, 0, stderr);
  assert.match(stderr, /^Imported 7 documents, 26 tokens \(sglang-pt\) into /);
  const { manifest, docs } = await readBack(out);
  // The ground truth was laid out in physical ids over 2 ranks, 7 passes of 4 modes; the
  // trace must give back each document whole, in logical ids, layer 0 (dense) dropped.
  assert.deepEqual(
    routingOf(docs),
    expectedDocs(),
  );
  assert.ok(docs.every((d) => d.domain === "sglang" && d.weights.every((w) => w === 0.5)));
  assert.equal(manifest.model.num_layers, 4);
  assert.deepEqual(manifest.model.moe_layers, [1, 2, 3]);
  assert.equal(manifest.model.num_experts, 4);
  assert.equal(manifest.model.top_k, 2);
  assert.equal(manifest.model.expert_params, 0, "unknown without --model-config");
  assert.equal(manifest.capture.weights_recorded, false);
  assert.equal(manifest.capture.arrival_steps, true);
  assert.equal(manifest.capture.mode, "generate");
  assert.match(manifest.capture.documents!, /rebuilt from extend_seq_lens and positions/);
  const settings = manifest.capture.settings!;
  assert.equal(settings.forward_passes, truth.forward_passes);
  assert.equal(settings.documents_started_mid_stream, truth.documents_started_mid_stream);
  assert.deepEqual(settings.passes_skipped_by_mode, truth.passes_skipped_by_mode);
  assert.equal(settings.tensor_parallel_replicas_skipped, 0);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a tensor-parallel replica of a rank's recording is dropped, not imported twice", async () => {
  const dir = await Deno.makeTempDir();
  const { code, stderr, out } = await runImport(dir, [RANK0, RANK1, REPLICA]);
  assert.equal(code, 0, stderr);
  const { manifest, docs } = await readBack(out);
  assert.deepEqual(docs.map((d) => d.tokens), expectedDocs().map((d) => d.tokens));
  // Rank 0 recorded 5 passes with routed tokens; the replica repeats all of them.
  assert.equal(manifest.capture.settings!.tensor_parallel_replicas_skipped, 5);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a larger recording (shards of many pages, written in parts) imports to its known routing", async () => {
  // 2 ranks × 32 sequences of 300 prompt + 40 generated tokens: 21,760
  // tokens in shards of 4,000 rows, each shard's expert ids (128 per row)
  // spanning several data pages and written from where they were gathered.
  const shape = { sequencesPerRank: 32, prompt: 300, generated: 40, batch: 16 };
  const dir = await Deno.makeTempDir();
  try {
    const files: string[] = [];
    const truth = new Map<string, RecordedSequence>();
    for (const rank of [0, 1]) {
      const made = sglangRecording(rank, shape, true);
      files.push(`${dir}/expert_distribution_recorder_0_${rank}.pt`);
      await Deno.writeFile(files[rank]!, made.bytes);
      for (const s of made.sequences) truth.set(s.tokens.join(","), s);
    }
    const check = async (out: string, label: string) => {
      const reader = await TraceReader.open(out);
      assert.ok(reader.manifest.shards.length >= 5, "several shards");
      let seen = 0;
      for await (const doc of reader.documents()) {
        const expected = truth.get(Array.from(doc.tokens).join(","));
        assert.ok(expected, `${label}: document ${doc.doc} is a recorded sequence`);
        assert.deepEqual(Array.from(doc.phase!), expected.tokens.map((_, i) => i < 300 ? 0 : 1));
        const differ = doc.experts.findIndex((e, i) => e !== expected.experts[i]);
        assert.equal(differ, -1, `${label}: document ${doc.doc} experts`);
        assert.equal(doc.experts.length, expected.experts.length);
        seen++;
      }
      assert.equal(seen, truth.size);
    };
    // One after the other (the second takes over the first's buffers on this thread)...
    for (const lanes of [1, 2]) {
      await importSglangPt(files, `${dir}/trace${lanes}`, null, { lanes, rowsPerShard: 4000 });
      await check(`${dir}/trace${lanes}`, `${lanes} lane(s)`);
    }
    // ... and two at once on this thread (shards of different sizes), each
    // giving its own trace whole.
    const rowsPerShard = [4000, 2500];
    await Promise.all(
      rowsPerShard.map((rows) =>
        importSglangPt(files, `${dir}/both${rows}`, null, { lanes: 1, rowsPerShard: rows })
      ),
    );
    for (const rows of rowsPerShard) await check(`${dir}/both${rows}`, `${rows} rows a shard`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the import gives the same trace with every file on this thread, in workers, or mixed", async () => {
  // Three files over 1 thread, 2 and 3 (files opened and shards made by
  // whichever thread claims them), one shard per 5 rows: 7 documents in 4 shards.
  for (const lanes of [1, 2, 3]) {
    const dir = await Deno.makeTempDir();
    const out = `${dir}/trace`;
    await importSglangPt([RANK0, RANK1, REPLICA], out, null, { lanes, rowsPerShard: 5 });
    const { manifest, docs } = await readBack(out);
    assert.deepEqual(
      routingOf(docs),
      expectedDocs(),
      `${lanes} lane(s)`,
    );
    assert.equal(manifest.capture.settings!.tensor_parallel_replicas_skipped, 5);
    assert.ok(manifest.shards.length > 1, "several shards");
    // Each shard is byte for byte the shard the trace writer makes of the same documents.
    const reader = await TraceReader.open(out);
    const rewritten = `${dir}/rewritten`;
    const writer = await TraceWriter.open(rewritten, {
      model: manifest.model,
      capture: { ...manifest.capture, domains: [] },
    }, { rowsPerShard: 5, encoders: 0, traceId: manifest.trace_id! });
    for await (const doc of reader.documents()) await writer.add(doc);
    await writer.close();
    const again = await readManifest(rewritten);
    assert.deepEqual(again.shards, manifest.shards, `${lanes} lane(s): shard entries`);
    for (const shard of manifest.shards) {
      assert.deepEqual(
        Deno.readFileSync(`${rewritten}/${shard.file}`),
        Deno.readFileSync(`${out}/${shard.file}`),
        `${lanes} lane(s): ${shard.file}`,
      );
    }
    await Deno.remove(dir, { recursive: true });
  }
  // A file whose zip entries are compressed cannot be read entry by entry from
  // disk: it is read whole (through fflate), with the same result.
  const dir = await Deno.makeTempDir();
  const deflated = `${dir}/rank1_deflated.pt`;
  await Deno.writeFile(deflated, zipSync(unzipSync(Deno.readFileSync(RANK1)), { level: 6 }));
  await importSglangPt([RANK0, deflated], `${dir}/deflated`, null, { lanes: 2 });
  const { docs } = await readBack(`${dir}/deflated`);
  assert.deepEqual(
    routingOf(docs),
    expectedDocs(),
  );
  await Deno.remove(dir, { recursive: true });
  // A fault found by a worker is the same one-sentence data error, and leaves no trace:
  // a file refused when opened (four files over three threads: workers open files too)...
  await Deno.mkdir(dir);
  await assert.rejects(
    importSglangPt([RANK0, RANK1, REPLICA, `${FIXTURES}sglang_evil.pt`], `${dir}/trace`, null, {
      lanes: 3,
    }),
    (error: Error) =>
      error instanceof DataError &&
      /sglang_evil\.pt \(data\.pkl\) asks for the Python global posix\.system;/.test(error.message),
  );
  assert.deepEqual(listDir(dir), []);
  // ... and routing refused while a shard is made (one shard per row: the
  // faulty row's shard is made by whichever thread claims it).
  const bad = `${dir}/bad.pt`;
  await Deno.writeFile(bad, withTopk(-1, (ids, width) => ids[ids.length - 2 * width] = 99));
  const messages = new Set<string>();
  for (const lanes of [1, 3, 3, 3]) {
    await assert.rejects(
      importSglangPt([RANK1, bad], `${dir}/trace`, null, { lanes, rowsPerShard: 1 }),
      (error: Error) => {
        messages.add(error.message);
        return error instanceof DataError;
      },
    );
    assert.deepEqual(listDir(dir), ["bad.pt"]);
  }
  assert.equal(messages.size, 1, [...messages].join("\n"));
  assert.match(
    [...messages][0]!,
    /bad\.pt records\[\d+\] \(forward_pass_id \d+\) field "topk_ids_of_layer" layer \d+ token \d+ names physical expert 99, but the physical-to-logical map has \d+\.$/,
  );
  await Deno.remove(dir, { recursive: true });
});

/**
 * A copy of the rank-0 file with the `topk_ids_of_layer` ids of record
 * `index` (from the end when negative) edited; `edit` gets them and K.
 */
function withTopk(index: number, edit: (ids: Int32Array, width: number) => void): Uint8Array {
  const entries = unzipSync(Deno.readFileSync(RANK0));
  const pickle = Object.keys(entries).find((n) => n.endsWith("/data.pkl"))!;
  const records = field(readPickle(entries[pickle]!, "data.pkl"), "records");
  assert.ok(Array.isArray(records));
  const topk = field(records.at(index)!, "topk_ids_of_layer");
  assert.ok(isTensorRef(topk));
  const name = Object.keys(entries).find((n) => n.endsWith(`/data/${topk.storageKey}`))!;
  const ids = new Int32Array(entries[name]!.slice().buffer);
  edit(ids, topk.shape[2]!);
  entries[name] = new Uint8Array(ids.buffer);
  return zipSync(entries, { level: 0 });
}

Deno.test("--model-config fills the facts the recorder lacks", async () => {
  const dir = await Deno.makeTempDir();
  const { code, stderr, out } = await runImport(dir, [RANK0, RANK1, "--model-config", CONFIG]);
  assert.equal(code, 0, stderr);
  const { manifest } = await readBack(out);
  assert.deepEqual(manifest.model, {
    name: "sglang_rank0",
    family: "deepseek_v3",
    num_layers: 4,
    moe_layers: [1, 2, 3],
    num_experts: 4,
    top_k: 2,
    num_shared_experts: 1,
    hidden_size: 64,
    expert_params: 3 * 64 * 32,
    dtype: "bfloat16",
  });
  await Deno.remove(dir, { recursive: true });
});

/** `bytes` with every occurrence of ASCII `from` replaced by `to` (of the same length). */
function replaceBytes(bytes: Uint8Array, from: string, to: string): Uint8Array {
  const out = bytes.slice();
  const [a, b] = [new TextEncoder().encode(from), new TextEncoder().encode(to)];
  let replaced = 0;
  for (let i = 0; i + a.length <= out.length; i++) {
    if (a.every((byte, j) => out[i + j] === byte)) {
      out.set(b, i);
      replaced++;
    }
  }
  assert.ok(replaced > 0, `no ${JSON.stringify(from)} in the pickle`);
  return out;
}

/** A copy of the rank-0 file with its data.pkl replaced. */
function withPickle(edit: (pickle: Uint8Array) => Uint8Array): Uint8Array {
  const entries: Record<string, Uint8Array> = unzipSync(Deno.readFileSync(RANK0));
  const name = Object.keys(entries).find((n) => n.endsWith("/data.pkl"))!;
  entries[name] = edit(entries[name]!);
  return zipSync(entries as Parameters<typeof zipSync>[0], { level: 0 });
}

Deno.test("unreadable .pt files are refused with one sentence and leave no trace", async (t) => {
  const original = Deno.readFileSync(RANK0);
  const config = JSON.parse(Deno.readTextFileSync(CONFIG));
  const cases: [string, Uint8Array | string, RegExp, string[]?][] = [
    [
      "a pickle that asks for os.system",
      Deno.readFileSync(`${FIXTURES}sglang_evil.pt`),
      /in\.pt \(data\.pkl\) asks for the Python global posix\.system; moetrace reads only tensors, dicts, lists, numbers and strings from a \.pt file and never runs code from it\.$/,
    ],
    [
      "a pickle that asks for subprocess.check_output",
      // As long as "collections\nOrderedDict", so the pickle stays well formed.
      withPickle((p) => replaceBytes(p, "collections\nOrderedDict", "subprocess\ncheck_output")),
      /asks for the Python global subprocess\.check_output; moetrace reads only tensors/,
    ],
    [
      "a truncated zip",
      original.subarray(0, Math.floor(original.length / 2)),
      /in\.pt is not a readable zip archive \(.+\); it is truncated or damaged\.$/,
    ],
    [
      "a truncated pickle",
      withPickle((p) => p.subarray(0, Math.floor(p.length * 0.6))),
      /in\.pt \(data\.pkl\) ends in the middle of its pickle \(byte \d+\); the file is truncated\.$/,
    ],
    [
      "a storage cut short",
      (() => {
        const entries = unzipSync(original);
        const name = Object.keys(entries).find((n) => /\/data\/0$/.test(n))!;
        entries[name] = entries[name]!.slice(0, 8);
        return zipSync(entries, { level: 0 });
      })(),
      /in\.pt records\[0\] field "topk_ids_of_layer" needs \d+ elements but its storage holds 2; the file is truncated or damaged\.$/,
    ],
    [
      "a storage entry whose local header is damaged",
      // Local headers are read with their data, when a shard needs it: the fault is said then.
      (() => {
        const bytes = original.slice();
        const entries = unzipSync(original);
        const pickle = Object.keys(entries).find((n) => n.endsWith("/data.pkl"))!;
        const records = field(readPickle(entries[pickle]!, "data.pkl"), "records");
        assert.ok(Array.isArray(records));
        const topk = field(records.at(-1)!, "topk_ids_of_layer");
        assert.ok(isTensorRef(topk));
        const directory = storedDirectory(bytes.length, (at, n) => bytes.subarray(at, at + n))!;
        const entry = directory.entries.find((e) => e.name.endsWith(`/data/${topk.storageKey}`))!;
        bytes[entry.local] = 0; // its signature
        return bytes;
      })(),
      /in\.pt entry [^ ]+\/data\/\d+ has a damaged local header \(or runs past the zip's directory\); the file is truncated or damaged\.$/,
    ],
    [
      "a map that sends two chosen physical experts to one logical expert",
      (() => {
        const entries = unzipSync(original);
        const pickle = Object.keys(entries).find((n) => n.endsWith("/data.pkl"))!;
        const map = field(readPickle(entries[pickle]!, "data.pkl"), "last_physical_to_logical_map");
        assert.ok(isTensorRef(map));
        const name = Object.keys(entries).find((n) => n.endsWith(`/data/${map.storageKey}`))!;
        // Every physical expert but the last of each layer now maps to logical
        // expert 0 (the last to 1, so that num_experts stays ≥ top-k 2).
        const [layers, physical] = map.shape as [number, number];
        const logical = new BigInt64Array(layers * physical);
        for (let l = 0; l < layers; l++) logical[l * physical + physical - 1] = 1n;
        entries[name] = new Uint8Array(logical.buffer);
        return zipSync(entries, { level: 0 });
      })(),
      /in\.pt records\[\d+\] \(forward_pass_id \d+\) layer \d+ token \d+ maps two chosen physical experts to logical expert 0; the physical-to-logical map changed while recording\.$/,
    ],
    [
      "a token routed to fewer experts than the others",
      (() => {
        const entries = unzipSync(original);
        const pickle = Object.keys(entries).find((n) => n.endsWith("/data.pkl"))!;
        const records = field(readPickle(entries[pickle]!, "data.pkl"), "records");
        assert.ok(Array.isArray(records));
        const topk = field(records[0]!, "topk_ids_of_layer");
        assert.ok(isTensorRef(topk));
        const name = Object.keys(entries).find((n) => n.endsWith(`/data/${topk.storageKey}`))!;
        const ids = new Int32Array(entries[name]!.slice().buffer);
        // The first row with two ids keeps only its first: −1 padding, one expert.
        const width = topk.shape[2]!;
        let row = 0;
        while (ids[row * width + 1]! < 0) row++;
        ids[row * width + 1] = -1;
        entries[name] = new Uint8Array(ids.buffer);
        return zipSync(entries, { level: 0 });
      })(),
      /in\.pt records\[0\] \(forward_pass_id \d+\) field "topk_ids_of_layer" layer \d+ token \d+ routes to 1 experts, expected 2\.$/,
    ],
    [
      "a layer without routing in the first pass routed in a later one",
      // The last record's layer 0 (dense: all −1 in every pass) names an expert.
      withTopk(-1, (ids) => ids[0] = 0),
      /in\.pt records\[\d+\] \(forward_pass_id \d+\) field "topk_ids_of_layer" layer 0 token 0 routes to 1 experts, but .*in\.pt records\[0\] \(forward_pass_id \d+\) routes no token in layer 0; a layer is routed in every pass or in none\.$/,
    ],
    [
      "torch.save's legacy format",
      Uint8Array.of(0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8),
      /in\.pt is in torch\.save's legacy \(pre-1\.6\) format; re-save it with a current PyTorch/,
      ["--from", "sglang-pt"],
    ],
    [
      "a config that disagrees on top-k",
      JSON.stringify({ ...config, num_experts_per_tok: 3 }),
      /routes each token to 2 experts, but --model-config says num_experts_per_tok 3/,
    ],
    [
      "a config that says a routed layer is dense",
      JSON.stringify({ ...config, first_k_dense_replace: 2 }),
      /has routing in layer 1, which --model-config says is not a MoE layer\.$/,
    ],
  ];
  for (const [name, content, pattern, extra] of cases) {
    await t.step(name, async () => {
      const dir = await Deno.makeTempDir();
      let args: string[];
      if (typeof content === "string") {
        await Deno.writeTextFile(`${dir}/config.json`, content);
        await Deno.copyFile(RANK0, `${dir}/in.pt`);
        args = [`${dir}/in.pt`, "--model-config", `${dir}/config.json`];
      } else {
        await Deno.writeFile(`${dir}/in.pt`, content);
        args = [`${dir}/in.pt`, ...(extra ?? [])];
      }
      const { code, stderr } = await runImport(dir, args);
      assert.equal(code, 1, stderr);
      assert.match(stderr, pattern);
      assert.equal(stderr.split("\n").length, 1, "one line");
      assert.ok(!/\n\s+at /.test(stderr), "no stack trace");
      assert.deepEqual(
        listDir(dir).filter((n) => n.startsWith("trace")),
        [],
        "no partial trace",
      );
      await Deno.remove(dir, { recursive: true });
    });
  }
});

Deno.test("damaged pickles and storages are refused as data errors, never anything else", async () => {
  const entries = unzipSync(Deno.readFileSync(RANK0));
  const names = Object.keys(entries).filter((n) =>
    n.endsWith("/data.pkl") || /\/data\/\d+$/.test(n)
  );
  let seed = 12345;
  const next = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  const dir = await Deno.makeTempDir();
  let refused = 0;
  for (let i = 0; i < 300; i++) {
    const copy: Record<string, Uint8Array> = { ...entries };
    const name = names[next(names.length)]!;
    const bytes = copy[name] = entries[name]!.slice();
    for (let flips = 1 + next(4); flips > 0; flips--) bytes[next(bytes.length)] = next(256);
    await Deno.writeFile(
      `${dir}/in.pt`,
      zipSync(copy as Parameters<typeof zipSync>[0], { level: 0 }),
    );
    const { code, stderr } = await runImport(dir, [`${dir}/in.pt`]);
    assert.ok(code === 0 || code === 1, `case ${i}: exit ${code}: ${stderr}`);
    if (code === 1) {
      refused++;
      assert.equal(stderr.split("\n").length, 1, `case ${i}: ${stderr}`);
      assert.deepEqual(listDir(dir), ["in.pt"], `case ${i}: no partial trace`);
    } else {
      await Deno.remove(`${dir}/trace`, { recursive: true });
    }
  }
  assert.ok(refused > 30, `only ${refused} of 300 damaged files were refused`);
  await Deno.remove(dir, { recursive: true });
});
