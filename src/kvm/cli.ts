// `tscmig kvm …`: the real-KVM backend's commands. `info` reports what this host's /dev/kvm offers
// and whether it behaves; `check` cross-checks the emulated model against real KVM.

import type { Command } from "commander";
import { kvmInfo, renderKvmInfo } from "../shared/hypervisor/kvm/info.js";

export function kvmCommand(kvm: Command, out: (s: string) => void): void {
  kvm.description("the real-KVM backend: what /dev/kvm offers here, and the model checked against it");
  kvm
    .command("info")
    .description("open /dev/kvm, list the capabilities the backend uses, run the guest once, say what works")
    .option("--device <path>", "the KVM device", "/dev/kvm")
    .option("--json", "machine-readable output")
    .action(async (o: { device: string; json?: boolean }) => {
      const r = await kvmInfo({ device: o.device });
      out(o.json === true ? `${JSON.stringify(r, null, 2)}\n` : renderKvmInfo(r));
      if (!r.verdict.usable) process.exitCode = 1;
    });
}
