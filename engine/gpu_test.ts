/** The no-adapter error names the fix; the buffer pool refuses bindings over the device limit. */
import assert from "node:assert/strict";
import { DataError } from "../common/errors.ts";
import { createGpuContext } from "./gpu.ts";

Deno.env.set("XDG_RUNTIME_DIR", Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp");

Deno.test("no WebGPU adapter is a DataError naming the fix", async () => {
  const gpu = navigator.gpu;
  Object.defineProperty(navigator, "gpu", {
    value: { requestAdapter: () => Promise.resolve(null) },
    configurable: true,
  });
  try {
    await assert.rejects(createGpuContext(), (e: unknown) => {
      assert.ok(e instanceof DataError);
      assert.equal(
        e.message,
        "No WebGPU adapter is available; install a GPU driver with Vulkan, Metal or DirectX 12 support, or on Linux run `apt-get install mesa-vulkan-drivers` for a software one.",
      );
      return true;
    });
  } finally {
    Object.defineProperty(navigator, "gpu", { value: gpu, configurable: true });
  }
});

Deno.test("the pool counts bytes and refuses a binding over the device limit", async () => {
  const ctx = await createGpuContext();
  try {
    const before = ctx.pool.bytes;
    const b = ctx.pool.storage("small", 1000);
    assert.equal(ctx.pool.bytes - before, 1008);
    ctx.pool.release(b);
    assert.equal(ctx.pool.bytes, before);
    assert.throws(
      () => ctx.pool.storage("huge", ctx.maxBinding + 16),
      /^DataError: GPU buffer huge needs \d+ bytes \(\d+\.\d MiB\), more than the device's \d+-byte binding limit; this device cannot hold it in one binding\.$/,
    );
  } finally {
    ctx.pool.releaseAll();
    ctx.device.destroy();
  }
});
