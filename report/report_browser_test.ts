/**
 * Opens a report in headless Chromium and checks that every figure rendered:
 * no broken images, every SVG with a non-empty size, no console errors. The
 * screenshot is kept in out/test-artifacts/report.png for a person to look at.
 *
 * The page is checked by a copy of the report with a small script appended
 * that writes its findings into the DOM, which `--dump-dom` then prints: no
 * debugging port or network is needed.
 */
import assert from "node:assert/strict";
import { writeSyntheticTrace } from "../trace/synthetic.ts";
import { runCli } from "../tests/cli_helpers.ts";

const ARTIFACTS = new URL("../out/test-artifacts/", import.meta.url).pathname;

/** Put first in <head>, so that it hears a frame that runs before the page has loaded. */
const LISTEN_SCRIPT = `<script>
const messages = [];
window.addEventListener("message", (event) => messages.push(String(event.data)));
</script>`;

const CHECK_SCRIPT = `<script>
window.addEventListener("load", () => setTimeout(() => {
  const images = [...document.images];
  const broken = images.filter((i) => !i.complete || i.naturalWidth === 0).map((i) => i.alt);
  const sizes = images.map((i) => [i.alt, i.naturalWidth, i.naturalHeight]);
  const sections = [...document.querySelectorAll("section")].map((s) => [s.id, s.innerText.trim().length]);
  document.body.setAttribute("data-check", JSON.stringify({ images: images.length, broken, sizes, sections, messages }));
}, 1000));
</script>`;

/**
 * Appended to token_colouring.html: if any of it ran, it would tell the
 * report's page, which the check script listens to.
 */
const HOSTILE_COLOURING = `<script>parent.postMessage("script ran", "*")</script>
<img src="x" onerror="parent.postMessage('onerror ran', '*')">`;

async function chromium(): Promise<string | null> {
  for (const name of ["chromium", "chromium-browser", "google-chrome"]) {
    try {
      const { success } = await new Deno.Command("which", {
        args: [name],
        stdout: "null",
        stderr: "null",
      }).output();
      if (success) return name;
    } catch {
      // try the next name
    }
  }
  return null;
}

async function runChromium(
  browser: string,
  args: string[],
): Promise<{ stdout: string; stderr: string }> {
  const profile = await Deno.makeTempDir({ prefix: "moetrace-chromium-" });
  try {
    const { stdout, stderr } = await new Deno.Command(browser, {
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        `--user-data-dir=${profile}`,
        "--enable-logging=stderr",
        "--v=0",
        ...args,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const d = new TextDecoder();
    return { stdout: d.decode(stdout), stderr: d.decode(stderr) };
  } finally {
    await Deno.remove(profile, { recursive: true }).catch(() => {});
  }
}

// Found once at load so that a machine without Chromium shows the test as ignored, with why.
const browser = await chromium();
if (!browser) console.log("ignored: Chromium is not installed (apt-get install chromium)");

Deno.test({
  name: "the report renders every figure in headless Chromium without console errors",
  ignore: browser === null,
  fn: async () => {
    if (!browser) throw new Error("Chromium is not installed");
    const dir = await Deno.makeTempDir({ prefix: "moetrace-report-" });
    await writeSyntheticTrace(`${dir}/trace`, {
      stickiness: 0.4,
      probs: true,
      lookahead: 1,
      numLayers: 4,
      tokensPerDoc: 60,
      domains: [{ name: "ArXiv", docs: 6 }, { name: "Github", docs: 6 }],
      seed: 2,
    });
    for (
      const args of [
        ["analyze", `${dir}/trace`, "--out", `${dir}/analysis`, "--bootstrap", "50"],
        [
          "simulate",
          `${dir}/trace`,
          "--out",
          `${dir}/simulation`,
          "--policy",
          "lru,belady",
          "--capacity",
          "2,4,8",
        ],
        ["hostile-colouring"],
        [
          "report",
          "--analysis",
          `${dir}/analysis`,
          "--simulation",
          `${dir}/simulation`,
          "--out",
          `${dir}/report.html`,
        ],
      ]
    ) {
      if (args[0] === "hostile-colouring") {
        const path = `${dir}/analysis/token_colouring.html`;
        await Deno.writeTextFile(path, (await Deno.readTextFile(path)) + HOSTILE_COLOURING);
        continue;
      }
      const result = await runCli(args);
      assert.equal(result.code, 0, `${args[0]}: ${result.stderr}`);
    }
    const html = await Deno.readTextFile(`${dir}/report.html`);
    assert.doesNotMatch(
      html,
      /<script|https?:\/\/(?!www\.w3\.org)/,
      "self-contained: no scripts, no remote URLs",
    );
    assert.match(html, /<meta http-equiv="Content-Security-Policy" content="default-src 'none';/);
    // The check script is a script: the checked copy drops the policy that would block it, so the
    // colouring's sandbox alone must keep its scripts from running.
    await Deno.writeTextFile(
      `${dir}/checked.html`,
      html.replace(/<meta http-equiv="Content-Security-Policy"[^>]*>/, "")
        .replace("<head>", `<head>${LISTEN_SCRIPT}`)
        .replace("</body>", `${CHECK_SCRIPT}</body>`),
    );

    const dom = await runChromium(browser, [
      "--virtual-time-budget=10000",
      "--dump-dom",
      `file://${dir}/checked.html`,
    ]);
    const match = /data-check="([^"]*)"/.exec(dom.stdout);
    assert.ok(match, `the check script did not run; stderr: ${dom.stderr.slice(-500)}`);
    const check = JSON.parse(match[1]!.replaceAll("&quot;", '"').replaceAll("&amp;", "&"));
    assert.ok(check.images >= 5, `expected the figures as images, got ${check.images}`);
    assert.deepEqual(check.broken, [], "broken images");
    assert.deepEqual(check.messages, [], "a script in token_colouring.html ran");
    for (const [alt, width, height] of check.sizes) {
      assert.ok(width > 50 && height > 50, `${alt} is ${width}×${height}`);
    }
    for (const [id, length] of check.sections) assert.ok(length > 40, `section ${id} is empty`);
    const consoleErrors = dom.stderr.split("\n").filter((l) =>
      /CONSOLE|Uncaught|ERROR:.*(page|console)/i.test(l) && /error/i.test(l)
    );
    assert.deepEqual(consoleErrors, [], "console errors");

    await Deno.mkdir(ARTIFACTS, { recursive: true });
    await runChromium(browser, [
      "--hide-scrollbars",
      "--window-size=1280,6000",
      `--screenshot=${ARTIFACTS}report.png`,
      `file://${dir}/report.html`,
    ]);
    const png = await Deno.stat(`${ARTIFACTS}report.png`);
    assert.ok(png.size > 20_000, "the screenshot has content");
    await Deno.remove(dir, { recursive: true });
  },
});
