/**
 * Small helpers every benchmark shares: medians over repeats, peak memory,
 * and one way of printing figures (table or JSON).
 */

/** What `moetrace bench NAME` passes to each benchmark. */
export interface BenchOptions {
  /** Print results as JSON instead of a table. */
  json: boolean;
  /** engine only: write a calibrated hardware JSON here. */
  calibrate?: string;
  /** offload only: a large random checkpoint whose uploads dominate, instead of tiny-moe. */
  large?: boolean;
}

export interface Figure {
  name: string;
  value: number;
  unit: string;
  /** The target this figure is judged against, in the same unit, if any. */
  target?: number;
  /** "min": value must be at least target; "max": at most. */
  direction?: "min" | "max";
}

/** Runs `fn` `repeats` times and returns the median wall time in seconds. */
export async function medianSeconds(
  repeats: number,
  fn: () => Promise<void> | void,
): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const start = performance.now();
    await fn();
    times.push((performance.now() - start) / 1000);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

/** Resident set size now, in MiB. */
export function rssMiB(): number {
  return Deno.memoryUsage().rss / 2 ** 20;
}

/** Prints figures as an aligned table, or as one JSON object with `json`. */
export function printFigures(title: string, figures: Figure[], json: boolean): void {
  if (json) {
    console.log(JSON.stringify({ benchmark: title, figures }));
    return;
  }
  console.log(`\n${title}`);
  const width = Math.max(...figures.map((f) => f.name.length));
  for (const f of figures) {
    const value = Math.abs(f.value) >= 100 ? f.value.toFixed(0) : f.value.toPrecision(3);
    let verdict = "";
    if (f.target !== undefined) {
      const ok = f.direction === "max" ? f.value <= f.target : f.value >= f.target;
      verdict = `  target ${f.direction === "max" ? "≤" : "≥"} ${f.target} ${
        ok ? "met" : "NOT MET"
      }`;
    }
    console.log(`  ${f.name.padEnd(width)}  ${value.padStart(12)} ${f.unit}${verdict}`);
  }
}
