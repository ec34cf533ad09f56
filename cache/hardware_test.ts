import { deepStrictEqual as assertEquals, ok, rejects, throws } from "node:assert";
import { HARDWARE_PRESETS, loadHardware, validateHardware } from "./hardware.ts";

Deno.test("hardware validation names the bad field", async () => {
  const base = {
    name: "x",
    bandwidth_gb_s: 10,
    latency_us: 5,
    expert_ms: 1,
    attention_ms_per_layer: 1,
  };
  throws(() => validateHardware({ ...base, bandwidth_gb_s: 0 }, "f.json"), {
    message: 'f.json field "bandwidth_gb_s" must be a positive number, got 0.',
  });
  throws(() => validateHardware({ ...base, latency_us: "5" }, "f.json"), {
    message: 'f.json field "latency_us" must be a non-negative number, got "5".',
  });
  throws(
    () => validateHardware({ ...base, uploads_overlap_compute: "no" }, "hw.json"),
    /hw.json field "uploads_overlap_compute" must be true or false, got "no"\./,
  );
  throws(
    () => validateHardware({ ...base, bandwith_gb_s: 3 }, "f.json"),
    /unknown field "bandwith_gb_s"/,
  );
  const { name: _name, ...nameless } = base;
  throws(() => validateHardware(nameless, "f.json"), {
    message: 'f.json lacks the required field "name".',
  });
  const { expert_ms: _e, ...noCompute } = base;
  throws(() => validateHardware(noCompute, "f.json"), /needs either "expert_ms"/);
  await rejects(loadHardware("pcie9"), /--hardware takes pcie3, pcie4, pcie5/);
  await rejects(loadHardware("/nowhere/hw.json"), {
    message:
      "--hardware file /nowhere/hw.json does not exist; give a preset (pcie3, pcie4, pcie5, nvlink-c2c, phone-ufs, phone-unified) or a JSON file.",
  });
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/hw.json`, JSON.stringify({ ...base, name: "lab" }));
  assertEquals((await loadHardware(`${dir}/hw.json`)).name, "lab");
  await Deno.writeTextFile(`${dir}/bad.json`, "{");
  await rejects(loadHardware(`${dir}/bad.json`), /bad.json is not valid JSON/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("hardware: every preset gives its CPU's roofline; a file gives both CPU fields or neither", () => {
  for (const preset of Object.values(HARDWARE_PRESETS)) {
    ok(preset.cpu_memory_gb_s! > 0 && preset.cpu_tflops! > 0, preset.name);
    ok(preset.source!.includes("CPU"), preset.name);
  }
  const base = {
    name: "lab",
    bandwidth_gb_s: 1,
    latency_us: 0,
    expert_ms: 1,
    attention_ms_per_layer: 1,
  };
  throws(() => validateHardware({ ...base, cpu_memory_gb_s: 50 }, "f.json"), {
    message:
      'f.json gives only one of "cpu_memory_gb_s" and "cpu_tflops"; the CPU\'s roofline needs both.',
  });
  throws(
    () => validateHardware({ ...base, cpu_expert_ms: -1 }, "f.json"),
    /"cpu_expert_ms" must be a non-negative number/,
  );
  assertEquals(validateHardware({ ...base, cpu_expert_ms: 4 }, "f.json").cpu_expert_ms, 4);
});
