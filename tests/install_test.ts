/**
 * README's install command, run as written into a temporary root: the
 * installed `moetrace` runs from any folder, resolves relative paths from
 * that folder, and keeps the launcher's permissions.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { dirname } from "node:path";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));

/** The README line that installs moetrace (it must be on a line of its own). */
async function installLine(): Promise<string[]> {
  const readme = await Deno.readTextFile(`${ROOT}/README.md`);
  const lines = readme.split("\n").filter((l) => l.startsWith("deno install "));
  assert.equal(
    lines.length,
    1,
    "README.md must hold exactly one line beginning with `deno install`",
  );
  return lines[0]!.trim().split(/\s+/);
}

Deno.test("README's install command puts a moetrace on PATH that works from another folder", async () => {
  const [, ...args] = await installLine();
  const root = await Deno.makeTempDir({ prefix: "moetrace-install-" });
  try {
    // The same command, told to install under `root` instead of the user's ~/.deno.
    const install = await new Deno.Command(Deno.execPath(), {
      args: [args[0]!, "--root", root, ...args.slice(1)],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(install.success, new TextDecoder().decode(install.stderr));
    const run = async (cwd: string, argv: string[]) => {
      const out = await new Deno.Command(`${root}/bin/moetrace`, {
        args: argv,
        cwd,
        stdout: "piped",
        stderr: "piped",
        env: { PATH: `${dirname(Deno.execPath())}:${Deno.env.get("PATH") ?? ""}` },
      }).output();
      const d = new TextDecoder();
      return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
    };
    // A relative path means the caller's folder, not the repository's.
    const inspected = await run(`${ROOT}/fixtures`, ["inspect", "models/tiny-moe"]);
    assert.equal(inspected.code, 0, inspected.stderr);
    assert.match(inspected.stdout, /^family +mixtral$/m);
    const missing = await run(root, ["inspect", "models/tiny-moe"]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /models\/tiny-moe is neither a trace/);
    // The launcher's rules hold in the installed command too.
    const comma = await run(root, ["inspect", "a,/etc"]);
    assert.equal(comma.code, 2);
    assert.equal(comma.stderr.trim(), 'moetrace: Paths may not contain a comma, got "a,/etc".');
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
