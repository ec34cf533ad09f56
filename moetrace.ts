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
import { parseCommand } from "./main.ts";
import { isUserError } from "./common/errors.ts";

export interface Permissions {
  read: string[];
  write: string[];
}

const PROJECT_ROOT = dirname(new URL(import.meta.url).pathname);

/**
 * The permissions a command needs, from its parsed arguments. Reads: the
 * project (code, npm packages) and each input path; writes: the output only
 * (for `import` also `<out>.partial`, where the trace is staged; for `report`
 * the folder of the report file, where it is written then renamed).
 */
export function permissionsFor(
  command: string,
  positional: string | undefined,
  flags: Record<string, unknown>,
): Permissions {
  const read = new Set<string>([PROJECT_ROOT]);
  const write = new Set<string>();
  const input = (path: unknown) => {
    if (typeof path === "string") read.add(resolve(path));
  };
  const output = (path: unknown) => {
    if (typeof path === "string") {
      write.add(resolve(path));
      read.add(resolve(path));
    }
  };
  switch (command) {
    case "capture":
      input(flags.model);
      input(flags.corpus);
      output(flags.out);
      break;
    case "generate":
      input(flags.model);
      input(flags.prompts);
      output(flags.out);
      break;
    case "import":
      input(positional);
      output(flags.out);
      output(`${flags.out}.partial`);
      read.add(dirname(resolve(String(flags.out))));
      break;
    case "inspect":
      input(positional);
      break;
    case "analyze":
      input(positional);
      output(flags.out);
      break;
    case "simulate":
      input(positional);
      for (const h of (flags.hardware as string[] | undefined) ?? []) {
        if (h.endsWith(".json")) input(h);
      }
      output(flags.out);
      break;
    case "report":
      input(flags.analysis);
      input(flags.simulation);
      output(dirname(resolve(String(flags.out))));
      break;
    case "bench":
      // Benchmarks write their scratch traces to the system temporary folder.
      output(Deno.env.get("TMPDIR") ?? "/tmp");
      if (typeof flags.calibrate === "string") output(dirname(resolve(flags.calibrate)));
      break;
  }
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
      if (!parsed.help) permissions = permissionsFor(command, parsed.positional, parsed.flags);
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
