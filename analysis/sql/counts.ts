/**
 * The count tables: the heavy aggregations of a trace (per document × layer ×
 * expert counts, consecutive-token repetition and overlap, co-activation,
 * layer-to-layer flow) as tidy rows, whichever engine made them. The
 * streaming pass (accumulate.ts) holds them as per-document and per-bucket
 * vectors; the SQL in this folder computes them per document, and
 * `bucketed` sums its co-activation and flow rows into the same buckets
 * (documents dealt round-robin per domain in trace order), so the two can
 * be compared row for row.
 */
import { type CsvRow, writeCsv } from "../../common/csv.ts";
import type { Accumulator } from "../accumulate.ts";

/** Key columns then count columns of each table, as written to `counts/NAME.csv`. */
export const COUNT_TABLES = {
  expert_counts: {
    keys: ["domain", "doc", "layer", "expert"],
    counts: ["first_tokens", "second_tokens", "any_tokens"],
  },
  repetition: { keys: ["domain", "doc", "layer"], counts: ["pairs", "same_first_pairs"] },
  overlap: { keys: ["domain", "doc", "layer", "shared"], counts: ["pairs"] },
  coactivation: {
    keys: ["domain", "bucket", "layer", "expert_i", "expert_j"],
    counts: ["tokens"],
  },
  flow: {
    keys: ["domain", "bucket", "layer", "next_layer", "expert_from", "expert_to"],
    counts: ["tokens"],
  },
} as const;

export type CountTableName = keyof typeof COUNT_TABLES;
export const COUNT_TABLE_NAMES = Object.keys(COUNT_TABLES) as CountTableName[];
export type CountTables = Record<CountTableName, CsvRow[]>;

/** The count tables the streaming pass holds. `moeLayers` names the layer axis (manifest model.moe_layers). */
export function countsFromAccumulator(acc: Accumulator, moeLayers: readonly number[]): CountTables {
  const { layers: M, experts: E, topK: k } = acc.dims;
  const L = acc.layout;
  const B = acc.bucketLayout;
  const tables: CountTables = {
    expert_counts: [],
    repetition: [],
    overlap: [],
    coactivation: [],
    flow: [],
  };
  for (const d of acc.domains) {
    for (let i = 0; i < d.docs; i++) {
      const v = d.docVector(i);
      const base = { domain: d.name, doc: d.docIds[i]! };
      for (let l = 0; l < M; l++) {
        const layer = moeLayers[l]!;
        for (let e = 0; e < E; e++) {
          const any = v[L.any + l * E + e]!;
          if (any === 0) continue;
          tables.expert_counts.push({
            ...base,
            layer,
            expert: e,
            first_tokens: v[L.first + l * E + e]!,
            second_tokens: v[L.second + l * E + e]!,
            any_tokens: any,
          });
        }
        const pairs = v[L.pairs]!;
        if (pairs > 0) {
          tables.repetition.push({ ...base, layer, pairs, same_first_pairs: v[L.sameFirst + l]! });
        }
        for (let j = 0; j <= k; j++) {
          const n = v[L.overlap + l * (k + 1) + j]!;
          if (n > 0) tables.overlap.push({ ...base, layer, shared: j, pairs: n });
        }
      }
    }
    for (let b = 0; b < d.usedBuckets; b++) {
      const v = d.bucketVectors.subarray(b * B.size, (b + 1) * B.size);
      for (let l = 0; l < M; l++) {
        const layer = moeLayers[l]!;
        for (let i = 0; i < E; i++) {
          for (let j = i + 1; j < E; j++) {
            const n = v[B.coact + l * B.pairCount + B.pairIndex[i * E + j]!]!;
            if (n > 0) {
              tables.coactivation.push({
                domain: d.name,
                bucket: b,
                layer,
                expert_i: i,
                expert_j: j,
                tokens: n,
              });
            }
          }
        }
        if (l === M - 1) continue;
        for (let i = 0; i < E; i++) {
          for (let j = 0; j < E; j++) {
            const n = v[B.flow + (l * E + i) * E + j]!;
            if (n > 0) {
              tables.flow.push({
                domain: d.name,
                bucket: b,
                layer,
                next_layer: moeLayers[l + 1]!,
                expert_from: i,
                expert_to: j,
                tokens: n,
              });
            }
          }
        }
      }
    }
  }
  return sortTables(tables);
}

/**
 * Per-document rows summed into buckets: the document's bucket is its place
 * among its domain's documents in trace order, modulo `buckets` (the
 * streaming pass's rule). `order` lists each domain's document ids in trace order.
 */
export function bucketed(
  rows: readonly CsvRow[],
  order: ReadonlyMap<string, readonly number[]>,
  buckets: number,
  keys: readonly string[],
  count: string,
): CsvRow[] {
  const bucketOf = new Map<string, number>();
  for (const [domain, docs] of order) {
    docs.forEach((doc, i) => bucketOf.set(`${domain}\u0000${doc}`, i % buckets));
  }
  const sums = new Map<string, CsvRow>();
  for (const row of rows) {
    const bucket = bucketOf.get(`${row.domain}\u0000${row.doc}`);
    if (bucket === undefined) {
      throw new Error(`document ${row.doc} of ${row.domain} is not in the trace's order`);
    }
    const out: CsvRow = { domain: row.domain, bucket };
    for (const key of keys) if (key !== "domain" && key !== "bucket") out[key] = row[key];
    const id = keys.map((key) => out[key]).join("\u0000");
    const sum = sums.get(id);
    if (sum) sum[count] = (sum[count] as number) + (row[count] as number);
    else sums.set(id, { ...out, [count]: row[count] });
  }
  return [...sums.values()];
}

/** Rows sorted by their key columns (strings by code unit, numbers numerically), in place. */
export function sortTables(tables: CountTables): CountTables {
  for (const name of COUNT_TABLE_NAMES) {
    const keys = COUNT_TABLES[name].keys;
    tables[name].sort((a, b) => {
      for (const key of keys) {
        const x = a[key]!;
        const y = b[key]!;
        if (x === y) continue;
        return x < y ? -1 : 1;
      }
      return 0;
    });
  }
  return tables;
}

/** Writes `DIR/NAME.csv` for every count table. */
export async function writeCountTables(tables: CountTables, dir: string): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  for (const name of COUNT_TABLE_NAMES) {
    const { keys, counts } = COUNT_TABLES[name];
    await writeCsv(`${dir}/${name}.csv`, tables[name], [...keys, ...counts]);
  }
}
