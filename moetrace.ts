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
import { COMMANDS, parseCommand, type PathAccess } from "./main.ts";
import { isUserError } from "./common/errors.ts";

export interface Permissions {
  read: string[];
  write: string[];
}

const PROJECT_ROOT = dirname(new URL(import.meta.url).pathname);

/**
 * The permissions a command needs, from its parsed arguments and the `path`
 * field of each flag in main.ts's COMMANDS. Reads: the project (code, npm
 * packages) and each input path; writes: the outputs only.
 */
export function permissionsFor(
  command: string,
  positional: string | string[] | undefined,
  flags: Record<string, unknown>,
): Permissions {
  const spec = COMMANDS[command];
  const read = new Set<string>([PROJECT_ROOT]);
  const write = new Set<string>();
  const grant = (access: PathAccess, path: string) => {
    const full = resolve(path);
    switch (access) {
      case "read":
        read.add(full);
        break;
      case "write":
        read.add(full);
        write.add(full);
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
  for (const [name, flag] of Object.entries(spec.flags)) {
    const value = flags[name];
    if (!flag.path) continue;
    for (const path of Array.isArray(value) ? value : [value]) {
      if (typeof path === "string") grant(flag.path, path);
    }
  }
  // Benchmarks write their scratch traces to the system temporary folder.
  if (spec.scratch) grant("write", Deno.env.get("TMPDIR") ?? "/tmp");
  return { read: [...read], write: [...write] };
}

/** The `deno run` arguments that run main.ts with `permissions`. */
export function denoArgs(permissions: Permissions, args: string[]): string[] {
  const flags = [`--allow-read=${permissions.read.join(",")}`];
  if (permissions.write.length > 0) flags.push(`--allow-write=${permissions.write.join(",")}`);
  return ["run", "--no-prompt", ...flags, `${PROJECT_ROOT}/main.ts`, ...args];
}

async function launch(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  let permissions: Permissions = { read: [PROJECT_ROOT], write: [] };
  if (command !== undefined && !command.startsWith("-") && command !== "help") {
    try {
      const parsed = parseCommand(command, rest);
      if (!parsed.help) permissions = permissionsFor(command, parsed.positionals, parsed.flags);
    } catch (error) {
      if (!isUserError(error)) throw error;
      // main.ts reports the usage mistake itself, with its exit status.
    }
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: denoArgs(permissions, args),
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  // Ctrl-C reaches the child through the process group; the launcher waits for it.
  Deno.addSignalListener("SIGINT", () => {});
  return (await child.status).code;
}

if (import.meta.main) {
  Deno.exit(await launch(Deno.args));
}
