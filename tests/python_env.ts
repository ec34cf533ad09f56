/**
 * A Python virtual environment with pyarrow, polars, duckdb and pandas for the
 * notebook-compatibility tests, installed from pip's local wheel mirror only
 * (the public index is unreachable here and pip would wait minutes on it).
 * Python is never a runtime dependency: where it cannot be set up the tests
 * that need it are skipped with the reason printed.
 */
const ROOT = new URL("..", import.meta.url).pathname;
const VENV = `${ROOT}.cache/pyenv`;
const PACKAGES = ["pyarrow", "polars", "duckdb", "pandas"];
const MIRRORS = ["file:///opt/pypi/simple", "file:///opt/pypi-more/simple"];

let cached: Promise<{ python: string } | { reason: string }> | null = null;

async function run(cmd: string, args: string[]): Promise<{ ok: boolean; output: string }> {
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

async function setUp(): Promise<{ python: string } | { reason: string }> {
  const python = `${VENV}/bin/python`;
  const check = ["-c", `import ${PACKAGES.join(", ")}`];
  if ((await run(python, check)).ok) return { python };
  const created = await run("python3", ["-m", "venv", VENV]);
  if (!created.ok) {
    return { reason: `python3 -m venv failed: ${created.output.trim().split("\n").at(-1)}` };
  }
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
  const args = ["-m", "pip", "install", "--quiet", "--index-url", mirrors[0]!];
  for (const m of mirrors.slice(1)) args.push("--extra-index-url", m);
  const installed = await run(python, [...args, ...PACKAGES]);
  if (!installed.ok) {
    return { reason: `pip install failed: ${installed.output.trim().split("\n").at(-1)}` };
  }
  return (await run(python, check)).ok
    ? { python }
    : { reason: "the packages do not import after install" };
}

/** The venv's python, or the reason it cannot be had (computed once per test run). */
export function pythonWithDataTools(): Promise<{ python: string } | { reason: string }> {
  cached ??= setUp();
  return cached;
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
