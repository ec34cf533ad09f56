/**
 * "Predicted against measured": when the simulated trace came from
 * `generate --offload` (a measured.csv beside its manifest), the simulation's
 * prediction for that run's policy, capacity, prefetch and budget against the
 * measured decode steps. The trace is the one simulation.json names; the
 * launcher grants read on its measured.csv (moetrace.ts).
 */
import { escapeHtml } from "./html.ts";
import { type Folder, numberIn, readTable, type Table } from "./inputs.ts";

const MEASURED_COLUMNS = ["phase", "ms", "uploads", "policy", "capacity", "prefetch"];
const SIMULATION_COLUMNS = [
  "policy",
  "budget",
  "capacity",
  "prefetch",
  "dtype",
  "hardware",
  "layer",
  "misses",
  "prefetch_issued",
  "ms_per_token",
];

/** The measured.csv of the trace simulation.json names, or null when there is none to read. */
async function measuredTable(simulation: Folder): Promise<Table | null> {
  const trace = simulation.facts.trace;
  if (typeof trace !== "string" || trace === "") return null;
  try {
    await Deno.lstat(`${trace}/measured.csv`);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory)) {
      console.error(
        `report: ${trace}/measured.csv cannot be read (${
          error instanceof Error ? error.name : "error"
        }); the predicted-against-measured section is left out.`,
      );
    }
    return null;
  }
  return await readTable(trace, "measured.csv", MEASURED_COLUMNS);
}

export async function measuredSection(simulation: Folder): Promise<string> {
  const measured = await measuredTable(simulation);
  if (!measured || measured.rows.length === 0) return "";
  const simulated = await readTable(simulation.dir, "simulation.csv", SIMULATION_COLUMNS);
  if (!simulated) return "";
  const generatedRows = measured.rows.filter((r) => r.phase === "1");
  const generated = generatedRows.map((r) => numberIn(measured, r, "ms"));
  if (generated.length === 0 || generated.some((v) => Number.isNaN(v))) return "";
  const { policy, capacity, prefetch } = measured.rows[0]!;
  const budget = measured.rows[0]!.budget || "per-layer"; // measured.csv before the global pool had no budget column
  const uploads = measured.rows.reduce((a, r) => a + (numberIn(measured, r, "uploads") || 0), 0);
  const sorted = [...generated].sort((a, b) => a - b);
  const n = sorted.length;
  const median = n % 2 === 1 ? sorted[(n - 1) / 2]! : (sorted[n / 2 - 1]! + sorted[n / 2]!) / 2;
  const mean = generated.reduce((a, b) => a + b, 0) / n;
  const sims = simulated.rows.filter((r) =>
    r.layer === "all" && r.policy === policy && r.capacity === capacity &&
    r.prefetch === prefetch && r.budget === budget
  );
  if (sims.length === 0) return "";
  const f = (v: number) => v.toPrecision(4);
  const rows = sims.map((r) => {
    const predicted = numberIn(simulated, r, "ms_per_token");
    const loads = numberIn(simulated, r, "misses") + numberIn(simulated, r, "prefetch_issued");
    return `<tr><td>${escapeHtml(r.hardware!)}</td><td>${escapeHtml(r.dtype!)}</td><td>${
      f(predicted)
    }</td><td>${f(median)}</td><td>${f(mean)}</td><td>${
      f(100 * (predicted - median) / median)
    }%</td><td>${loads}</td><td>${uploads}</td></tr>`;
  });
  return `<section id="measured"><h2>Predicted against measured</h2>
<p class="intro">${
    escapeHtml(
      `The trace comes from generate --offload ${policy}:${capacity} --prefetch ${prefetch} --budget ${budget}; its measured.csv holds ${n} timed decode steps. Predicted: the simulation's mean ms/token over every trace row; measured: median and mean wall ms of the decode steps. Loads: simulated misses + prefetches against the engine's uploads (prompt and generated rows).`,
    )
  }</p>
<div class="table-wrap"><table class="data"><thead><tr><th>hardware</th><th>dtype</th><th>predicted ms/token</th><th>measured median</th><th>measured mean</th><th>error (of median)</th><th>simulated loads</th><th>uploads</th></tr></thead><tbody>
${rows.join("\n")}
</tbody></table></div></section>`;
}
