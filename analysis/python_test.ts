/**
 * The analysis CSVs load in pandas and polars with no options, with numeric
 * columns parsed as numbers; and an independent NumPy computation straight
 * from the shards (Parquet or Arrow) reproduces the repetition, overlap,
 * share, co-activation, CoSMoEs (Eq. 5, Eq. 6, ΔUniform) and within-document
 * shuffle values (a second implementation of the formulas).
 * Ignored, with the reason printed, where Python's data tools cannot be had.
 */
import assert from "node:assert/strict";
import { pythonWithDataTools, runPython } from "../tests/python_env.ts";
import { writeSyntheticTrace } from "../trace/synthetic.ts";
import { TraceReader } from "../trace/mod.ts";
import { runAnalysis } from "./run.ts";
import { COLUMNS, writeAnalysis } from "./write.ts";

const SCRIPT = `
import glob, json, os, sys
import numpy as np, pandas as pd, polars as pl, pyarrow.ipc as ipc, pyarrow.parquet as pq
trace, out = sys.argv[1], sys.argv[2]
manifest = json.load(open(os.path.join(trace, "manifest.json")))
M = len(manifest["model"]["moe_layers"]); k = manifest["model"]["top_k"]; E = manifest["model"]["num_experts"]
docs, experts, probs = [], [], []
for shard in manifest["shards"]:
    path = os.path.join(trace, shard["file"])
    table = pq.read_table(path) if path.endswith(".parquet") else ipc.open_file(path).read_all()
    docs.append(table["doc"].to_numpy())
    experts.append(np.asarray(table["experts"].combine_chunks().flatten()).reshape(-1, M, k))
    probs.append(np.asarray(table["probs"].combine_chunks().flatten(), dtype=np.float64).reshape(-1, M, E))
doc = np.concatenate(docs); ex = np.concatenate(experts).astype(np.int64); pr = np.concatenate(probs)
T = len(doc)
paired = doc[1:] == doc[:-1]
P = int(paired.sum())
first = ex[:, :, 0]
repeat = ((first[1:] == first[:-1]) & paired[:, None]).sum(0) / P
overlap = (ex[1:, :, :, None] == ex[:-1, :, None, :]).any(-1).sum(-1)  # [T-1, M]
overlap_ge1 = ((overlap >= 1) & paired[:, None]).sum(0) / P
overlap_dist = [[float(((overlap[:, l] == j) & paired).sum() / P) for j in range(k + 1)] for l in range(M)]
ex_rep = (((k - overlap) * paired[:, None]).sum(0)) / (P * k)
counts = np.zeros((M, E))
for l in range(M):
    counts[l] = np.bincount(ex[:, l, :].ravel(), minlength=E)
has = np.zeros((T, M, E), dtype=bool)
for j in range(k):
    np.put_along_axis(has, ex[:, :, j:j + 1], True, axis=2)
coact = [[float((has[:, l, 0] & has[:, l, 1]).sum() / has[:, l, 0].sum()) for l in range(M)]]
# CoSMoEs Eq. 6 at tau = 1: W = p normalised; L sums |W_t+1 - W_t| over pairs, L_norm = L / T.
W = pr / pr.sum(-1, keepdims=True)
l_norm = ((np.abs(W[1:] - W[:-1]).sum(-1)) * paired[:, None]).sum(0) / T
# Delta-uniform, the mean relative deviation: sum_e |q_e - 1/E|.
delta_uniform = np.abs(counts / (k * T) - 1 / E).sum(-1)
# Within-document shuffle expectation of first-choice repeats: sum_e c(c - 1)/T_d per document.
shuffle_repeat = np.zeros(M)
for d in np.unique(doc):
    rows = first[doc == d]
    for l in range(M):
        c = np.bincount(rows[:, l], minlength=E).astype(np.float64)
        shuffle_repeat[l] += (c * (c - 1)).sum() / len(rows)
shuffle_repeat /= P
dtypes = {}
for path in sorted(glob.glob(os.path.join(out, "*.csv"))):
    name = os.path.basename(path)[:-4]
    frame = pd.read_csv(path)
    polars_frame = pl.read_csv(path)
    assert frame.shape == polars_frame.shape, name
    dtypes[name] = {c: str(frame[c].dtype) for c in frame.columns}
print(json.dumps({
  "T": T, "P": P,
  "repeat": repeat.tolist(), "overlap_ge1": overlap_ge1.tolist(), "overlap_dist": overlap_dist,
  "ex_rep": ex_rep.tolist(), "top_k_share": (counts / (k * T)).tolist(), "coact_0_1": coact[0],
  "l_norm": l_norm.tolist(), "delta_uniform": delta_uniform.tolist(),
  "shuffle_repeat": shuffle_repeat.tolist(),
  "dtypes": dtypes,
}))
`;

// Probed once at load (installing into the venv if needed), so that a machine without
// Python's data tools shows the test as ignored, with why, instead of passing it.
const env = await pythonWithDataTools();
if ("reason" in env) console.log(`ignored: ${env.reason}`);

Deno.test({
  name: "CSVs load in pandas and polars; NumPy recomputes the statistics from the shards",
  ignore: "reason" in env,
  fn: async () => {
    if (!("python" in env)) throw new Error(env.reason);
    const dir = await Deno.makeTempDir({ prefix: "moetrace-analysis-python-" });
    try {
      await writeSyntheticTrace(`${dir}/trace`, {
        numExperts: 6,
        topK: 3,
        numLayers: 3,
        domains: [{ name: "Gutenberg (PG-19)", docs: 8 }, { name: 'say "hi", ok', docs: 7 }],
        tokensPerDoc: 90,
        stickiness: 0.4,
        probs: true,
        seed: 21,
      }, { rowsPerShard: 200 });
      const result = await runAnalysis(await TraceReader.open(`${dir}/trace`), {
        bootstrap: 30,
        seed: 1,
      });
      await writeAnalysis(result, `${dir}/out`, { bootstrap: 30, seed: 1, figures: false });
      const py = JSON.parse(await runPython(env.python, SCRIPT, [`${dir}/trace`, `${dir}/out`]));
      assert.equal(py.T, result.totals.n_tokens);
      const t = result.tables;
      // Counts are exact; sums of probabilities pass through the float32 document vectors.
      const near = (a: unknown, b: number, what: string, tolerance = 1e-9) =>
        assert.ok(
          typeof a === "number" && Math.abs(a - b) < tolerance,
          `${what}: ${a} vs NumPy ${b}`,
        );
      for (let l = 0; l < 3; l++) {
        const all = (rows: typeof t.repetition, extra: Record<string, unknown>) =>
          rows!.find((r) =>
            r.domain === "all" && r.layer === l &&
            Object.entries(extra).every(([k, v]) => r[k] === v)
          )!;
        near(all(t.repetition, { statistic: "first_choice_repeat" }).value, py.repeat[l], "repeat");
        near(
          all(t.repetition, { statistic: "set_overlap" }).value,
          py.overlap_ge1[l],
          "overlap ≥ 1",
        );
        near(all(t.cosmoes, { statistic: "ex_rep" }).value, py.ex_rep[l], "ex_rep");
        near(all(t.cosmoes, { statistic: "h_norm" }).value, py.ex_rep[l], "h_norm (Eq. 5)");
        near(all(t.cosmoes, { statistic: "l_norm" }).value, py.l_norm[l], "l_norm (Eq. 6)", 1e-7);
        near(
          all(t.cosmoes, { statistic: "delta_uniform" }).plug_in,
          py.delta_uniform[l],
          "delta_uniform",
        );
        near(
          all(t.repetition, { statistic: "first_choice_repeat" }).baseline_marginal,
          py.shuffle_repeat[l],
          "shuffled repeat",
          1e-7,
        );
        for (let j = 0; j <= 3; j++) {
          near(
            all(t.overlap_distribution, { overlap: j }).proportion,
            py.overlap_dist[l][j],
            "overlap",
          );
        }
        for (let e = 0; e < 6; e++) {
          near(
            all(t.expert_shares, { choice: "top_k", expert: e }).share,
            py.top_k_share[l][e],
            "share",
          );
        }
        near(
          all(t.coactivation, { expert_i: 0, expert_j: 1 }).coactivation,
          py.coact_0_1[l],
          "coact",
        );
      }
      // Every CSV parses with the documented columns; numbers come out numeric.
      for (const [name, columns] of Object.entries(COLUMNS)) {
        const dtypes = py.dtypes[name];
        assert.deepEqual(Object.keys(dtypes), [...columns], `${name} columns in pandas`);
        for (
          const column of ["n_docs", "n_tokens", "layer", "ci_low", "baseline", "value", "share"]
        ) {
          if (column in dtypes && !(name === "summary" && column === "layer")) {
            assert.match(
              dtypes[column],
              /^(int64|float64)$/,
              `${name}.${column} is ${dtypes[column]}`,
            );
          }
        }
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
