// `tscmig kvm …`: the real-KVM backend's commands. `info` reports what this host's /dev/kvm offers
// and whether it behaves; `check` cross-checks the emulated model against real KVM. Both take the
// device as `--kvm-device`, the daemon's name for it, so one value works for both.

import { type Command, Option } from "commander";
import { examples, pathFlag } from "../cli/flags.js";
import { parseDurationNs } from "../daemon/config-parsers.js";
import { RealScheduler } from "../shared/platform/index.js";
import { KVM_DEVICE_PATH } from "../shared/hypervisor/kvm/device.js";
import { kvmInfo, renderKvmInfo } from "../shared/hypervisor/kvm/info.js";
import { CHECK_POLICIES, type CheckPolicy, renderCheck, runCheck } from "./check.js";

const SIGNED = { min: -1_000_000_000_000n, max: 1_000_000_000_000n };

function list(text: string, flag: string, signed: boolean): bigint[] {
  const items = text.split(",").map((x) => x.trim()).filter((x) => x.length > 0);
  if (items.length === 0 || items.length > 32) throw new Error(`${flag}: give 1..32 comma-separated durations`);
  return items.map((x) => {
    const ns = signed ? parseDurationNs(x, SIGNED) : parseDurationNs(x, { min: 0n, max: 10_000_000_000n });
    return ns;
  });
}

/**
 * `--kvm-device`, and `--device`, its name before the commands took the daemon's: still accepted
 * (hidden from the help, with a note on stderr), never together with `--kvm-device`.
 */
function withDevice(cmd: Command): Command {
  return cmd
    .addOption(new Option("--kvm-device <path>", "the KVM device (as the daemon's --kvm-device)").default(KVM_DEVICE_PATH).argParser(pathFlag))
    .addOption(new Option("--device <path>", "deprecated name of --kvm-device").hideHelp().argParser(pathFlag).conflicts("kvmDevice"));
}

function deviceOf(o: { kvmDevice: string; device?: string }): string {
  if (o.device === undefined) return o.kvmDevice;
  process.stderr.write("tscmig: --device is deprecated; use --kvm-device\n");
  return o.device;
}

export function kvmCommand(kvm: Command, out: (s: string) => void): void {
  kvm.description("the real-KVM backend: what /dev/kvm offers here, and the model checked against it");
  const info = withDevice(kvm.command("info").description("open the KVM device, list the capabilities the backend uses, run the guest once, say what works"))
    .option("--json", "machine-readable output")
    .action(async (o: { kvmDevice: string; device?: string; json?: boolean }) => {
      const r = await kvmInfo({ device: deviceOf(o) });
      out(o.json === true ? `${JSON.stringify(r, null, 2)}\n` : renderKvmInfo(r));
      if (!r.verdict.usable) process.exitCode = 1;
    });
  examples(info, ["sudo tscmig kvm info", "tscmig kvm info --kvm-device /dev/kvm --json"]);
  const check = withDevice(kvm.command("check"))
    .description("restore the same snapshots on the emulated model and on real KVM (each policy, blackouts, skews) and compare what the guest read")
    .option("--vcpus <n>", "vCPUs of the checked VMs (1..64)", "2")
    .option("--policies <list>", `subset of ${CHECK_POLICIES.join(",")}`, CHECK_POLICIES.join(","))
    .option("--blackouts <list>", "blackouts, comma-separated (≤ 10 s each)", "0,1ms,10ms,100ms,1s")
    .option("--skews <list>", "destination realtime skews, comma-separated", "0,1ms,-1ms,1s,-1s")
    .option("--quick", "blackouts 0,10ms and skews 0,1ms,-1ms")
    .option("--json", "machine-readable output")
    .action(async (o: { kvmDevice: string; device?: string; vcpus: string; policies: string; blackouts: string; skews: string; quick?: boolean; json?: boolean }) => {
      const vcpus = Number(o.vcpus);
      if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > 64) throw new Error("--vcpus must be an integer in 1..64");
      const policies = o.policies.split(",").map((x) => x.trim());
      for (const p of policies) if (!(CHECK_POLICIES as readonly string[]).includes(p)) throw new Error(`--policies: unknown policy ${p}`);
      const r = await runCheck({
        device: deviceOf(o),
        vcpus,
        policies: policies as CheckPolicy[],
        blackoutsNs: list(o.quick === true ? "0,10ms" : o.blackouts, "--blackouts", false),
        skewsNs: list(o.quick === true ? "0,1ms,-1ms" : o.skews, "--skews", true),
        scheduler: new RealScheduler(),
        progress: (line) => process.stderr.write(`kvm check: ${line}\n`),
      });
      out(o.json === true ? `${JSON.stringify(r, null, 2)}\n` : renderCheck(r));
      if (!r.goal.met || r.doorbellExactlyOnce.ok !== r.doorbellExactlyOnce.of || r.stoppedExactlyOnce.ok !== r.stoppedExactlyOnce.of) process.exitCode = 1;
    });
  examples(check, ["sudo tscmig kvm check --quick", "sudo tscmig kvm check --kvm-device /dev/kvm --policies advance,kvm-realtime --json"]);
}
