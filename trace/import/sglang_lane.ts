/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * A worker running lanes of an SGLang import (sglang_rank.ts) for the files
 * the importer gives it. Messages, each answered {id, value} or
 * {id, error, data} (data: the error is bad data, a DataError):
 *   {id, op: "read", path, file}             → the file's RankSummary
 *   {id, op: "digests", file, passes}        → SHA-256 of those passes' ids
 *   {id, op: "convert", file, job, buffer}   → (ids written into the shared buffer)
 *   {id, op: "release", file}                → (the file forgotten)
 */
import { DataError, messageOf } from "../../common/errors.ts";
import { type ConvertJob, convertRank, passDigests, readRank, releaseRank } from "./sglang_rank.ts";

type Request =
  | { id: number; op: "read"; path: string; file: number }
  | { id: number; op: "digests"; file: number; passes: number[] }
  | { id: number; op: "convert"; file: number; job: ConvertJob; buffer: SharedArrayBuffer }
  | { id: number; op: "release"; file: number };

self.onmessage = async (event: MessageEvent<Request>) => {
  const request = event.data;
  try {
    let value: unknown = null;
    if (request.op === "read") value = await readRank(request.path, request.file);
    else if (request.op === "digests") value = await passDigests(request.file, request.passes);
    else if (request.op === "convert") {
      convertRank(request.file, request.job, new Uint16Array(request.buffer));
    } else releaseRank(request.file);
    self.postMessage({ id: request.id, value });
  } catch (error) {
    self.postMessage({
      id: request.id,
      error: messageOf(error),
      data: error instanceof DataError,
    });
  }
};
