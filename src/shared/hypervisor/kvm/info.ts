// What this host's KVM offers the time-migration backend, and whether it behaves: `tscmig kvm info`
// (and later /v1/host). The capabilities come from KVM_CHECK_EXTENSION; the functional checks run
// the project's guest on one vCPU once (tens of milliseconds, mostly the vCPU thread's start):
// kvmclock gets enabled, KVM_GET_CLOCK gains REALTIME|HOST_TSC once a vCPU ran, and a TSC offset
// set before the run must show in the guest's RDTSC. Some hosts (a nested software virtualiser)
// accept KVM_VCPU_TSC_OFFSET and ignore it: the backend then runs anyway, and says that TSC-offset
// restores are not in effect.

import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { isTscmigError } from "../../errors.js";
import { KVM_CLOCK_HOST_TSC, KVM_CLOCK_REALTIME, KVM_CLOCK_TSC_STABLE } from "../../kvm/set-clock.js";
import { type CapName, exitReasonName, KVM_API_VERSION } from "./abi.js";
import { KVM_DEVICE_PATH, KvmSystem, KvmUnavailable, type KvmOpenProblem } from "./device.js";
import { KvmVm } from "./kvm-vm.js";

export type KvmFlavour = "kvm_intel" | "kvm_amd" | "kvm_pvm" | "unknown";

/** The report. JSON-safe: 64-bit values are decimal strings. */
export interface KvmInfo {
  device: string;
  available: boolean;
  problem: KvmOpenProblem | null;
  message: string | null;
  apiVersion: number | null;
  flavour: KvmFlavour;
  /** KVM modules loaded (/sys/module) and the CPU's virtualisation flag, if any. */
  modules: string[];
  cpuVirtFlag: "vmx" | "svm" | null;
  capabilities: KvmCapabilities | null;
  checks: KvmChecks | null;
  /** What the backend can promise on this host. */
  verdict: { usable: boolean; tscOffsetRestores: "in effect" | "not in effect"; notes: string[] };
}

export interface KvmCapabilities {
  /** KVM_CAP_ADJUST_CLOCK: the KVM_CLOCK_* flags KVM_GET_CLOCK/KVM_SET_CLOCK know. */
  adjustClock: { raw: number; tscStable: boolean; realtime: boolean; hostTsc: boolean };
  kvmclockCtrl: boolean;
  vcpuAttributes: boolean;
  /** KVM_HAS_DEVICE_ATTR(KVM_VCPU_TSC_CTRL, KVM_VCPU_TSC_OFFSET) on a vCPU. */
  tscOffsetAttribute: boolean;
  /** An in-kernel irqchip could be created; the backend injects with KVM_INTERRUPT without one. */
  irqchip: boolean;
  interruptInjection: "KVM_INTERRUPT";
  immediateExit: boolean;
  /** Per-vCPU and per-VM KVM_SET_TSC_KHZ. */
  tscControl: boolean;
  vmTscControl: boolean;
  getTscKhz: boolean;
  recommendedVcpus: number;
  maxVcpus: number;
}

export interface KvmChecks {
  /** The guest ran: it enabled kvmclock, took a sample and HLTed. */
  vcpuRan: boolean;
  exit: string;
  kvmclockEnabled: boolean;
  clockFlagsBeforeRun: string[];
  clockFlagsAfterRun: string[];
  tscKhz: string;
  tscOffset: {
    set: string;
    setAccepted: boolean;
    readBack: string | null;
    /** Guest RDTSC − host TSC after the run (cycles; ~0 when offsets are ignored). */
    guestMinusHostCycles: string | null;
    honoured: boolean;
  };
  durationMs: number;
}

const CHECK_OFFSET = 1n << 40n; // ~7 minutes of cycles at a few GHz: unmistakable in RDTSC

function clockFlagNames(flags: number): string[] {
  const out: string[] = [];
  if ((flags & KVM_CLOCK_TSC_STABLE) !== 0) out.push("TSC_STABLE");
  if ((flags & KVM_CLOCK_REALTIME) !== 0) out.push("REALTIME");
  if ((flags & KVM_CLOCK_HOST_TSC) !== 0) out.push("HOST_TSC");
  return out;
}

/** Which KVM flavour is loaded, from /sys/module (a root other than / for tests). */
export function detectFlavour(root = "/"): { flavour: KvmFlavour; modules: string[]; cpuVirtFlag: "vmx" | "svm" | null } {
  const modules = ["kvm", "kvm_intel", "kvm_amd", "kvm_pvm"].filter((m) => existsSync(join(root, "sys/module", m)));
  const flavour: KvmFlavour = modules.includes("kvm_intel") ? "kvm_intel" : modules.includes("kvm_amd") ? "kvm_amd" : modules.includes("kvm_pvm") ? "kvm_pvm" : "unknown";
  let cpuVirtFlag: "vmx" | "svm" | null = null;
  try {
    const flags = /^flags\s*:(.*)$/m.exec(readFileSync(join(root, "proc/cpuinfo"), "utf8"))?.[1]?.split(/\s+/) ?? [];
    cpuVirtFlag = flags.includes("vmx") ? "vmx" : flags.includes("svm") ? "svm" : null;
  } catch {
    // no /proc: leave unknown
  }
  return { flavour, modules, cpuVirtFlag };
}

function capabilities(sys: KvmSystem, vm: KvmVm): KvmCapabilities {
  const cap = (c: CapName) => Math.max(sys.checkExtension(c), sys.checkExtension(c, vm.vmFd));
  const adjust = cap("KVM_CAP_ADJUST_CLOCK");
  return {
    adjustClock: { raw: adjust, tscStable: (adjust & KVM_CLOCK_TSC_STABLE) !== 0, realtime: (adjust & KVM_CLOCK_REALTIME) !== 0, hostTsc: (adjust & KVM_CLOCK_HOST_TSC) !== 0 },
    kvmclockCtrl: cap("KVM_CAP_KVMCLOCK_CTRL") > 0,
    vcpuAttributes: cap("KVM_CAP_VCPU_ATTRIBUTES") > 0,
    tscOffsetAttribute: vm.hasTscOffsetAttribute(0),
    irqchip: cap("KVM_CAP_IRQCHIP") > 0,
    interruptInjection: "KVM_INTERRUPT",
    immediateExit: cap("KVM_CAP_IMMEDIATE_EXIT") > 0,
    tscControl: cap("KVM_CAP_TSC_CONTROL") > 0,
    vmTscControl: cap("KVM_CAP_VM_TSC_CONTROL") > 0,
    getTscKhz: cap("KVM_CAP_GET_TSC_KHZ") > 0,
    recommendedVcpus: cap("KVM_CAP_NR_VCPUS"),
    maxVcpus: cap("KVM_CAP_MAX_VCPUS"),
  };
}

/** Runs vCPU 0 once with a TSC offset set, and reads back what the kernel and the guest saw. */
async function functionalChecks(sys: KvmSystem, vm: KvmVm): Promise<KvmChecks> {
  const start = sys.libc.clockNs(1);
  const before = vm.getClock();
  let setAccepted = true;
  try {
    vm.setTscOffset(0, CHECK_OFFSET);
  } catch (e) {
    if (!isTscmigError(e)) throw e;
    setAccepted = false;
  }
  const readBack = vm.hasTscOffsetAttribute(0) ? vm.getTscOffset(0) : null;
  vm.resume();
  try {
    await vm.waitForRuns(0, 1, 5000);
  } finally {
    vm.pause();
  }
  const after = vm.getClock();
  const report = vm.report(0);
  const guestMinusHost = report.samples > 0 && (after.flags & KVM_CLOCK_HOST_TSC) !== 0 ? report.tsc - after.hostTsc : null;
  const honoured = setAccepted && readBack === CHECK_OFFSET && guestMinusHost !== null && guestMinusHost > CHECK_OFFSET / 2n;
  return {
    vcpuRan: report.samples > 0,
    exit: exitReasonName(vm.stats(0).lastExit),
    kvmclockEnabled: report.record !== null && report.record.tscToSystemMul !== 0n,
    clockFlagsBeforeRun: clockFlagNames(before.flags),
    clockFlagsAfterRun: clockFlagNames(after.flags),
    tscKhz: vm.getTscKhz(0).toString(),
    tscOffset: {
      set: CHECK_OFFSET.toString(),
      setAccepted,
      readBack: readBack === null ? null : readBack.toString(),
      guestMinusHostCycles: guestMinusHost === null ? null : guestMinusHost.toString(),
      honoured,
    },
    durationMs: Number(sys.libc.clockNs(1) - start) / 1e6,
  };
}

function verdictOf(caps: KvmCapabilities, checks: KvmChecks, flavour: KvmFlavour): KvmInfo["verdict"] {
  const notes: string[] = [];
  const usable = checks.vcpuRan && checks.kvmclockEnabled && caps.adjustClock.realtime && caps.kvmclockCtrl;
  if (!caps.adjustClock.realtime) notes.push("KVM_CLOCK_REALTIME is not supported: kvm-realtime restores cannot be made");
  if (!caps.kvmclockCtrl) notes.push("KVM_KVMCLOCK_CTRL is not supported: the guest cannot be told it was stopped");
  if (!checks.clockFlagsAfterRun.includes("REALTIME")) notes.push("KVM_GET_CLOCK gave no REALTIME/HOST_TSC pair even after a vCPU ran (no master clock)");
  if (!checks.tscOffset.honoured)
    notes.push(
      `TSC offsets are ${checks.tscOffset.setAccepted ? "accepted but not honoured" : "refused"} (set ${checks.tscOffset.set}, read back ${checks.tscOffset.readBack ?? "n/a"}, guest−host ${checks.tscOffset.guestMinusHostCycles ?? "n/a"} cycles): TSC-offset restores are not in effect; the guest TSC is the host TSC`,
    );
  if (!caps.tscControl) notes.push("no per-vCPU KVM_SET_TSC_KHZ: guest TSC frequency is the host's (never set a VM-wide rate off it)");
  if (flavour === "kvm_pvm") notes.push("kvm_pvm: a nested software virtualiser; real-mode guest code is emulated instruction by instruction");
  return { usable, tscOffsetRestores: checks.tscOffset.honoured ? "in effect" : "not in effect", notes };
}

/** The whole report; never throws for an absent or forbidden /dev/kvm (that is the report). */
export async function kvmInfo(opts: { device?: string; root?: string } = {}): Promise<KvmInfo> {
  const device = opts.device ?? KVM_DEVICE_PATH;
  const host = detectFlavour(opts.root);
  const base = { device, ...host, capabilities: null, checks: null };
  let sys: KvmSystem;
  try {
    sys = KvmSystem.open(device);
  } catch (e) {
    if (!(e instanceof KvmUnavailable)) throw e;
    return { ...base, available: false, problem: e.problem, message: e.message, apiVersion: null, verdict: { usable: false, tscOffsetRestores: "not in effect", notes: [e.message] } };
  }
  try {
    const vm = KvmVm.create(sys, { vcpus: 1, threads: 1, paceUs: 0 });
    try {
      const caps = capabilities(sys, vm);
      const checks = await functionalChecks(sys, vm);
      return { ...base, available: true, problem: null, message: null, apiVersion: KVM_API_VERSION, capabilities: caps, checks, verdict: verdictOf(caps, checks, host.flavour) };
    } finally {
      await vm.close();
    }
  } finally {
    sys.close();
  }
}

/** The report as an operator reads it. */
export function renderKvmInfo(r: KvmInfo): string {
  const lines = [`KVM device       ${r.device}: ${r.available ? "open" : `unavailable (${r.problem}): ${r.message}`}`];
  lines.push(`flavour          ${r.flavour}  (modules: ${r.modules.join(", ") || "none"}; CPU flag: ${r.cpuVirtFlag ?? "none"})`);
  if (r.available) lines.push(`API version      ${r.apiVersion}`);
  const c = r.capabilities;
  if (c !== null) {
    const yn = (b: boolean) => (b ? "yes" : "no");
    lines.push(
      `ADJUST_CLOCK     0x${c.adjustClock.raw.toString(16)} (TSC_STABLE ${yn(c.adjustClock.tscStable)}, REALTIME ${yn(c.adjustClock.realtime)}, HOST_TSC ${yn(c.adjustClock.hostTsc)})`,
      `KVMCLOCK_CTRL    ${yn(c.kvmclockCtrl)}`,
      `VCPU_ATTRIBUTES  ${yn(c.vcpuAttributes)}; KVM_VCPU_TSC_OFFSET attribute ${yn(c.tscOffsetAttribute)}`,
      `interrupts       ${c.interruptInjection} (in-kernel irqchip available: ${yn(c.irqchip)}); IMMEDIATE_EXIT ${yn(c.immediateExit)}`,
      `TSC control      per vCPU ${yn(c.tscControl)}, per VM ${yn(c.vmTscControl)}, GET_TSC_KHZ ${yn(c.getTscKhz)}`,
      `vCPUs            recommended ${c.recommendedVcpus}, max ${c.maxVcpus}`,
    );
  }
  const k = r.checks;
  if (k !== null) {
    lines.push(
      `vCPU run         ${k.vcpuRan ? "ok" : "FAILED"} (exit ${k.exit}); kvmclock enabled by the guest: ${k.kvmclockEnabled ? "yes" : "no"}; TSC ${k.tscKhz} kHz`,
      `GET_CLOCK flags  before a run [${k.clockFlagsBeforeRun.join(" ")}], after [${k.clockFlagsAfterRun.join(" ")}]`,
      `TSC offset       set ${k.tscOffset.set}: ${k.tscOffset.setAccepted ? "accepted" : "refused"}, read back ${k.tscOffset.readBack ?? "n/a"}, guest−host ${k.tscOffset.guestMinusHostCycles ?? "n/a"} cycles → ${k.tscOffset.honoured ? "honoured" : "NOT honoured"}`,
      `checks took      ${k.durationMs.toFixed(1)} ms`,
    );
  }
  lines.push(`verdict          backend ${r.verdict.usable ? "usable" : "NOT usable"}; TSC-offset restores ${r.verdict.tscOffsetRestores}`);
  for (const n of r.verdict.notes) lines.push(`  - ${n}`);
  return `${lines.join("\n")}\n`;
}
