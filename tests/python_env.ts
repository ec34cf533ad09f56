/**
 * A Python virtual environment with pyarrow, polars, duckdb and pandas for the
 * notebook-compatibility tests, installed from pip's local wheel mirror only
 * (the public index is unreachable here and pip would wait minutes on it).
 * Python is never a runtime dependency: where it cannot be set up the tests
 * that need it are skipped with the reason printed.
 */
const ROOT = new URL("..", import.meta.url).pathname;
const PACKAGES = ["pyarrow", "polars", "duckdb", "pandas"];
const MIRRORS = ["file:///opt/pypi/simple", "file:///opt/pypi-more/simple"];

type Env = { python: string } | { reason: string };
const cached = new Map<string, Promise<Env>>();

/** Runs a command; whether it succeeded and what it printed (stdout then stderr), never a throw. */
export async function runCommand(
  cmd: string,
  args: string[],
): Promise<{ ok: boolean; output: string }> {
  try {
    const { success, stdout, stderr } = await new Deno.Command(cmd, {
      args,
      stdout: "piped",
      stderr: "piped",
    })
      .output();
    const d = new TextDecoder();
    return { ok: success, output: d.decode(stdout) + d.decode(stderr) };
  } catch (error) {
    return { ok: false, output: String(error) };
  }
}

async function setUp(venv: string, packages: string[], modules: string): Promise<Env> {
  const python = `${venv}/bin/python`;
  const check = ["-c", `import ${modules}`];
  if ((await runCommand(python, check)).ok) return { python };
  const mirrors = MIRRORS.filter((m) => {
    try {
      return Deno.statSync(new URL(m).pathname).isDirectory;
    } catch {
      return false;
    }
  });
  if (mirrors.length === 0) {
    return { reason: "pip's local wheel mirror (/opt/pypi) is not on this machine" };
  }
  const created = await runCommand("python3", ["-m", "venv", venv]);
  if (!created.ok) {
    return { reason: `python3 -m venv failed: ${created.output.trim().split("\n").at(-1)}` };
  }
  const args = ["-m", "pip", "install", "--quiet", "--index-url", mirrors[0]!];
  for (const m of mirrors.slice(1)) args.push("--extra-index-url", m);
  const installed = await runCommand(python, [...args, ...packages]);
  if (!installed.ok) {
    return { reason: `pip install failed: ${installed.output.trim().split("\n").at(-1)}` };
  }
  return (await runCommand(python, check)).ok
    ? { python }
    : { reason: `${modules} do not import after install` };
}

/**
 * A venv under .cache/NAME holding `packages` from the local wheel mirror, whose
 * python imports `modules`; or the reason it cannot be had (once per test run).
 */
export function pythonEnv(name: string, packages: string[], modules: string): Promise<Env> {
  let env = cached.get(name);
  if (!env) {
    env = setUp(`${ROOT}.cache/${name}`, packages, modules);
    cached.set(name, env);
  }
  return env;
}

/** The venv's python with the data tools, or the reason it cannot be had. */
export function pythonWithDataTools(): Promise<Env> {
  return pythonEnv("pyenv", PACKAGES, PACKAGES.join(", "));
}

/** Runs a Python script with the venv's python; returns stdout, throws with stderr on failure. */
export async function runPython(
  python: string,
  script: string,
  args: string[] = [],
): Promise<string> {
  const { success, stdout, stderr } = await new Deno.Command(python, {
    args: ["-c", script, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  if (!success) throw new Error(`python failed:\n${d.decode(stderr)}`);
  return d.decode(stdout);
}
