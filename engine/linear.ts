/**
 * y = a · W on whichever kernel path the operands took, and the activations
 * it reads. An activation row length K takes the texture path when K is a
 * multiple of 64 (weights.ts `texturePath`): its rows are then written, or
 * copied, into the run state's staging texture for K, which
 * kernels/matmul_tex.ts reads with texel loads (on lavapipe ~15× faster than
 * storage-buffer loads); other lengths use kernels/matmul.ts on buffers.
 *
 * Decode passes (fewer than 16 rows) use 1-row tiles, prefill 64-row tiles.
 */
import type { Recorder } from "./gpu.ts";
import { matmul, type MatmulArgs, type MatmulVariant } from "./kernels/matmul.ts";
import { DECODE, matmulTex, PREFILL } from "./kernels/matmul_tex.ts";
import type { RunState } from "./run_state.ts";
import { type Linear, wFormat } from "./weights.ts";

/** An activation buffer and, when its rows go through textures, the texture holding its copy. */
export interface Act {
  buffer: GPUBuffer;
  view?: GPUTextureView;
}

/**
 * Copies `rows` rows of an activation with row length k into its staging
 * texture when that length takes the texture path; returns what matmuls read.
 */
export function stage(
  rec: Recorder,
  s: RunState,
  buffer: GPUBuffer,
  k: number,
  rows: number,
): Act {
  const tex = s.staging.get(k);
  if (tex === undefined) return { buffer };
  rec.copyToTexture(buffer, tex.texture, k / 4, rows);
  return { buffer, view: tex.view };
}

export type LinearVariant = Omit<MatmulVariant, "rowGroups">;
export type LinearArgs = Omit<MatmulArgs, "a" | "w" | "w3" | "k" | "n">;

/**
 * y = epilogue(a · W) ([rows, K] · [K, N]): the texture kernel when both
 * operands (and W3 of a SwiGLU pair) are textures, else the storage one. A
 * split weight (`Linear.pieces`) runs one matmul per piece: each reads its
 * K columns of a and writes its N columns of y; pieces after the first along
 * K add to y (no bias), which the epilogues allow as they are linear in the
 * product (row or sigmoid scale, alpha), except SwiGLU (refused at load).
 * Column pieces give the unsplit result bit for bit; K pieces sum the two
 * halves of each dot product separately (f32 rounding).
 */
export function linear(
  rec: Recorder,
  a: Act,
  w: Linear,
  args: LinearArgs & { w3?: Linear },
  variant: LinearVariant,
  decode: boolean,
): void {
  if (w.pieces === undefined) {
    linearWhole(rec, a, w, args, variant, decode);
    return;
  }
  const { w3, ...rest } = args;
  if (w3 && w3.pieces?.length !== w.pieces.length) {
    throw new Error(
      `linear: a SwiGLU pair split into ${w.pieces.length} and ${w3.pieces?.length ?? 1} pieces`,
    );
  }
  w.pieces.forEach((piece, i) => {
    const later = piece.kFirst > 0;
    if (later && w3) throw new Error("linear: a SwiGLU weight split along K");
    linearWhole(
      rec,
      a,
      piece,
      {
        ...rest,
        ...(w3 ? { w3: w3.pieces![i]! } : {}),
        yStride: args.yStride ?? w.n,
        yCol: (args.yCol ?? 0) + piece.nFirst,
        aCol: (args.aCol ?? 0) + piece.kFirst,
        aStride: args.aStride ?? w.k,
        biasCol: (args.biasCol ?? 0) + piece.nFirst,
      },
      later ? { ...variant, accumulate: true, bias: false } : variant,
      decode,
    );
  });
}

/** y = epilogue(a · W) for a weight held in one texture or buffer. */
function linearWhole(
  rec: Recorder,
  a: Act,
  w: Linear,
  args: LinearArgs & { w3?: Linear },
  variant: LinearVariant,
  decode: boolean,
): void {
  const { w3, ...rest } = args;
  if (w.view && a.view && (!w3 || w3.view)) {
    matmulTex(rec, {
      ...rest,
      a: a.view,
      w: w.view,
      ...(w3 ? { w3: w3.view! } : {}),
      k: w.k,
      n: w.n,
    }, {
      ...variant,
      weights: wFormat(w),
      shape: decode ? DECODE : PREFILL,
    });
    return;
  }
  if (a.view) {
    throw new Error(`linear: ${w.k}×${w.n} weight missed the texture path its input took`);
  }
  if (!w.buffer || (w3 && !w3.buffer)) throw new Error("linear: weight has no storage copy");
  matmul(rec, {
    ...rest,
    a: a.buffer,
    w: w.buffer,
    ...(w3 ? { w3: w3.buffer! } : {}),
    k: w.k,
    n: w.n,
  }, {
    ...variant,
    rowGroups: decode ? 1 : 4,
  });
}
