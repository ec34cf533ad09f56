/**
 * SGLang's expert-distribution recorder in `per_token` mode: the `.pt` files
 * (`expert_distribution_recorder_{time}_{rank}.pt`, one per rank) that
 * `torch.save` writes from
 *
 *   {records: [{forward_pass_id, rank, gatherer_key, input_ids, positions,
 *               extend_seq_lens, forward_mode, topk_ids_of_layer, misc_objects,
 *               global_physical_count}, ...],
 *    last_physical_to_logical_map: [num_layers, num_physical_experts]}
 *
 * `topk_ids_of_layer` is int32 [num_layers, num_tokens, 8]: physical expert
 * ids, padded with −1 past the model's top-k and for layers without routing
 * (dense layers stay −1 throughout). Physical ids map to logical experts
 * through the file's last physical-to-logical map (the map in force when the
 * file was written). SGLang records no request ids: sequences are rebuilt
 * from `extend_seq_lens` and `positions` (sequences.ts), per rank; the
 * manifest says so. Gate weights are not recorded: the trace says so.
 *
 * forward_mode: 1 extend (prefill, phase 0), 2 decode (phase 1), 3 mixed
 * (chunked prefill with decodes: a one-token segment continuing a sequence
 * is a decode); passes of other modes (idle, speculative verify and draft)
 * are skipped and counted.
 *
 * This thread reads each file's pickle (sglang_rank.ts), rebuilds the
 * sequences and plans the shards; the shards are then made whole, each by
 * whichever thread claims it next, this one or a worker (sglang_shard.ts,
 * sglang_lane.ts), which reads the routing the shard needs from the files,
 * checks it, encodes and writes the shard into the staging trace.
 */
import * as arrow from "apache-arrow";
import { Scratch, Spare } from "../../common/scratch.ts";
import { DataError } from "../../common/errors.ts";
import { DEFAULT_ROWS_PER_SHARD, rowShape, TRACE_ID_KEY } from "../manifest.ts";
import { arrowSchemaBase64 } from "../parquet_encode.ts";
import { shardSchema } from "../schema.ts";
import { parquetShardFile } from "../writer.ts";
import type { ConfigFacts } from "./model_config.ts";
import { SEGMENT, type Sequence, SequenceRebuilder } from "./sequences.ts";
import { openRank, type PassInfo, type RankFile, routingPlan } from "./sglang_rank.ts";
import {
  claimJobs,
  READ_WINDOW,
  RoutingReader,
  SHARD_COLUMNS,
  type ShardJob,
  ShardMaker,
  type ShardPlan,
  type ShardWritten,
} from "./sglang_shard.ts";
import { type ImportSummary, modelFacts, type StagedImport, stagedImport } from "./sink.ts";

/** Recordings smaller than this are imported on this thread alone: a worker takes longer to start. */
const WORKER_BYTES = 32 << 20;

export async function importSglangPt(
  files: string[],
  out: string,
  config: ConfigFacts | null,
  options: { lanes?: number; rowsPerShard?: number } = {},
): Promise<ImportSummary> {
  // Started first, so that their code loads while this thread reads the pickles.
  const workers = startWorkers(files, options.lanes);
  // One buffer on this thread for each pickle in turn, then the routing read
  // to plan and to make shards; kept for the next import in this process.
  const scratch = spareScratch.take() ?? new Scratch(READ_WINDOW);
  try {
    return await importWithWorkers(
      files,
      out,
      config,
      workers,
      options.rowsPerShard ?? DEFAULT_ROWS_PER_SHARD,
      scratch,
    );
  } finally {
    for (const worker of workers) worker.close();
    spareScratch.keep(scratch, scratch.size);
  }
}

/** This thread's scratch buffer between imports. */
const spareScratch = new Spare<Scratch>();

async function importWithWorkers(
  files: string[],
  out: string,
  config: ConfigFacts | null,
  workers: ShardWorker[],
  rowsPerShard: number,
  scratch: Scratch,
): Promise<ImportSummary> {
  // Workers open files too only when there are more files than threads: a
  // worker starts (~0.1 s) and first reads a pickle (~0.2 s) slower than this
  // thread reads one, so for a file each they only delay the opening.
  const ranks = await openFiles(files, files.length > workers.length + 1 ? workers : [], scratch);
  const layers = ranks[0]!.layers;
  for (const [file, rank] of ranks.entries()) {
    if (rank.layers !== layers) {
      throw new DataError(
        `${files[file]} has ${rank.layers} layers in its physical-to-logical map, but ${
          files[0]
        } has ${layers}; files imported together must come from one model.`,
      );
    }
  }
  const passes = ranks.flatMap((rank) => rank.passes);
  const reader = new RoutingReader(
    ranks.map((r) => r.routing),
    ranks.map((r) => r.whole),
    scratch,
  );
  const idsOf = (pass: PassInfo) => reader.ids(pass.file, pass.order);
  let replicas: Set<PassInfo>;
  let planned: ReturnType<typeof routingPlan>;
  try {
    replicas = await dropReplicas(passes, idsOf);
    planned = routingPlan(
      passes.filter((p) => !replicas.has(p)),
      idsOf,
      layers,
      (pass) => ranks[pass.file]!.physical,
    );
  } finally {
    reader.close();
  }
  const kept = passes.filter((p) => !replicas.has(p));
  if (!planned) {
    throw new DataError(
      `The recording holds no routed tokens (every topk_ids_of_layer entry is −1).`,
    );
  }
  const topK = planned.topK;
  const plan = layerPlan(planned.routed, layers, config, files[0]!);
  if (config?.topK !== undefined && config.topK !== topK) {
    throw new DataError(
      `${
        files[0]
      } routes each token to ${topK} experts, but --model-config says num_experts_per_tok ${config.topK} (shared-expert fusion adds to the recorded top-k).`,
    );
  }
  let numExperts = 0;
  for (const rank of ranks) {
    for (const id of rank.physicalToLogical) numExperts = Math.max(numExperts, id + 1);
  }
  if (config?.numExperts !== undefined) {
    if (numExperts > config.numExperts) {
      throw new DataError(
        `${files[0]} maps physical experts to logical expert ${
          numExperts - 1
        }, but --model-config says num_experts ${config.numExperts}.`,
      );
    }
    numExperts = config.numExperts;
  }

  // Rebuild sequences per rank, then order all of them by the pass that started them.
  const byRank = new Map<number, { rebuilder: SequenceRebuilder; passes: PassInfo[] }>();
  for (const pass of kept) {
    let stream = byRank.get(pass.rank);
    if (!stream) byRank.set(pass.rank, stream = { rebuilder: new SequenceRebuilder(), passes: [] });
    stream.passes.push(pass);
  }
  const firstId = Math.min(...kept.map((p) => p.id));
  const sequences: { rank: number; sequence: Sequence; passes: PassInfo[] }[] = [];
  for (const [rank, stream] of [...byRank.entries()].sort((a, b) => a[0] - b[0])) {
    stream.passes.sort((a, b) => a.id - b.id);
    stream.passes.forEach((pass, i) => {
      if (i > 0 && stream.passes[i - 1]!.id === pass.id) {
        throw new DataError(`${pass.where} repeats forward_pass_id ${pass.id} of rank ${rank}.`);
      }
      stream.rebuilder.add(i, {
        positions: pass.positions,
        segments: pass.segments,
        mode: pass.mode,
      }, pass.where);
    });
    for (const sequence of stream.rebuilder.sequences) {
      sequences.push({ rank, sequence, passes: stream.passes });
    }
  }
  sequences.sort((a, b) =>
    a.passes[a.sequence.firstPass]!.id - b.passes[b.sequence.firstPass]!.id || a.rank - b.rank ||
    a.sequence.firstOrder - b.sequence.firstOrder
  );

  const generated = kept.some((p) => p.mode !== "extend");
  const midStream = sequences.filter((s) => s.sequence.midStream).length;
  return await stagedImport(out, async (sink) => {
    const facts = modelFacts({ plan, topK, numExperts, name: baseNameOf(files[0]!) }, config);
    await sink.open(facts, {
      corpus: files.join(","),
      domains: [],
      mode: generated ? "generate" : "teacher-forced",
      lookahead: 0,
      probs: false,
      seed: 0,
      tool_version: "import",
      weights_recorded: false,
      arrival_steps: true,
      documents:
        "rebuilt from extend_seq_lens and positions per rank (SGLang records no request ids): a segment at position 0 starts a document; one at position p continues a live document of length p (extended in or after the last decode pass) in running-batch order (the order they reached p), those prefilled since the last decode pass first when fewer continue than are live, else the stale one extended most recently",
    });
    const shardPlan: ShardPlan = {
      files: ranks.map((r) => r.routing),
      layers,
      keep: plan.keep,
      k: topK,
      experts: sink.manifest.model.num_experts,
      plannedFrom: planned.from.where,
      domain: DOMAIN,
      arrowSchema: shardArrowSchema(sink),
      dir: sink.staging,
    };
    const { jobs, memory } = shardJobs(sequences, firstId, sink.nextDoc, rowsPerShard);
    // A file held whole (a compressed zip) is read on this thread only.
    const whole = ranks.map((r) => r.whole);
    const written = await makeShards(
      shardPlan,
      jobs,
      whole.some((w) => w) ? [] : workers,
      whole,
      scratch,
    );
    // Every thread is done with the jobs' columns.
    spareJobMemory.keep(memory, memory.byteLength);
    await sink.addShards(
      jobs.map((job, i) => ({
        file: job.file,
        rows: job.rows,
        docs: job.docs,
        bytes: written[i]!.bytes,
        fingerprint: written[i]!.fingerprint,
      })),
      [DOMAIN],
    );
    const skipped: Record<string, number> = {};
    for (const rank of ranks) {
      for (const [mode, n] of Object.entries(rank.skipped)) {
        skipped[mode] = (skipped[mode] ?? 0) + n;
      }
    }
    return await sink.finish({
      import_format: "sglang-pt",
      ranks: [...byRank.keys()].sort((a, b) => a - b),
      forward_passes: kept.length,
      tensor_parallel_replicas_skipped: replicas.size,
      passes_skipped_by_mode: skipped,
      documents_started_mid_stream: midStream,
      physical_to_logical: "each file's last_physical_to_logical_map (the map when it was dumped)",
      arrival_step: "forward_pass_id of the pass that started the document, minus the first one",
    });
  });
}

const DOMAIN = "sglang";

/** The Arrow schema every shard of the trace embeds, as the trace writer's shards do. */
function shardArrowSchema(sink: StagedImport): string {
  const manifest = sink.manifest;
  const fields = shardSchema(rowShape(manifest), false).fields;
  const names = fields.map((f) => f.name);
  if (names.join() !== SHARD_COLUMNS.join()) {
    throw new Error(`sglang import: shard columns ${names} are not ${SHARD_COLUMNS}`);
  }
  const metadata = new Map<string, string>();
  if (manifest.trace_id !== undefined) metadata.set(TRACE_ID_KEY, manifest.trace_id);
  return arrowSchemaBase64(new arrow.Schema(fields, metadata));
}

/** The shard jobs' shared memory between imports in this process. */
const spareJobMemory = new Spare<SharedArrayBuffer>();

/**
 * The trace's documents cut into shards as the trace writer cuts them (a
 * shard ends with the document that brings it to `rowsPerShard` rows): each
 * job's token and phase columns and its documents' numbers, lengths and
 * arrival steps, filled here in buffers shared with the workers (no copy is
 * sent), and where its routing lies.
 */
function shardJobs(
  sequences: { sequence: Sequence; passes: PassInfo[] }[],
  firstId: number,
  firstDoc: number,
  rowsPerShard: number,
): { jobs: (ShardJob & { docs: number })[]; memory: SharedArrayBuffer } {
  const lengths = sequences.map(({ sequence }) => {
    let n = 0;
    for (let g = 2; g < sequence.segments.length; g += SEGMENT) n += sequence.segments[g]!;
    return n;
  });
  const rows = lengths.reduce((a, b) => a + b, 0);
  const segmentCount = sequences.reduce((n, s) => n + s.sequence.segments.length / SEGMENT, 0);
  // Per row only what varies within a document; its doc, pos and
  // arrival_step are spelled out by the shard maker (less memory touched
  // here). All four in one shared buffer, the last import's when it is large
  // enough (every element used is written below).
  const bytes = (sequences.length * 3 + rows + segmentCount * 5) * 4 + rows;
  const kept = spareJobMemory.take();
  const memory = kept && kept.byteLength >= bytes ? kept : new SharedArrayBuffer(bytes);
  const end = (view: ArrayBufferView) => view.byteOffset + view.byteLength;
  const documents = new Uint32Array(memory, 0, sequences.length * 3);
  const token = new Uint32Array(memory, end(documents), rows);
  const segments = new Int32Array(memory, end(token), segmentCount * 5);
  const phase = new Uint8Array(memory, end(segments), rows);
  const jobs: (ShardJob & { docs: number })[] = [];
  let first = 0; // the shard's first row
  let firstDocument = 0;
  let firstSegment = 0;
  let row = 0;
  let s = 0;
  let docs = 0;
  for (const [d, { sequence, passes }] of sequences.entries()) {
    const arrivalStep = passes[sequence.firstPass]!.id - firstId;
    const T = lengths[d]!;
    documents[d * 3] = firstDoc + d;
    documents[d * 3 + 1] = T;
    documents[d * 3 + 2] = arrivalStep;
    let r = row;
    const runs = sequence.segments;
    for (let g = 0; g < runs.length; g += SEGMENT) {
      const pass = passes[runs[g]!]!;
      const start = runs[g + 1]!;
      const length = runs[g + 2]!;
      const inputIds = pass.inputIds;
      for (let i = 0; i < length; i++) {
        const id = inputIds[start + i]!;
        if (id < 0) {
          throw new DataError(
            `${pass.where} field "input_ids" holds ${id} at token ${start + i}; token ids are ≥ 0.`,
          );
        }
        token[r + i] = id;
      }
      phase.fill(runs[g + 3]!, r, r + length);
      segments[s * 5] = pass.file;
      segments[s * 5 + 1] = pass.order;
      segments[s * 5 + 2] = start;
      segments[s * 5 + 3] = length;
      segments[s * 5 + 4] = r - first;
      s++;
      r += length;
    }
    row += T;
    docs++;
    if (row - first >= rowsPerShard || d === sequences.length - 1) {
      jobs.push({
        index: jobs.length,
        file: parquetShardFile(jobs.length),
        rows: row - first,
        docs,
        documents: documents.subarray(firstDocument * 3, (d + 1) * 3),
        token: token.subarray(first, row),
        phase: phase.subarray(first, row),
        segments: segments.subarray(firstSegment * 5, s * 5),
      });
      first = row;
      firstDocument = d + 1;
      firstSegment = s;
      docs = 0;
    }
  }
  return { jobs, memory };
}

/**
 * Opens every file, on this thread and on `workers`, each taking the next
 * file when it is free (a file a worker cannot hold, a compressed zip, is
 * opened here after). A fault stops all threads from claiming more; the
 * fault of the earliest file is thrown.
 */
async function openFiles(
  files: string[],
  workers: ShardWorker[],
  scratch: Scratch,
): Promise<RankFile[]> {
  const claims = new Int32Array(new SharedArrayBuffer(8));
  const ranks: RankFile[] = [];
  const whole: number[] = [];
  const faults: { index: number; error: unknown }[] = [];
  const running = workers.map((worker) =>
    worker.run({ op: "open", files, claims }, (data) => {
      if (data.opened !== undefined) ranks[data.opened as number] = data.rank as RankFile;
      else if (data.whole !== undefined) whole.push(data.whole as number);
    }).then((fault) => {
      if (fault) {
        Atomics.store(claims, 1, 1);
        faults.push(fault);
      }
    })
  );
  const open = async (file: number) => {
    try {
      ranks[file] = (await openRank(files[file]!, file, true, scratch))!;
    } catch (error) {
      faults.push({ index: file, error });
      throw error;
    }
  };
  try {
    await claimJobs(files.map((_, i) => i), claims, open);
    await Promise.all(running);
    for (const file of whole) await open(file);
  } catch {
    // Kept in `faults`.
  }
  await Promise.all(running);
  if (faults.length > 0) throw faults.sort((a, b) => a.index - b.index)[0]!.error;
  return ranks;
}

/**
 * Makes every shard, on this thread and on `workers`, each taking the next
 * job when it is free; returns what each wrote, by job. A fault stops all
 * threads from claiming more, and the fault of the earliest shard is thrown
 * (jobs are claimed in order, so no earlier shard went unmade).
 */
async function makeShards(
  plan: ShardPlan,
  jobs: ShardJob[],
  workers: ShardWorker[],
  whole: RankFile["whole"][],
  scratch: Scratch,
): Promise<ShardWritten[]> {
  const claims = new Int32Array(new SharedArrayBuffer(8));
  const written: ShardWritten[] = [];
  const faults: { index: number; error: unknown }[] = [];
  const onWritten = (w: ShardWritten) => written[w.index] = w;
  const running = workers.map((worker) =>
    worker.run({ op: "shards", plan, jobs, claims }, (data) => {
      if (data.written) onWritten(data.written as ShardWritten);
    }).then((fault) => {
      if (fault) {
        Atomics.store(claims, 1, 1);
        faults.push(fault);
      }
    })
  );
  const maker = new ShardMaker(plan, whole, scratch);
  try {
    await claimJobs(jobs, claims, async (job) => {
      try {
        onWritten(await maker.make(job));
      } catch (error) {
        faults.push({ index: job.index, error });
        throw error;
      }
    });
  } catch {
    // Kept in `faults`.
  } finally {
    maker.close();
  }
  await Promise.all(running);
  if (faults.length > 0) throw faults.sort((a, b) => a.index - b.index)[0]!.error;
  if (written.filter(Boolean).length !== jobs.length) {
    throw new Error(`sglang import: ${written.length} of ${jobs.length} shards were made`);
  }
  return written;
}

function baseNameOf(path: string): string {
  return path.replace(/^.*\//, "").replace(/\.pt$/, "");
}

/**
 * Under tensor parallelism every rank records the same passes: a pass equal
 * (same forward_pass_id, tokens, positions and routing) to one already read
 * from another rank is a replica and is dropped. Routing is compared by
 * SHA-256 digests, only for passes whose other fields match.
 */
async function dropReplicas(
  passes: PassInfo[],
  idsOf: (pass: PassInfo) => Int32Array,
): Promise<Set<PassInfo>> {
  const replicas = new Set<PassInfo>();
  const seen = new Map<number, PassInfo[]>();
  const digests = new Map<PassInfo, string>();
  const digest = async (pass: PassInfo) => {
    let hex = digests.get(pass);
    if (hex === undefined) {
      const ids = idsOf(pass);
      const bytes = new Uint8Array(ids.buffer, ids.byteOffset, ids.byteLength).slice();
      const sum = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
      hex = Array.from(sum, (b) => b.toString(16).padStart(2, "0")).join("");
      digests.set(pass, hex);
    }
    return hex;
  };
  for (const pass of passes) {
    const earlier = seen.get(pass.id) ?? [];
    const twin = earlier.find((p) => p.rank !== pass.rank && sameLayout(p, pass));
    if (twin && await digest(twin) === await digest(pass)) replicas.add(pass);
    else earlier.push(pass);
    seen.set(pass.id, earlier);
  }
  return replicas;
}

function sameLayout(a: PassInfo, b: PassInfo): boolean {
  return a.tokens === b.tokens && a.mode === b.mode && a.width === b.width &&
    equal(a.inputIds, b.inputIds) && equal(a.positions, b.positions);
}

function equal(a: Int32Array, b: Int32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function layerPlan(routed: number[], layers: number, config: ConfigFacts | null, file: string) {
  let moe = routed;
  if (config?.moeLayers && config.numLayers !== undefined) {
    if (config.numLayers !== layers) {
      throw new DataError(
        `${file} records ${layers} layers, but --model-config says num_hidden_layers ${config.numLayers}.`,
      );
    }
    const extra = routed.filter((l) => !config.moeLayers!.includes(l));
    if (extra.length > 0) {
      throw new DataError(
        `${file} has routing in layer ${extra[0]}, which --model-config says is not a MoE layer.`,
      );
    }
    moe = config.moeLayers;
  }
  return { keep: moe, moeLayers: moe, numLayers: layers };
}

// ---------------------------------------------------------------- workers

/**
 * Workers making shards beside this thread: `lanes` − 1 of them (tests), or
 * one per core but this one (at most 3) when the recording is large enough
 * to repay starting them.
 */
function startWorkers(files: string[], lanes?: number): ShardWorker[] {
  let count = (lanes ?? 1) - 1;
  if (lanes === undefined) {
    let bytes = 0;
    for (const file of files) {
      try {
        bytes += Deno.statSync(file).size;
      } catch {
        // Reported when the file is read.
      }
    }
    const cores = navigator.hardwareConcurrency || 1;
    count = bytes >= WORKER_BYTES ? Math.min(cores, 4) - 1 : 0;
  }
  return Array.from({ length: Math.max(0, count) }, () => new ShardWorker());
}

/** A worker running sglang_lane.ts, for one import. */
class ShardWorker {
  #worker = new Worker(new URL("./sglang_lane.ts", import.meta.url).href, { type: "module" });

  /**
   * Gives the worker a task (see sglang_lane.ts); `answer` hears each of its
   * answers. Resolves when it has done the task, with its fault if it had one.
   */
  run(
    task:
      | { op: "open"; files: string[]; claims: Int32Array }
      | { op: "shards"; plan: ShardPlan; jobs: ShardJob[]; claims: Int32Array },
    answer: (data: Record<string, unknown>) => void,
  ): Promise<{ index: number; error: Error } | null> {
    return new Promise((resolve) => {
      let fault: { index: number; error: Error } | null = null;
      this.#worker.onmessage = (event: MessageEvent) => {
        const data = event.data;
        if (data.failed !== undefined) {
          fault = {
            index: data.failed,
            error: data.data ? new DataError(data.error) : new Error(data.error),
          };
        } else if (data.done) resolve(fault);
        else answer(data);
      };
      this.#worker.onerror = (event) => {
        event.preventDefault();
        // An item it claimed is lost: reported before any item's fault.
        resolve({ index: -1, error: new Error(`an import worker failed: ${event.message}`) });
      };
      this.#worker.postMessage(task);
    });
  }

  close(): void {
    this.#worker.terminate();
  }
}
