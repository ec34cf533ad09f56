/**
 * The WebGPU context every kernel receives: device, a buffer pool that counts
 * bytes against the device limits, a pipeline cache keyed by program name and
 * variant (never by runtime shapes), and a `Recorder` that collects dispatches
 * with their uniforms into one arena so that a whole forward pass is one
 * compute pass and one submit.
 *
 * Binding convention of every kernel: binding 0 is its uniform block, then
 * the storage buffers in the order the kernel lists them.
 */
import { DataError, messageOf } from "../common/errors.ts";

export interface GpuContext {
  readonly device: GPUDevice;
  /** Largest storage binding and largest buffer, in bytes (from the adapter). */
  readonly maxBinding: number;
  readonly maxBuffer: number;
  readonly pool: BufferPool;
  readonly pipelines: Map<string, GPUComputePipeline>;
  /** Whether the device has `shader-f16`. */
  readonly hasF16: boolean;
  /** Adapter description, for benchmark output. */
  readonly adapterName: string;
  /** Counters: mapAsync readbacks so far (each costs ~10 ms on lavapipe), weights uploaded in pieces. */
  readonly stats: { readbacks: number; splitWeights: number };
  /** Whether kernels may read through textures (default true; false forces the storage-buffer kernels, for tests). */
  readonly textures: boolean;
  /**
   * The limits weights are split against (weights.ts): the largest storage
   * binding in bytes and texture side in texels. The device's own, or lower
   * ones assumed by `createGpuContext`'s `weightLimits` so that the splitting
   * of tensors past a binding or texture runs on any machine.
   */
  readonly weightLimits: WeightLimits;
}

/** Largest weight binding (bytes) and texture side (texels) the engine assumes. */
export interface WeightLimits {
  binding: number;
  texture: number;
}

/** Creates a device with the adapter's own limits; no adapter is a DataError naming the fix. */
export async function createGpuContext(
  options: { textures?: boolean; weightLimits?: Partial<WeightLimits> } = {},
): Promise<GpuContext> {
  const gpu = (globalThis.navigator as { gpu?: GPU }).gpu;
  let adapter: GPUAdapter | null = null;
  try {
    adapter = gpu ? await gpu.requestAdapter({ powerPreference: "high-performance" }) : null;
  } catch (error) {
    throw new DataError(
      `Requesting a WebGPU adapter failed (${
        messageOf(error)
      }); install a GPU driver, or on Linux \`apt-get install mesa-vulkan-drivers\` for a software one.`,
    );
  }
  if (adapter === null) {
    throw new DataError(
      "No WebGPU adapter is available; install a GPU driver with Vulkan, Metal or DirectX 12 support, or on Linux run `apt-get install mesa-vulkan-drivers` for a software one.",
    );
  }
  const hasF16 = adapter.features.has("shader-f16");
  const l = adapter.limits;
  const device = await adapter.requestDevice({
    requiredFeatures: [
      ...(hasF16 ? ["shader-f16" as const] : []),
      ...(adapter.features.has("timestamp-query") ? ["timestamp-query" as const] : []),
    ],
    requiredLimits: {
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxBufferSize: l.maxBufferSize,
      maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
      maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
      maxTextureDimension2D: l.maxTextureDimension2D,
    },
  });
  device.addEventListener("uncapturederror", (event) => {
    // A WebGPU validation error is a bug in the engine, never the user's: make it loud.
    console.error(`WebGPU error: ${(event as GPUUncapturedErrorEvent).error.message}`);
  });
  const maxBinding = Math.min(l.maxStorageBufferBindingSize, l.maxBufferSize);
  const info = (adapter as { info?: GPUAdapterInfo }).info;
  return {
    device,
    maxBinding,
    maxBuffer: l.maxBufferSize,
    pool: new BufferPool(device, maxBinding),
    pipelines: new Map(),
    hasF16,
    adapterName: info?.description || info?.vendor || "unknown adapter",
    textures: options.textures ?? true,
    stats: { readbacks: 0, splitWeights: 0 },
    weightLimits: {
      binding: Math.min(maxBinding, options.weightLimits?.binding ?? Infinity),
      texture: Math.min(l.maxTextureDimension2D, options.weightLimits?.texture ?? Infinity),
    },
  };
}

/**
 * All GPU buffers and textures come from here; it refuses bindings over the
 * device limit and counts bytes, in all and per group (allocations made inside
 * `grouped`), so that a claim such as "offloading keeps only the expert slots
 * on the GPU" is a number the pool counted.
 */
export class BufferPool {
  #device: GPUDevice;
  #maxBinding: number;
  /** Live buffers and textures, with their counted size and group. */
  #live = new Map<GPUBuffer | GPUTexture, { bytes: number; group: string | null }>();
  #group: string | null = null;
  bytes = 0;
  peakBytes = 0;
  /** Live bytes per group name. */
  readonly groupBytes = new Map<string, number>();

  constructor(device: GPUDevice, maxBinding: number) {
    this.#device = device;
    this.#maxBinding = maxBinding;
  }

  /** A storage buffer (copy src/dst too), size rounded up to 16 bytes. */
  storage(label: string, bytes: number): GPUBuffer {
    return this.create(
      label,
      bytes,
      GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
    );
  }

  create(label: string, bytes: number, usage: number): GPUBuffer {
    const size = Math.max(16, Math.ceil(bytes / 16) * 16);
    if (size > this.#maxBinding) {
      throw new DataError(
        `GPU buffer ${label} needs ${size} bytes (${
          (size / 2 ** 20).toFixed(1)
        } MiB), more than the device's ${this.#maxBinding}-byte binding limit; this device cannot hold it in one binding.`,
      );
    }
    const buffer = this.#device.createBuffer({ label, size, usage });
    this.#count(buffer, size);
    return buffer;
  }

  /** Runs `fn` with every allocation it makes counted under `group` as well. */
  grouped<T>(group: string, fn: () => T): T {
    const outer = this.#group;
    this.#group = group;
    try {
      return fn();
    } finally {
      this.#group = outer;
    }
  }

  #count(resource: GPUBuffer | GPUTexture, bytes: number): void {
    this.#live.set(resource, { bytes, group: this.#group });
    this.bytes += bytes;
    this.peakBytes = Math.max(this.peakBytes, this.bytes);
    if (this.#group !== null) {
      this.groupBytes.set(this.#group, (this.groupBytes.get(this.#group) ?? 0) + bytes);
    }
  }

  #uncount(resource: GPUBuffer | GPUTexture): boolean {
    const entry = this.#live.get(resource);
    if (entry === undefined) return false;
    this.#live.delete(resource);
    this.bytes -= entry.bytes;
    if (entry.group !== null) {
      this.groupBytes.set(entry.group, this.groupBytes.get(entry.group)! - entry.bytes);
    }
    return true;
  }

  /** A storage buffer holding `data`. */
  upload(label: string, data: ArrayBufferView): GPUBuffer {
    const buffer = this.storage(label, data.byteLength);
    this.#device.queue.writeBuffer(
      buffer,
      0,
      data.buffer as ArrayBuffer,
      data.byteOffset,
      data.byteLength,
    );
    return buffer;
  }

  /** An rgba32float texture of width × height texels (sampled by textureLoad, filled by copies). */
  texture(
    label: string,
    width: number,
    height: number,
    data?: Float32Array | Uint16Array,
    storage = false,
    format: "rgba32float" | "rgba16float" | "rg32uint" = "rgba32float",
  ): GPUTexture {
    const texelBytes = format === "rgba32float" ? 16 : 8;
    const texture = this.#device.createTexture({
      label,
      size: [width, height],
      format,
      usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_DST |
        (storage ? GPUTextureUsage.STORAGE_BINDING : 0),
    });
    this.#count(texture, width * height * texelBytes);
    if (data) {
      this.#device.queue.writeTexture({ texture }, data.buffer as ArrayBuffer, {
        offset: data.byteOffset,
        bytesPerRow: width * texelBytes,
      }, [width, height]);
    }
    return texture;
  }

  /** Destroys a buffer or texture of this pool and stops counting it. */
  release(resource: GPUBuffer | GPUTexture): void {
    if (this.#uncount(resource)) resource.destroy();
  }

  releaseAll(): void {
    for (const r of [...this.#live.keys()]) this.release(r);
  }
}

/** A compiled program: the cache key names the kernel and its variant, never runtime shapes. */
export function pipeline(ctx: GpuContext, key: string, wgsl: () => string): GPUComputePipeline {
  let p = ctx.pipelines.get(key);
  if (p === undefined) {
    const code = wgsl();
    const module = ctx.device.createShaderModule({ label: key, code });
    // A shader that does not compile is an engine bug: print the compiler's words.
    module.getCompilationInfo().then((info) => {
      for (const m of info.messages) {
        if (m.type === "error") {
          console.error(`WGSL error in ${key}:${m.lineNum}:${m.linePos}: ${m.message}`);
        }
      }
    });
    p = ctx.device.createComputePipeline({
      label: key,
      layout: "auto",
      compute: { module, entryPoint: "main" },
    });
    ctx.pipelines.set(key, p);
  }
  return p;
}

/** A storage buffer or a sampled texture view, bound in order after the uniforms. */
export type Binding = GPUBuffer | GPUTextureView;

interface Dispatch {
  kind: "dispatch";
  section: string;
  pipeline: GPUComputePipeline;
  buffers: Binding[];
  uniformOffset: number;
  uniformBytes: number;
  workgroups: [number, number, number];
}

/** A buffer → texture copy between compute passes (activations read through the texture unit). */
interface Copy {
  kind: "copy";
  section: string;
  buffer: GPUBuffer;
  offset: number;
  bytesPerRow: number;
  texture: GPUTexture;
  width: number;
  rows: number;
}

/**
 * A host write between two dispatches (streamed experts, expert_stream.ts):
 * `submit` submits what came before, calls `write` (queue.writeTexture /
 * writeBuffer, which the queue orders after that submission), and goes on.
 */
interface HostWrite {
  kind: "write";
  section: string;
  write: () => void;
}

/**
 * Collects dispatches; `finish()` writes the uniform arena once and creates the
 * bind groups, after which `encode()` can be called any number of times (a decode
 * step re-encodes the same recording with new token positions in storage).
 */
export class Recorder {
  readonly ctx: GpuContext;
  /** Label of the dispatches recorded from now on, for `profile()` (e.g. "layer", "experts"). */
  section = "other";
  #dispatches: (Dispatch | Copy | HostWrite)[] = [];
  #arena = new ArrayBuffer(1 << 16);
  #used = 0;
  #uniform: GPUBuffer | null = null;
  #groups: (GPUBindGroup | null)[] = [];
  readonly #align: number;

  constructor(ctx: GpuContext) {
    this.ctx = ctx;
    this.#align = Math.max(256, ctx.device.limits.minUniformBufferOffsetAlignment);
  }

  get size(): number {
    return this.#dispatches.length;
  }

  /** Adds one dispatch; `uniforms` are u32/i32/f32 words given as [value, type] or plain u32. */
  dispatch(
    pipeline: GPUComputePipeline,
    uniforms: readonly (number | { f32: number })[],
    buffers: Binding[],
    workgroups: [number, number?, number?],
  ): void {
    const [x, y = 1, z = 1] = workgroups;
    if (x === 0 || y === 0 || z === 0) return;
    const limit = this.ctx.device.limits.maxComputeWorkgroupsPerDimension;
    if (x > limit || y > limit || z > limit) {
      throw new Error(
        `Dispatch ${pipeline.label} of [${x}, ${y}, ${z}] workgroups exceeds ${limit} per dimension.`,
      );
    }
    const bytes = Math.max(16, Math.ceil(uniforms.length * 4 / 16) * 16);
    const offset = Math.ceil(this.#used / this.#align) * this.#align;
    if (offset + bytes > this.#arena.byteLength) {
      const bigger = new ArrayBuffer(Math.max(this.#arena.byteLength * 2, offset + bytes));
      new Uint8Array(bigger).set(new Uint8Array(this.#arena));
      this.#arena = bigger;
    }
    const view = new DataView(this.#arena, offset, bytes);
    uniforms.forEach((u, i) => {
      if (typeof u === "number") view.setUint32(i * 4, u >>> 0, true);
      else view.setFloat32(i * 4, u.f32, true);
    });
    this.#used = offset + bytes;
    this.#dispatches.push({
      kind: "dispatch",
      section: this.section,
      pipeline,
      buffers,
      uniformOffset: offset,
      uniformBytes: bytes,
      workgroups: [x, y, z],
    });
  }

  /**
   * Copies `rows` rows of `width` rgba32f texels (row stride = width·16 bytes, a
   * multiple of 256) from the start of `buffer` into the top of `texture`, between
   * compute passes: activations that matmul_tex.ts reads through the texture unit.
   */
  copyToTexture(buffer: GPUBuffer, texture: GPUTexture, width: number, rows: number): void {
    if (rows === 0) return;
    this.#dispatches.push({
      kind: "copy",
      section: this.section,
      buffer,
      offset: 0,
      bytesPerRow: width * 16,
      texture,
      width,
      rows,
    });
  }

  /** Records a host write (queue.writeTexture/writeBuffer) to run between the dispatches before and after it. */
  hostWrite(write: () => void): void {
    this.#dispatches.push({ kind: "write", section: this.section, write });
  }

  finish(): this {
    const device = this.ctx.device;
    this.#uniform = device.createBuffer({
      label: "uniform arena",
      size: Math.max(256, Math.ceil(this.#used / 16) * 16),
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    device.queue.writeBuffer(this.#uniform, 0, this.#arena, 0, Math.ceil(this.#used / 4) * 4);
    this.#groups = this.#dispatches.map((d) =>
      d.kind !== "dispatch" ? null : device.createBindGroup({
        layout: d.pipeline.getBindGroupLayout(0),
        entries: [
          {
            binding: 0,
            resource: { buffer: this.#uniform!, offset: d.uniformOffset, size: d.uniformBytes },
          },
          ...d.buffers.map((b, i) => ({
            binding: i + 1,
            resource: b instanceof GPUBuffer ? { buffer: b } : b,
          })),
        ],
      })
    );
    return this;
  }

  /** Encodes every dispatch, in order, into one compute pass (a recording without host writes). */
  encode(encoder: GPUCommandEncoder): void {
    if (this.#dispatches.some((d) => d.kind === "write")) {
      throw new Error("Recorder.encode of a recording with host writes; submit it");
    }
    this.#encodeRange(encoder, 0, this.#dispatches.length);
  }

  #encodeRange(encoder: GPUCommandEncoder, from: number, to: number): void {
    if (this.#uniform === null) throw new Error("Recorder.encode before finish");
    let pass: GPUComputePassEncoder | null = null;
    this.#dispatches.slice(from, to).forEach((d, j) => {
      const i = from + j;
      if (d.kind === "write") return;
      if (d.kind === "copy") {
        pass?.end();
        pass = null;
        encoder.copyBufferToTexture(
          { buffer: d.buffer, offset: d.offset, bytesPerRow: d.bytesPerRow },
          { texture: d.texture },
          [d.width, d.rows],
        );
        return;
      }
      pass ??= encoder.beginComputePass();
      pass.setPipeline(d.pipeline);
      pass.setBindGroup(0, this.#groups[i]!);
      pass.dispatchWorkgroups(...d.workgroups);
    });
    (pass as GPUComputePassEncoder | null)?.end();
  }

  /** Encodes the recording into one command buffer and submits it (a pass, or one decode step); one per stretch between host writes. */
  submit(): void {
    const device = this.ctx.device;
    let from = 0;
    this.#dispatches.forEach((d, i) => {
      if (d.kind !== "write") return;
      if (i > from) {
        const encoder = device.createCommandEncoder();
        this.#encodeRange(encoder, from, i);
        device.queue.submit([encoder.finish()]);
      }
      d.write();
      from = i + 1;
    });
    const encoder = device.createCommandEncoder();
    this.#encodeRange(encoder, from, this.#dispatches.length);
    device.queue.submit([encoder.finish()]);
  }

  /**
   * Runs the recording once with one compute pass per dispatch and GPU
   * timestamps around each; returns milliseconds per program name (cache key
   * up to its first ":"), copies included as "copy". Needs `timestamp-query`.
   */
  async profile(): Promise<{ kernels: Map<string, number>; sections: Map<string, number> }> {
    const device = this.ctx.device;
    if (this.#dispatches.some((d) => d.kind === "write")) {
      throw new Error("Recorder.profile of a recording with host writes (streamed experts)");
    }
    const n = this.#dispatches.length;
    const querySet = device.createQuerySet({ type: "timestamp", count: 2 * n });
    const resolve = device.createBuffer({
      size: 16 * n,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    const encoder = device.createCommandEncoder();
    this.#dispatches.forEach((d, i) => {
      if (d.kind === "write") return;
      if (d.kind === "copy") {
        encoder.copyBufferToTexture(
          { buffer: d.buffer, offset: d.offset, bytesPerRow: d.bytesPerRow },
          { texture: d.texture },
          [d.width, d.rows],
        );
        return;
      }
      const pass = encoder.beginComputePass({
        timestampWrites: {
          querySet,
          beginningOfPassWriteIndex: 2 * i,
          endOfPassWriteIndex: 2 * i + 1,
        },
      });
      pass.setPipeline(d.pipeline);
      pass.setBindGroup(0, this.#groups[i]!);
      pass.dispatchWorkgroups(...d.workgroups);
      pass.end();
    });
    encoder.resolveQuerySet(querySet, 0, 2 * n, resolve, 0);
    device.queue.submit([encoder.finish()]);
    const [data] = await readBack(this.ctx, [{ buffer: resolve, bytes: 16 * n }]);
    const t = new BigUint64Array(data!);
    const kernels = new Map<string, number>(), sections = new Map<string, number>();
    this.#dispatches.forEach((d, i) => {
      if (d.kind !== "dispatch") return; // encoder timestamps around copies are not supported everywhere
      const name = d.pipeline.label.split(":").slice(0, 2).join(":");
      const ns = t[2 * i + 1]! - t[2 * i]!;
      const ms = ns > 0n && ns < 10n ** 12n ? Number(ns) / 1e6 : 0;
      kernels.set(name, (kernels.get(name) ?? 0) + ms);
      sections.set(d.section, (sections.get(d.section) ?? 0) + ms);
    });
    querySet.destroy();
    resolve.destroy();
    return { kernels, sections };
  }

  destroy(): void {
    this.#uniform?.destroy();
    this.#uniform = null;
  }
}

/** Copies byte ranges of GPU buffers out with one mapAsync. */
export async function readBack(
  ctx: GpuContext,
  parts: { buffer: GPUBuffer; offset?: number; bytes: number }[],
  before?: (encoder: GPUCommandEncoder) => void,
): Promise<ArrayBuffer[]> {
  const device = ctx.device;
  const offsets: number[] = [];
  let total = 0;
  for (const p of parts) {
    offsets.push(total);
    total += Math.ceil(p.bytes / 4) * 4;
  }
  const staging = device.createBuffer({
    label: "readback",
    size: Math.max(16, total),
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const encoder = device.createCommandEncoder();
  before?.(encoder);
  parts.forEach((p, i) => {
    const bytes = Math.ceil(p.bytes / 4) * 4;
    if (bytes > 0) encoder.copyBufferToBuffer(p.buffer, p.offset ?? 0, staging, offsets[i]!, bytes);
  });
  device.queue.submit([encoder.finish()]);
  ctx.stats.readbacks++;
  await staging.mapAsync(GPUMapMode.READ);
  const mapped = staging.getMappedRange();
  const out = parts.map((p, i) => mapped.slice(offsets[i]!, offsets[i]! + p.bytes));
  staging.unmap();
  staging.destroy();
  return out;
}
