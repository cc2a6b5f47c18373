// Goal: `tscmig kvm info` and `kvm check` take their device as `--kvm-device`, the daemon's name for
// it, and use the path given (a bad one is named in the typed answer); the old `--device` still works
// (hidden, with a deprecation note) but never together with `--kvm-device`; an empty path is a usage
// error. Method: the built CLI (bin/tscmig.js) as a child process, on a path that does not exist, so
// no /dev/kvm access is needed: the device's open fails before anything else touches KVM.

import { spawn } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ROOT } from "../helpers/daemons.js";
import { childEnv } from "../helpers/proc.js";

const BIN = join(ROOT, "bin", "tscmig.js");
const ABSENT = "/nonexistent/tscmig-kvm";

function tscmig(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: childEnv({}), stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    child.once("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** What `kvm info --json` reports of a device that cannot be opened. */
interface Unavailable {
  device: string;
  available: boolean;
  problem: string | null;
  message: string | null;
}

function expectAbsent(stdout: string): void {
  const r = JSON.parse(stdout) as Unavailable;
  expect(r).toMatchObject({ device: ABSENT, available: false });
  // Without the FFI the open cannot even be tried: the report still names the device.
  if (r.problem === "no_ffi") return console.warn(`kvm info: no FFI here (${r.message ?? ""}); only the device's name is checked`);
  expect(r.problem).toBe("absent");
  expect(r.message).toContain(ABSENT);
}

describe("tscmig kvm --kvm-device", () => {
  it("kvm info opens the device given as --kvm-device and names it when it is absent (exit 1)", async () => {
    const r = await tscmig(["kvm", "info", "--json", "--kvm-device", ABSENT]);
    expect(r.code).toBe(1);
    expectAbsent(r.stdout);
    expect(r.stderr).not.toContain("deprecated");
  });

  it("kvm check takes --kvm-device too: an absent device is a typed error naming it (exit 1)", async () => {
    const r = await tscmig(["kvm", "check", "--quick", "--kvm-device", ABSENT]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^tscmig: (unavailable|permission_denied): kvm check needs a usable KVM device: /m);
    expect(r.stderr).toContain(ABSENT);
  });

  it("still takes the old --device, says it is deprecated, and hides it from the help", async () => {
    const r = await tscmig(["kvm", "info", "--json", "--device", ABSENT]);
    expect(r.code).toBe(1);
    expectAbsent(r.stdout);
    expect(r.stderr).toContain("--device is deprecated; use --kvm-device");
    for (const cmd of ["info", "check"]) {
      const help = await tscmig(["kvm", cmd, "--help"]);
      expect(help.code).toBe(0);
      expect(help.stdout).toContain("--kvm-device <path>");
      expect(help.stdout).not.toMatch(/ --device /);
    }
  });

  it("refuses --device with --kvm-device, and an empty path, as usage errors (exit 2) before opening anything", async () => {
    const both = await tscmig(["kvm", "info", "--kvm-device", ABSENT, "--device", "/dev/kvm"]);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain("cannot be used with option '--kvm-device <path>'");
    const empty = await tscmig(["kvm", "check", "--kvm-device", ""]);
    expect(empty.code).toBe(2);
    expect(empty.stderr).toContain("--kvm-device");
    expect(empty.stdout).toBe("");
  });
});
