// `tscmig demo`: start a pair (or use running daemons), create a VM, let it run, inject skew,
// migrate, and show what the guest saw.

import { ApiClient } from "../client/api.js";
import { fmtNs, withinBound } from "./render.js";
import { spawnDaemon, type LocalDaemon } from "../client/local-daemons.js";
import { RealScheduler, realRandom } from "../shared/platform/index.js";
import { sleep } from "../shared/time/clock.js";
import { TscmigError } from "../shared/errors.js";

export interface DemoOptions {
  sourceHttp?: string;
  destinationHttp?: string;
  destinationGrpc?: string;
  vcpus: number;
  guestTscKhz?: string;
  policy: string;
  estimator: string;
  /**
   * Destination realtime offset relative to the source's, set on the destination before the
   * migration. Absent: both hosts keep the skew they were configured with (running daemons).
   */
  skewNs?: bigint;
  doorbell: boolean;
  runMs: number;
  json: boolean;
  token?: string;
  clocksource?: string;
  /** The hypervisor backend of the pair it starts; with running daemons, the one they must run. */
  backend?: string;
}

type Json = Record<string, unknown>;

export async function runDemo(o: DemoOptions, out: (s: string) => void): Promise<number> {
  const sched = new RealScheduler();
  const started: LocalDaemon[] = [];
  try {
    let srcUrl = o.sourceHttp;
    let dstUrl = o.destinationHttp;
    let dstGrpc = o.destinationGrpc;
    if (!srcUrl || !dstUrl || !dstGrpc) {
      const args = o.backend !== undefined ? ["--backend", o.backend] : [];
      const [s, d] = await Promise.all([spawnDaemon({ name: "source", args }), spawnDaemon({ name: "destination", args })]);
      started.push(s, d);
      srcUrl = s.http;
      dstUrl = d.http;
      dstGrpc = d.grpc;
      if (!o.json) out(`started source (${s.http}, gRPC ${s.grpc}) and destination (${d.http}, gRPC ${d.grpc})\n`);
    }
    const src = new ApiClient(srcUrl, o.token);
    const dst = new ApiClient(dstUrl, o.token);
    const delay = () => sleep(sched, 100_000_000n);
    await src.waitHealthy(100, delay);
    await dst.waitHealthy(100, delay);
    if (o.backend !== undefined) await requireBackend(o.backend, src, dst);
    const id = `demo-${realRandom().u32().toString(16)}`;
    await src.call("POST", "/v1/vms", {
      id,
      vcpus: o.vcpus,
      ...(o.guestTscKhz ? { guestTscKhz: o.guestTscKhz } : {}),
      ...(o.clocksource ? { clocksource: o.clocksource } : {}),
    });
    if (o.skewNs !== undefined) {
      // Relative to the source: an offset the source already has must not cancel or override it.
      const s = await src.call<Json>("GET", "/v1/host");
      await dst.call("PUT", "/v1/host/clock", { offsetNs: (BigInt(s.skewNs as string) + o.skewNs).toString() });
    }
    const skew = await hostSkew(src, dst);
    await sleep(sched, BigInt(o.runMs) * 1_000_000n);
    const before = await src.call<Json>("GET", `/v1/vms/${id}?vcpus=4`);
    const report = await src.call<Json>("POST", `/v1/vms/${id}/migrate`, { destination: dstGrpc, policy: o.policy, estimator: o.estimator, doorbell: o.doorbell });
    let after: Json | null = null;
    let settled: Json | null = null;
    if (report.outcome === "committed") {
      after = await dst.call<Json>("GET", `/v1/vms/${id}?vcpus=4`);
      await sleep(sched, 1_200_000_000n); // the guest's NTP client re-disciplines after a ditch (1 s)
      settled = await dst.call<Json>("GET", `/v1/vms/${id}?vcpus=4`);
    }
    if (o.json) out(`${JSON.stringify({ vm: id, skew: toStrings(skew), before, report, after, settled }, null, 2)}\n`);
    else out(renderDemo(id, o, skew, before, report, after, settled));
    return report.outcome === "committed" ? 0 : 1;
  } finally {
    await Promise.all(started.map((d) => d.stop()));
  }
}

export interface HostSkew {
  sourceNs: bigint;
  destinationNs: bigint;
}

/** Each host's realtime offset from true time now, as its control API reports it. */
async function hostSkew(src: ApiClient, dst: ApiClient): Promise<HostSkew> {
  const [s, d] = await Promise.all([src.call<Json>("GET", "/v1/host"), dst.call<Json>("GET", "/v1/host")]);
  return { sourceNs: BigInt(s.skewNs as string), destinationNs: BigInt(d.skewNs as string) };
}

const toStrings = (k: HostSkew) => ({ sourceNs: k.sourceNs.toString(), destinationNs: k.destinationNs.toString(), destinationMinusSourceNs: (k.destinationNs - k.sourceNs).toString() });


const signed = (n: bigint): string => (n > 0n ? `+${fmtNs(n.toString())}` : fmtNs(n.toString()));

function ntpLine(v: Json | null): string {
  if (!v) return "-";
  const ntp = v.ntp as { synchronized: boolean; maxerrorUs: string };
  const b = v.bounded as { status: string };
  return `${b.status}, maxerror ${ntp.maxerrorUs} µs${ntp.synchronized ? "" : " (STA_UNSYNC)"}`;
}

export function renderDemo(id: string, o: DemoOptions, skew: HostSkew, before: Json, r: Json, after: Json | null, settled: Json | null): string {
  const v0 = (v: Json | null) => ((v?.vcpu as Json[] | undefined)?.[0] ?? {}) as Json;
  const rows: [string, string, string][] = [
    ["guest TSC (vCPU 0)", String(r.tscAtPause ?? "-"), String(r.tscAtResume ?? "-")],
    ["kvmclock (vCPU 0)", fmtNs(r.kvmclockAtPauseNs), fmtNs(r.kvmclockAtResumeNs)],
    ["TSC had it never paused", "", String(r.tscIdealAtResume ?? "-")],
    // A real guest clears the flag on its first entry, before the daemon can read it: its own count is below.
    ["pvclock flags (vCPU 0)", String(((v0(before).pvclock as Json | undefined)?.flags) ?? "-"), realGuestOf(after, settled) ? "GUEST_STOPPED: the real guest's own count below" : `GUEST_STOPPED on ${r.stoppedVcpus}/${r.vcpus} vCPUs at resume`],
    ["vmclock disruption marker", String((before.vmclock as Json).disruptionMarker), String(r.disruptionMarker)],
    ["guest NTP / bounded clock", ntpLine(before), ntpLine(after)],
    ["  after the guest resynced", "", ntpLine(settled)],
  ];
  const w0 = Math.max(...rows.map((x) => x[0].length));
  const w1 = Math.max(20, ...rows.map((x) => x[1].length));
  const lines = [
    `VM ${id}: ${before.vcpus} vCPUs, guest TSC ${before.guestTscKhz} kHz, clocksource ${before.clocksource}`,
    `policy ${o.policy}, estimator ${o.estimator}, doorbell ${o.doorbell ? "on" : "off"}`,
    `host realtime skew: source ${signed(skew.sourceNs)}, destination ${signed(skew.destinationNs)}; destination − source ${signed(skew.destinationNs - skew.sourceNs)}`,
    `outcome: ${r.outcome}${r.error ? ` — ${(r.error as Json).message}` : ""}`,
    "",
    `${"".padEnd(w0)}  ${"source (before)".padEnd(w1)}  destination (after)`,
    ...rows.map(([a, b, c]) => `${a.padEnd(w0)}  ${b.padEnd(w1)}  ${c}`),
    "",
    `blackout: true ${fmtNs(r.trueBlackoutNs)}, estimated ${fmtNs(r.estimatedBlackoutNs)}; advanced ${fmtNs(r.advancedNs)}`,
    `introduced error: TSC ${fmtNs(r.tscErrorNs)}, kvmclock ${fmtNs(r.kvmclockErrorNs)}; reported bound ±${fmtNs(r.errorBoundNs)}`,
    ...honesty(r),
    `doorbell: ${r.doorbellRung ? "rung" : "not rung"}; guest acted on the migration ${after ? String(settled?.handledMigrations ?? after.handledMigrations) : "-"} time(s)`,
    ...realGuestLines(after, settled),
    `phases: capture ${fmtNs((r.phases as Json).captureNs)}, encode ${fmtNs((r.phases as Json).encodeNs)}, transfer RTT ${fmtNs((r.phases as Json).transferNs)}, decode ${fmtNs((r.phases as Json).decodeNs)}, restore ${fmtNs((r.phases as Json).restoreNs)}, commit ${fmtNs((r.phases as Json).commitNs)}; ${r.path === "handover" ? "Transfer and Commit on one Handover call" : "Transfer and Commit as unary calls"}`,
  ];
  return `${lines.join("\n")}\n`;
}

function realGuestOf(after: Json | null, settled: Json | null): { acted: number; stopped: number[]; doorbells: number[] } | undefined {
  return (settled?.realGuest ?? after?.realGuest) as { acted: number; stopped: number[]; doorbells: number[] } | undefined;
}

/** What a real guest (kvm backend) counted itself: the stopped flag per vCPU, its acts, the doorbell. */
function realGuestLines(after: Json | null, settled: Json | null): string[] {
  const g = realGuestOf(after, settled);
  if (g === undefined) return [];
  const stoppedOnce = g.stopped.filter((n) => n === 1).length;
  return [
    `real guest (KVM): saw PVCLOCK_GUEST_STOPPED exactly once on ${stoppedOnce}/${g.stopped.length} vCPUs [${g.stopped.join(", ")}], acted on it ${g.acted} time(s); doorbell interrupts [${g.doorbells.join(", ")}]`,
  ];
}

/** Running daemons must run the backend asked for (`--backend` with --source-http...). */
async function requireBackend(want: string, ...daemons: ApiClient[]): Promise<void> {
  for (const d of daemons) {
    const host = await d.call<Json>("GET", "/v1/host");
    const name = ((host.backend as Json | undefined)?.name as string | undefined) ?? "emulated";
    if (name !== want) throw new TscmigError("failed_precondition", `--backend ${want}: the daemon at ${d.baseUrl} runs the ${name} backend`, { field: "backend", reason: "backend_mismatch" });
  }
}

function honesty(r: Json): string[] {
  const ok = withinBound(r);
  if (ok === undefined) return [];
  if (r.policy === "freeze" || ok) return ["the introduced error is within the reported bound"];
  return [
    "!! the introduced error exceeds the reported bound: the hosts' realtime clocks disagree by more than they claim",
    "   (a lying clock). The wallclock estimator trusts those claims; one-sided and probe do not. A guest that kept",
    "   its NTP bound across this migration would now claim a precision it does not have — it must be told.",
  ];
}
