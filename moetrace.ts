/**
 * The least-privilege launcher behind `deno task moetrace`: it reads the
 * command line, works out which paths the command reads and which single
 * output location it writes, and runs main.ts in a child Deno with exactly
 * those permissions: no network, no environment, no subprocesses, writes only
 * under the output. A bug or a hostile input in the worker therefore cannot
 * write outside --out; the runtime refuses.
 *
 * The launcher itself may only start Deno and read the command line's paths.
 */
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { COMMANDS, parseCommand, type PathAccess } from "./main.ts";
import { isUserError, UsageError } from "./common/errors.ts";
import { huggingFaceBlobs } from "./common/fs.ts";

export interface Permissions {
  read: string[];
  write: string[];
  /** Benchmarks: also the GPU driver's runtime folder variable and the load average. */
  scratch?: boolean;
  /**
   * Native code (DuckDB's addon for `analyze --engine duckdb`): --allow-ffi.
   * Native code is not bound by Deno's permissions, so this is the one case
   * where the launcher's limits do not hold.
   */
  ffi?: boolean;
}

// fileURLToPath decodes the URL (a checkout path with a space arrives as %20).
const PROJECT_ROOT = dirname(fileURLToPath(import.meta.url));
/**
 * The checkout's real path too: reached through a symlink, Deno resolves the
 * npm packages' files to their real paths, which the child must be able to read.
 */
const PROJECT_REAL = (() => {
  try {
    return Deno.realPathSync(PROJECT_ROOT);
  } catch {
    return PROJECT_ROOT;
  }
})();

/**
 * The folder relative paths mean: the caller's. `deno task` runs its command
 * in the project root and passes the caller's folder as INIT_CWD; an installed
 * `moetrace` runs where it was called.
 */
export function callerFolder(): string {
  const allowed = Deno.permissions.querySync({ name: "env", variable: "INIT_CWD" });
  const initCwd = allowed.state === "granted" ? Deno.env.get("INIT_CWD") : undefined;
  return initCwd && Deno.cwd() === PROJECT_ROOT ? initCwd : Deno.cwd();
}

/** An environment variable when the launcher may read it and it is set, else `fallback`. */
function envOr(name: string, fallback: string): string {
  const allowed = Deno.permissions.querySync({ name: "env", variable: name });
  return (allowed.state === "granted" ? Deno.env.get(name) : undefined) ?? fallback;
}

/**
 * The permissions a command needs, from its parsed arguments and the `path`
 * field of each flag in main.ts's COMMANDS. Reads: the project (code, npm
 * packages) and each input path; writes: the outputs only.
 */
export function permissionsFor(
  command: string,
  positional: string | string[] | undefined,
  flags: Record<string, unknown>,
  base = Deno.cwd(),
): Permissions {
  const spec = COMMANDS[command];
  const read = new Set<string>([PROJECT_ROOT, PROJECT_REAL]);
  const write = new Set<string>();
  const grant = (access: PathAccess, path: string) => {
    // Deno's permission lists are comma-separated: "a,../b" would grant both.
    if (path.includes(",")) {
      throw new UsageError(`Paths may not contain a comma, got "${path}".`);
    }
    const full = resolve(base, path);
    switch (access) {
      case "read":
        read.add(full);
        for (const folder of outsideShardFolders(full)) read.add(folder);
        for (const file of simulatedMeasurements(full, base)) read.add(file);
        for (const folder of snapshotBlobs(full)) read.add(folder);
        break;
      case "write":
        read.add(full);
        write.add(full);
        for (const folder of outsideShardFolders(full)) read.add(folder);
        break;
      case "write-staged":
        // Staged at <path>.partial and renamed into place; the parent is read to check both.
        for (const p of [full, `${full}.partial`]) {
          read.add(p);
          write.add(p);
        }
        read.add(dirname(full));
        break;
      case "write-file":
        read.add(dirname(full));
        write.add(dirname(full));
        break;
    }
  };
  if (!spec) return { read: [...read], write: [] };
  if (spec.positional?.path) {
    for (const path of Array.isArray(positional) ? positional : [positional]) {
      if (path !== undefined) grant(spec.positional.path, path);
    }
  }
  let ffi = false;
  for (const [name, flag] of Object.entries(spec.flags)) {
    const value = flags[name];
    if (flag.native !== undefined && value === flag.native) ffi = true;
    if (!flag.path) continue;
    for (const path of Array.isArray(value) ? value : [value]) {
      if (typeof path === "string") grant(flag.path, path);
    }
  }
  // Benchmarks write their scratch traces to the system temporary folder.
  if (spec.scratch) grant("write", envOr("TMPDIR", "/tmp"));
  return {
    read: [...read],
    write: [...write],
    scratch: spec.scratch === true,
    ...(ffi ? { ffi } : {}),
  };
}

/**
 * The folders outside a trace directory that hold shards its manifest lists
 * (a trace made by `moetrace merge` lists its parts' shards where they are):
 * reading the trace needs them too. Nothing for a path that is not a trace.
 */
export function outsideShardFolders(dir: string): string[] {
  let manifest: unknown;
  try {
    manifest = JSON.parse(Deno.readTextFileSync(`${dir}/manifest.json`));
  } catch {
    return [];
  }
  const shards = (manifest as { shards?: unknown }).shards;
  const mergedFrom = (manifest as { capture?: { merged_from?: unknown } }).capture?.merged_from;
  if (!Array.isArray(shards) || !Array.isArray(mergedFrom)) return [];
  // Only the parts of a merged trace, and only those that are traces: a manifest from a
  // stranger must not widen the grant to any folder it names.
  const parts = mergedFrom.filter((p): p is string => typeof p === "string")
    .map((p) => resolve(dir, p))
    .filter((part) => {
      try {
        return Deno.statSync(`${part}/manifest.json`).isFile;
      } catch {
        return false;
      }
    });
  const folders = new Set<string>();
  for (const shard of shards) {
    const file = (shard as { file?: unknown })?.file;
    if (typeof file !== "string") continue;
    const folder = dirname(resolve(dir, file));
    // A comma would split Deno's permission list; such a folder is left to fail with a sentence.
    if (
      folder !== dir && !folder.startsWith(`${dir}/`) && !folder.includes(",") &&
      parts.some((part) => folder === part || folder.startsWith(`${part}/`))
    ) {
      folders.add(folder);
    }
  }
  return [...folders];
}

/**
 * The `blobs` folder of a Hugging Face cache snapshot's `models--ORG--NAME`
 * entry (the snapshot's files are links to `../../blobs/HASH`, and Deno
 * checks a link's target against the grant), as named and as it really is;
 * nothing for any other folder.
 * The engine refuses a snapshot file whose target leaves both folders.
 */
export function snapshotBlobs(dir: string): string[] {
  const folders = new Set<string>();
  let real = dir;
  try {
    real = Deno.realPathSync(dir);
  } catch {
    // A missing folder is named by the command.
  }
  for (const candidate of new Set([dir, real])) {
    const blobs = huggingFaceBlobs(candidate);
    if (blobs === null) continue;
    folders.add(blobs);
    try {
      folders.add(Deno.realPathSync(blobs));
    } catch {
      // No blobs folder: nothing more to read.
    }
  }
  // A comma would split Deno's permission list; such a folder is left to fail with a sentence.
  return [...folders].filter((folder) => !folder.includes(","));
}

/**
 * The measured.csv of the trace a simulation folder's simulation.json names
 * (`report` sets the prediction against it): that one file, with the trace's
 * path resolved as the worker resolves it, from the caller's folder. Nothing
 * for a path that is not a simulation folder.
 */
export function simulatedMeasurements(dir: string, base: string): string[] {
  let facts: unknown;
  try {
    facts = JSON.parse(Deno.readTextFileSync(`${dir}/simulation.json`));
  } catch {
    return [];
  }
  const trace = (facts as { trace?: unknown } | null)?.trace;
  if (typeof trace !== "string" || trace === "") return [];
  const file = resolve(base, trace, "measured.csv");
  // A comma would split Deno's permission list; such a trace's measurements are left out.
  return file.includes(",") ? [] : [file];
}

/** The `deno run` arguments that run main.ts with `permissions`. */
export function denoArgs(permissions: Permissions, args: string[]): string[] {
  const flags = [`--allow-read=${permissions.read.join(",")}`];
  if (permissions.write.length > 0) flags.push(`--allow-write=${permissions.write.join(",")}`);
  if (permissions.scratch) flags.push("--allow-env=XDG_RUNTIME_DIR,TMPDIR", "--allow-sys=loadavg");
  if (permissions.ffi) flags.push("--allow-ffi");
  return ["run", "--no-prompt", ...flags, `${PROJECT_ROOT}/main.ts`, ...args];
}

async function launch(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  const cwd = callerFolder();
  let permissions: Permissions = { read: [...new Set([PROJECT_ROOT, PROJECT_REAL])], write: [] };
  if (command !== undefined && !command.startsWith("-") && command !== "help") {
    let parsed: ReturnType<typeof parseCommand> | null = null;
    try {
      parsed = parseCommand(command, rest);
    } catch (error) {
      if (!isUserError(error)) throw error;
      // main.ts reports the usage mistake itself, with its exit status.
    }
    if (parsed && !parsed.help) {
      try {
        permissions = permissionsFor(command, parsed.positionals, parsed.flags, cwd);
      } catch (error) {
        if (!isUserError(error)) throw error;
        console.error(`moetrace: ${error.message}`);
        return error.exitCode;
      }
    }
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: denoArgs(permissions, args),
    cwd,
    // Mesa warns on every start unless its runtime folder is set; any writable folder will do.
    env: { XDG_RUNTIME_DIR: envOr("XDG_RUNTIME_DIR", envOr("TMPDIR", "/tmp")) },
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  // Ctrl-C reaches the child through the process group; the launcher waits for it. A
  // scheduler's or CI's cancel (SIGTERM, SIGHUP) is sent to the launcher alone: pass it on,
  // or the orphaned child would keep writing.
  Deno.addSignalListener("SIGINT", () => {});
  for (const signal of ["SIGTERM", "SIGHUP"] as const) {
    Deno.addSignalListener(signal, () => {
      try {
        child.kill(signal);
      } catch {
        // The child has already exited.
      }
    });
  }
  return (await child.status).code;
}

if (import.meta.main) {
  Deno.exit(await launch(Deno.args));
}
