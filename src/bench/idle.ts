// Bench section `idleVms`: a daemon hosting many idle VMs must stay as quick to
// answer and as quiet as an empty one. Two daemons of the same build in the same run: one empty,
// one with N idle 1-vCPU VMs (their guests poll NTP every 16 s and the workload sampler runs at its
// cap, as in production). Measured:
// - idle CPU share of each process over a quiet window (no requests at all): user + system time
//   from /proc/PID/stat over the window's wall time, in cores (1.0 = one core busy);
// - `/healthz` latency, probed alternately on both daemons every `probeGapMs` over a window, so a
//   periodic stall in the loaded daemon (e.g. a re-persist of every VM at once) shows in its p99 and
//   max; the target is the loaded p99 within 2× the empty one's, measured in the same run.
// Real time is read only through the platform module (STYLE 2).

import { readFileSync } from "node:fs";
import { request } from "undici";
import { TscmigError } from "../shared/errors.js";
import type { Clock, Scheduler } from "../shared/time/clock.js";
import { sleep } from "../shared/time/clock.js";
import { createVm, pool, rssBytes, type Side, startSide, stopSides } from "./live.js";
import { fmtBytes, fmtNs, ratio, summarize, type Summary, table } from "./stats.js";

export interface IdleVmsPlan {
  vms: number;
  /** Wait after the last create, before measuring (creation's aftermath settles). */
  settleMs: number;
  /** Quiet window for the CPU share. */
  cpuWindowMs: number;
  /** Probing window for /healthz. */
  probeWindowMs: number;
  probeGapMs: number;
}

export function idleVmsPlan(quick: boolean): IdleVmsPlan {
  return quick
    ? { vms: 2000, settleMs: 5000, cpuWindowMs: 10_000, probeWindowMs: 20_000, probeGapMs: 10 }
    : { vms: 10_000, settleMs: 20_000, cpuWindowMs: 30_000, probeWindowMs: 60_000, probeGapMs: 10 };
}

export interface IdleDaemonFigures {
  healthz: Summary;
  /** CPU time over wall time in the quiet window (cores). */
  cpuShare: number;
  rssBytes: number;
}

export interface IdleVmsResult {
  vms: number;
  vcpusPerVm: number;
  createNs: bigint;
  cpuWindowNs: bigint;
  probeWindowNs: bigint;
  probeGapMs: number;
  empty: IdleDaemonFigures;
  loaded: IdleDaemonFigures;
  /** loaded / empty /healthz latency. */
  ratioP50: number;
  ratioP99: number;
}

/** utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/PID/stat). */
function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

/** USER_HZ: 100 on every Linux this runs on (sysconf(_SC_CLK_TCK)); not readable from Node. */
const TICKS_PER_SEC = 100;

async function healthzNs(clock: Clock, side: Side): Promise<bigint> {
  const t0 = clock.monotonicNs();
  const res = await request(`${side.api.baseUrl}/healthz`, { headersTimeout: 60_000, bodyTimeout: 60_000 });
  await res.body.text();
  if (res.statusCode !== 200) throw new TscmigError("unavailable", `${side.name} /healthz answered ${res.statusCode}`);
  return clock.monotonicNs() - t0;
}

export async function idleVmsSection(o: {
  plan: IdleVmsPlan;
  clock: Clock;
  scheduler: Scheduler;
  daemonArgs: string[];
  say: (line: string) => void;
}): Promise<IdleVmsResult> {
  const { plan, clock, scheduler: sched, say } = o;
  const sides: Side[] = [];
  try {
    const [empty, loaded] = await Promise.all([startSide("idle-empty", { daemonArgs: o.daemonArgs }), startSide("idle-loaded", { daemonArgs: o.daemonArgs })]);
    sides.push(empty, loaded);
    say(`idleVms: creating ${plan.vms} idle 1-vCPU VMs`);
    const t0 = clock.monotonicNs();
    const ids = Array.from({ length: plan.vms }, (_, i) => `idle-${i}`);
    await pool(ids, 16, (id) => createVm(loaded, id, 1));
    const createNs = clock.monotonicNs() - t0;
    say(`idleVms: created in ${fmtNs(createNs)}; settling ${plan.settleMs} ms, then ${plan.cpuWindowMs} ms quiet (CPU), then ${plan.probeWindowMs} ms of /healthz probes`);
    await sleep(sched, BigInt(plan.settleMs) * 1_000_000n);

    const c0 = [cpuTicks(empty.pid), cpuTicks(loaded.pid)] as const;
    const w0 = clock.monotonicNs();
    await sleep(sched, BigInt(plan.cpuWindowMs) * 1_000_000n);
    const cpuWindowNs = clock.monotonicNs() - w0;
    const share = (before: number, pid: number) => (cpuTicks(pid) - before) / TICKS_PER_SEC / (Number(cpuWindowNs) / 1e9);
    const cpu = [share(c0[0], empty.pid), share(c0[1], loaded.pid)] as const;

    const lat: [bigint[], bigint[]] = [[], []];
    const p0 = clock.monotonicNs();
    const end = p0 + BigInt(plan.probeWindowMs) * 1_000_000n;
    while (clock.monotonicNs() < end) {
      lat[0].push(await healthzNs(clock, empty));
      lat[1].push(await healthzNs(clock, loaded));
      await sleep(sched, BigInt(plan.probeGapMs) * 1_000_000n);
    }
    const probeWindowNs = clock.monotonicNs() - p0;
    const e = summarize(lat[0]);
    const l = summarize(lat[1]);
    return {
      vms: plan.vms,
      vcpusPerVm: 1,
      createNs,
      cpuWindowNs,
      probeWindowNs,
      probeGapMs: plan.probeGapMs,
      empty: { healthz: e, cpuShare: cpu[0], rssBytes: rssBytes(empty.pid) },
      loaded: { healthz: l, cpuShare: cpu[1], rssBytes: rssBytes(loaded.pid) },
      ratioP50: ratio(l.p50Ns, e.p50Ns),
      ratioP99: ratio(l.p99Ns, e.p99Ns),
    };
  } finally {
    await stopSides(sides);
  }
}

export function idleVmsTargets(r: IdleVmsResult): { name: string; value: string; limit: string; holds: boolean; basis: string }[] {
  return [
    {
      name: `/healthz p99 with ${r.vms} idle VMs ≤ 2 × an empty daemon's`,
      value: `${r.ratioP99.toFixed(2)}×`,
      limit: "2×",
      holds: r.ratioP99 <= 2,
      basis: `${r.loaded.healthz.count} probes each, same run`,
    },
  ];
}

export function renderIdleVms(r: IdleVmsResult): string {
  const row = (name: string, x: IdleDaemonFigures) => [name, fmtNs(x.healthz.p50Ns), fmtNs(x.healthz.p99Ns), fmtNs(x.healthz.maxNs), String(x.healthz.count), `${(x.cpuShare * 100).toFixed(1)}%`, fmtBytes(x.rssBytes)];
  return (
    `\nIdle VMs (${r.vms} VMs of ${r.vcpusPerVm} vCPU on one daemon, created in ${fmtNs(r.createNs)}, against an empty daemon in the same run)\n` +
    table([["daemon", "/healthz p50", "p99", "max", "probes", "idle CPU (of one core)", "RSS"], row("empty", r.empty), row(`${r.vms} idle VMs`, r.loaded)]) +
    `/healthz probed alternately every ${r.probeGapMs} ms for ${fmtNs(r.probeWindowNs)}; CPU over a ${fmtNs(r.cpuWindowNs)} window without requests. p50 ${r.ratioP50.toFixed(2)}×, p99 ${r.ratioP99.toFixed(2)}× the empty daemon's.\n`
  );
}
