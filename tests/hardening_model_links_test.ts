/**
 * Symbolic links in a model folder: a file may be a link only when its real
 * path stays inside the folder, or, for a Hugging Face cache snapshot
 * (`models--ORG--NAME/snapshots/REV`, whose files are `../../blobs/HASH`),
 * inside that entry's `blobs`. The launcher grants exactly that `blobs`
 * folder, since Deno checks a link's target against the grant. Anything else
 * is one sentence naming the file, with no byte of the target.
 */
import assert from "node:assert/strict";
import { huggingFaceBlobs } from "../common/fs.ts";
import { openCheckpoint } from "../engine/checkpoint.ts";
import { TextTokenizer } from "../engine/tokenizer.ts";
import { permissionsFor } from "../moetrace.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const FIXTURE = `${ROOT}/fixtures/models/tiny-moe`;
const FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"];
const SECRET = "SECRET-KEY-0123456789";

/** A Hugging Face cache entry for tiny-moe under `dir`: the snapshot folder's path. */
async function fakeHubCache(dir: string): Promise<{ entry: string; snapshot: string }> {
  const entry = `${dir}/hub/models--acme--tiny-moe`;
  const snapshot = `${entry}/snapshots/0123abcd`;
  await Deno.mkdir(`${entry}/blobs`, { recursive: true });
  await Deno.mkdir(snapshot, { recursive: true });
  for (const [i, name] of FILES.entries()) {
    const blob = `blob${i}`;
    await Deno.copyFile(`${FIXTURE}/${name}`, `${entry}/blobs/${blob}`);
    await Deno.symlink(`../../blobs/${blob}`, `${snapshot}/${name}`);
  }
  return { entry, snapshot };
}

/** Runs `moetrace ARGS` through the launcher, as a user would. */
async function launch(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-run", "--allow-read", "--allow-env", `${ROOT}/moetrace.ts`, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder();
  return { code, stdout: text.decode(stdout), stderr: text.decode(stderr) };
}

/** inspect's lines without the two that name the folder. */
function facts(stdout: string): string[] {
  return stdout.split("\n").filter((line) => !/^(model|name)\s/.test(line));
}

Deno.test("huggingFaceBlobs names the blobs of a models-- entry's snapshot, and nothing else", () => {
  assert.equal(huggingFaceBlobs("/c/hub/models--a--b/snapshots/rev"), "/c/hub/models--a--b/blobs");
  assert.equal(huggingFaceBlobs("/c/hub/models--a--b/snapshots/rev/"), "/c/hub/models--a--b/blobs");
  assert.equal(huggingFaceBlobs("/c/hub/datasets--a--b/snapshots/rev"), null);
  assert.equal(huggingFaceBlobs("/c/hub/models--a--b/refs/main"), null);
  assert.equal(huggingFaceBlobs("/c/models/tiny-moe"), null);
});

Deno.test("the launcher grants a snapshot's blobs folder, and only for a snapshot", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "moetrace-hub-" }));
  try {
    const { entry, snapshot } = await fakeHubCache(dir);
    const read = permissionsFor("inspect", snapshot, {}).read;
    assert.ok(read.includes(snapshot) && read.includes(`${entry}/blobs`));
    assert.ok(!read.includes(entry), "the whole cache entry is not granted");
    const capture = permissionsFor("capture", undefined, {
      model: snapshot,
      corpus: `${dir}/c.jsonl`,
      out: `${dir}/t`,
    });
    assert.ok(capture.read.includes(`${entry}/blobs`));
    assert.ok(!capture.write.includes(`${entry}/blobs`));
    assert.ok(!permissionsFor("inspect", FIXTURE, {}).read.some((p) => p.endsWith("/blobs")));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("moetrace inspect reads a Hugging Face cache snapshot under the launcher", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "moetrace-hub-" }));
  try {
    const { snapshot } = await fakeHubCache(dir);
    const direct = await launch(["inspect", FIXTURE]);
    assert.equal(direct.code, 0, direct.stderr);
    const cached = await launch(["inspect", snapshot]);
    assert.equal(cached.code, 0, cached.stderr);
    assert.match(cached.stdout, new RegExp(`^model\\s+${snapshot}$`, "m"));
    // The same model, read through the cache's links.
    assert.deepEqual(facts(cached.stdout), facts(direct.stdout));
    // A link to the snapshot folder itself is followed to its blobs too.
    await Deno.symlink(snapshot, `${dir}/linked`);
    const linked = await launch(["inspect", `${dir}/linked`]);
    assert.equal(linked.code, 0, linked.stderr);
    assert.deepEqual(facts(linked.stdout), facts(direct.stdout));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a snapshot file linked outside the cache entry's blobs is refused in one sentence", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "moetrace-hub-" }));
  try {
    const { entry, snapshot } = await fakeHubCache(dir);
    // A config.json elsewhere on disk (a valid one, so only the link can be refused).
    const config = await Deno.readTextFile(`${FIXTURE}/config.json`);
    await Deno.writeTextFile(`${dir}/outside.json`, config.replace("{", `{"k": "${SECRET}",`));
    await Deno.remove(`${snapshot}/config.json`);
    await Deno.symlink("../../../../outside.json", `${snapshot}/config.json`);
    const result = await launch(["inspect", snapshot]);
    assert.equal(result.code, 1);
    assert.equal(
      result.stderr.trim(),
      `moetrace: ${snapshot}/config.json is a symbolic link (or lies under one) that leaves ${snapshot} and ${entry}/blobs; moetrace reads and writes only inside the folders it was given.`,
    );
    assert.ok(!result.stderr.includes(SECRET) && !result.stderr.includes("outside.json"));
    // A blob that is itself a link out of blobs is refused the same way.
    await Deno.remove(`${snapshot}/config.json`);
    await Deno.symlink("../../blobs/blob0", `${snapshot}/config.json`);
    await Deno.remove(`${entry}/blobs/blob1`);
    await Deno.symlink(`${dir}/outside.json`, `${entry}/blobs/blob1`);
    await assert.rejects(
      () => openCheckpoint(snapshot),
      new RegExp(`^DataError: ${snapshot}/model.safetensors is a symbolic link .* leaves `),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("in a plain model folder a link may stay inside it but not leave it", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "moetrace-links-" }));
  try {
    const model = `${dir}/model`;
    await Deno.mkdir(`${model}/weights`, { recursive: true });
    for (const name of FILES) await Deno.copyFile(`${FIXTURE}/${name}`, `${model}/${name}`);
    // Inside the folder: accepted, and the same tensors as the fixture.
    await Deno.rename(`${model}/model.safetensors`, `${model}/weights/w.safetensors`);
    await Deno.symlink("weights/w.safetensors", `${model}/model.safetensors`);
    const inside = await openCheckpoint(model);
    const reference = await openCheckpoint(FIXTURE);
    assert.deepEqual([...inside.tensors.keys()].sort(), [...reference.tensors.keys()].sort());
    // Leaving it: refused, for weights and for the tokenizer alike.
    await Deno.copyFile(`${FIXTURE}/model.safetensors`, `${dir}/elsewhere.safetensors`);
    await Deno.remove(`${model}/model.safetensors`);
    await Deno.symlink(`${dir}/elsewhere.safetensors`, `${model}/model.safetensors`);
    await assert.rejects(
      () => openCheckpoint(model),
      {
        name: "DataError",
        message:
          `${model}/model.safetensors is a symbolic link (or lies under one) that leaves ${model}; moetrace reads and writes only inside the folders it was given.`,
      },
    );
    await Deno.writeTextFile(`${dir}/secret.json`, `{"model": "${SECRET}"}`);
    await Deno.remove(`${model}/tokenizer.json`);
    await Deno.symlink(`${dir}/secret.json`, `${model}/tokenizer.json`);
    await assert.rejects(
      () => TextTokenizer.load(model),
      (error: Error) =>
        error.name === "DataError" &&
        error.message.startsWith(`${model}/tokenizer.json is a symbolic link`) &&
        !error.message.includes(SECRET),
    );
    // A snapshots/REV folder outside a models-- entry gets no blobs exception.
    const fake = `${dir}/not-a-cache/snapshots/rev`;
    await Deno.mkdir(fake, { recursive: true });
    await Deno.mkdir(`${dir}/not-a-cache/blobs`);
    for (const name of FILES) {
      await Deno.copyFile(`${FIXTURE}/${name}`, `${dir}/not-a-cache/blobs/${name}`);
      await Deno.symlink(`../../blobs/${name}`, `${fake}/${name}`);
    }
    await assert.rejects(() => openCheckpoint(fake), /config\.json is a symbolic link/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a snapshot's tokenizer loads through the cache's links", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "moetrace-hub-" }));
  try {
    const { snapshot } = await fakeHubCache(dir);
    const cached = await TextTokenizer.load(snapshot);
    const direct = await TextTokenizer.load(FIXTURE);
    const text = "The router sends 12 tokens to expert 3.";
    assert.deepEqual(cached.encode(text), direct.encode(text));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
