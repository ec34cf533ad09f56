/** Runs the CLI in-process and captures what it prints, for tests. */
import { main } from "../main.ts";

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function runCli(args: string[]): Promise<CliResult> {
  const out: string[] = [];
  const err: string[] = [];
  const { log, error } = console;
  console.log = (...parts: unknown[]) => out.push(parts.join(" "));
  console.error = (...parts: unknown[]) => err.push(parts.join(" "));
  try {
    const code = await main(args);
    return { code, stdout: out.join("\n"), stderr: err.join("\n") };
  } finally {
    console.log = log;
    console.error = error;
  }
}

/** Runs the CLI as a real subprocess with the given Deno permissions. */
export async function runCliProcess(permissions: string[], args: string[]): Promise<CliResult> {
  const command = new Deno.Command(Deno.execPath(), {
    args: ["run", ...permissions, new URL("../main.ts", import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1" },
  });
  const { code, stdout, stderr } = await command.output();
  const decoder = new TextDecoder();
  return { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) };
}

/**
 * A child Deno that takes the lock of `dir` (made if missing) as `command` would, writes the file
 * `marker` beside it when one is named (a stand-in for work in progress), and waits a minute;
 * resolves once it holds the lock. Kill it to leave a stale lock behind.
 */
export async function holdFolderLock(
  dir: string,
  command: string,
  marker?: string,
): Promise<Deno.ChildProcess> {
  const writeMarker = marker === undefined
    ? ""
    : `await Deno.writeTextFile(${JSON.stringify(`${dir}/${marker}`)}, "first");`;
  const fsModule = new URL("../common/fs.ts", import.meta.url).href;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { lockFolder } from ${JSON.stringify(fsModule)};
       await Deno.mkdir(${JSON.stringify(dir)}, { recursive: true });
       await lockFolder(${JSON.stringify(dir)}, ${JSON.stringify(command)});
       ${writeMarker}
       console.log("locked");
       await new Promise((r) => setTimeout(r, 60000));`,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.getReader();
  const { value } = await reader.read();
  if (new TextDecoder().decode(value).trim() !== "locked") {
    throw new Error(`the lock holder for ${dir} did not report holding it`);
  }
  reader.releaseLock();
  return child;
}
