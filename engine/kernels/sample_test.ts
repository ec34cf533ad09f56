/**
 * The next-token kernel on vocabularies past 65,536 ids (issue 17: llvmpipe
 * stops a loop at 65,535 iterations, so a kernel that scanned the vocabulary
 * in one invocation never chose an id ≥ 65535): greedy is the first maximum
 * anywhere in the row; a sample at temperature T is the token an independent
 * CPU reference draws, by inverse CDF of softmax(logits / T) in f64 with the
 * kernel's uniform number hashed from (seed, position).
 */
import assert from "node:assert/strict";
import { createGpuContext, type GpuContext, readBack, Recorder } from "../gpu.ts";
import { sample } from "./sample.ts";
import { Rng } from "../../common/random.ts";

Deno.env.set("XDG_RUNTIME_DIR", Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp");

/**
 * Runs one sample dispatch per draw over the same logits row, draw j at
 * position `positions[j]`, in one submit; returns the chosen ids.
 */
async function draws(
  ctx: GpuContext,
  logits: Float32Array,
  o: { temperature: number; seed: number; positions: number[] },
): Promise<Uint32Array> {
  const n = o.positions.length;
  const info = new Uint32Array(n * 4);
  o.positions.forEach((pos, j) => info.set([pos, 0, 0, j], j * 4));
  const logitsBuf = ctx.pool.upload("logits", logits);
  const infoBuf = ctx.pool.upload("info", info);
  const tokens = ctx.pool.storage("tokens", (n + 1) * 4);
  const rec = new Recorder(ctx);
  for (let j = 0; j < n; j++) {
    sample(rec, {
      logits: logitsBuf,
      info: infoBuf,
      tokens,
      vocab: logits.length,
      row: j,
      temperature: o.temperature,
      seed: o.seed,
    });
  }
  rec.finish().submit();
  const [out] = await readBack(ctx, [{ buffer: tokens, bytes: (n + 1) * 4 }]);
  rec.destroy();
  for (const b of [logitsBuf, infoBuf, tokens]) ctx.pool.release(b);
  return new Uint32Array(out!).slice(1);
}

/** The kernel's hash (a PCG output permutation), in u32 arithmetic. */
function hash(x: number): number {
  let v = (Math.imul(x >>> 0, 747796405) + 2891336453) >>> 0;
  v = Math.imul(((v >>> ((v >>> 28) + 4)) ^ v) >>> 0, 277803737) >>> 0;
  return ((v >>> 22) ^ v) >>> 0;
}

/** The kernel's uniform number in [0, 1) for (seed, position): 24 bits. */
function uniform(seed: number, pos: number): number {
  return (hash(hash(seed) ^ Math.imul(pos, 2654435769)) >>> 8) / 16777216;
}

/**
 * The CPU reference at temperature T: for u, the first id whose cumulative
 * probability softmax(logits / T) exceeds u, in f64; `nearTie` when u is
 * within 1e-5 of a cumulative boundary (where f32 rounding may pick either
 * side).
 */
function reference(logits: Float32Array, temperature: number): (u: number) => {
  id: number;
  nearTie: boolean;
} {
  let mx = -Infinity;
  for (const l of logits) mx = Math.max(mx, l);
  const cdf = Float64Array.from(logits, (l) => Math.exp((l - mx) / temperature));
  for (let i = 1; i < cdf.length; i++) cdf[i]! += cdf[i - 1]!;
  const sum = cdf[cdf.length - 1]!;
  for (let i = 0; i < cdf.length; i++) cdf[i]! /= sum;
  return (u) => {
    let lo = 0, hi = cdf.length - 1; // first i with cdf[i] > u
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid]! > u) hi = mid;
      else lo = mid + 1;
    }
    const below = lo > 0 ? cdf[lo - 1]! : 0;
    return { id: lo, nearTie: u - below < 1e-5 || cdf[lo]! - u < 1e-5 };
  };
}

Deno.test("greedy picks the first maximum anywhere in a vocabulary over 65,536", async () => {
  const ctx = await createGpuContext();
  try {
    const rng = new Rng(11);
    for (const V of [70_000, 151_936]) {
      const logits = Float32Array.from({ length: V }, () => rng.normal());
      // maxima at these ids (ties: the lower id wins)
      const cases = [[V - 1], [65_535], [65_536], [V - 7, 69_997], [5, 66_000], [0], [V - 1, 0]];
      for (const at of cases) {
        const row = logits.slice();
        for (const i of at) row[i] = 10;
        const [got] = await draws(ctx, row, { temperature: 0, seed: 0, positions: [3] });
        assert.equal(got, Math.min(...at), `V ${V}, maximum at ${at.join(" and ")}`);
      }
    }
  } finally {
    ctx.pool.releaseAll();
    ctx.device.destroy();
  }
});

Deno.test("a sample at temperature T is the CPU reference's inverse-CDF draw, ids past 65,536 included", async () => {
  const ctx = await createGpuContext();
  try {
    const rng = new Rng(5);
    const V = 151_936;
    // One id in 512 is likely (spread over every block of the kernel), the rest a
    // tail of small probabilities; ids ≥ 65536 hold more than half the mass.
    const logits = Float32Array.from(
      { length: V },
      (_, i) => i % 512 === 37 ? 2 + rng.normal() : rng.normal() - 10,
    );
    const n = 200;
    for (const [temperature, seed] of [[1, 5], [0.7, 123456789], [1.5, 0xffffffff]] as const) {
      const positions = Array.from({ length: n }, (_, j) => j * 3 + (seed & 7));
      const got = await draws(ctx, logits, { temperature, seed, positions });
      const ref = reference(logits, temperature);
      let compared = 0, high = 0;
      positions.forEach((pos, j) => {
        const want = ref(uniform(seed, pos));
        if (want.nearTie) return;
        compared++;
        if (got[j]! >= 65_536) high++;
        assert.equal(got[j], want.id, `T ${temperature}, seed ${seed}, position ${pos}`);
      });
      assert.ok(compared >= 0.75 * n, `${compared} draws compared`);
      assert.ok(high >= 0.3 * n, `${high} draws of ids ≥ 65536`);
    }
  } finally {
    ctx.pool.releaseAll();
    ctx.device.destroy();
  }
});

Deno.test("sampling keeps its semantics on a small vocabulary: first maximum, draws as the reference", async () => {
  const ctx = await createGpuContext();
  try {
    const rng = new Rng(9);
    for (const V of [1, 2, 255, 256, 257, 1000]) {
      const logits = Float32Array.from({ length: V }, () => rng.normal());
      let best = 0;
      for (let i = 1; i < V; i++) if (logits[i]! > logits[best]!) best = i;
      const [greedy] = await draws(ctx, logits, { temperature: 0, seed: 1, positions: [0] });
      assert.equal(greedy, best, `V ${V}`);
      const positions = Array.from({ length: 64 }, (_, j) => j);
      const got = await draws(ctx, logits, { temperature: 1, seed: 42, positions });
      const ref = reference(logits, 1);
      positions.forEach((pos, j) => {
        const want = ref(uniform(42, pos));
        if (!want.nearTie) assert.equal(got[j], want.id, `V ${V}, position ${pos}`);
      });
    }
  } finally {
    ctx.pool.releaseAll();
    ctx.device.destroy();
  }
});
