// What a committed migration between two real daemons must show, checked from the outside (control
// API only): per vCPU the destination's guest TSC continues the source's within the reported bound,
// the stopped flag reached every vCPU, the vmclock marker moved once, the doorbell rang once when
// asked and never when not, the guest acted exactly once, and the VM left the source.
//
// Why the per-vCPU check is exact: GET /v1/vms/:id reads every vCPU's TSC at one true instant
// (`trueNs`), and both daemons share true time (CLOCK_MONOTONIC on one kernel). Had the VM never
// paused, vCPU i would read `srcTsc[i] + (tDst − tSrc) · kHz / 10⁶` at the destination's reading
// instant, so the difference to what it does read is the error the migration introduced.

import { expect } from "vitest";
import { abs, type ApiAnswer, type Json, type ReportJson, type SampleJson, type TestDaemon, type VmJson, waitFor } from "./daemons.js";

/** ns of guest time a TSC difference of `cycles` stands for at `khz`. */
export function cyclesToNs(cycles: bigint, khz: bigint): bigint {
  return (cycles * 1_000_000n) / khz;
}

export interface ContinuityOptions {
  /** The reported bound the error must stay within. */
  errorBoundNs: bigint;
  /** Extra ns for integer rounding of the check itself (a cycle or two). */
  slackNs?: bigint;
}

/** Per vCPU: the destination's TSC is where the never-paused source's would be, within the bound. */
export function expectTscContinues(before: VmJson, after: VmJson, o: ContinuityOptions): bigint {
  const khz = BigInt(before.guestTscKhz);
  expect(after.vcpu.length, "every vCPU read on both sides").toBe(before.vcpu.length);
  const dt = BigInt(after.trueNs) - BigInt(before.trueNs);
  const slack = o.slackNs ?? 10n;
  let worst = 0n;
  for (let i = 0; i < before.vcpu.length; i++) {
    const src = BigInt(before.vcpu[i]!.tsc);
    const dst = BigInt(after.vcpu[i]!.tsc);
    const ideal = src + (dt * khz) / 1_000_000n;
    const errNs = cyclesToNs(dst - ideal, khz);
    if (abs(errNs) > abs(worst)) worst = errNs;
    if (abs(errNs) > o.errorBoundNs + slack)
      throw new Error(`vCPU ${i}: TSC error ${errNs} ns exceeds the reported bound ${o.errorBoundNs} ns (src ${src}, dst ${dst}, ideal ${ideal})`);
    // I1 and I2 across the move: nothing reads lower on the destination than it did on the source.
    expect(dst >= src, `vCPU ${i} TSC monotonic`).toBe(true);
    expect(BigInt(after.vcpu[i]!.kvmclockNs) >= BigInt(before.vcpu[i]!.kvmclockNs), `vCPU ${i} kvmclock monotonic`).toBe(true);
  }
  return worst;
}

/** Refused because the destination could not be reached at all (Prepare never left the source). */
export function refusedUnreachable(r: ApiAnswer<ReportJson>): boolean {
  return r.status === 200 && r.body.outcome === "refused" && r.body.error?.code === "unavailable";
}

/**
 * POST migrate, again while the answer is "refused: unavailable" (bounded). After a peer restarts,
 * grpc-js keeps a channel that failed to connect in reconnect backoff (1 s, growing) and fails calls
 * fast meanwhile; a refused Prepare changes nothing, so retrying is safe. Each retry takes a fresh
 * migration id (`<id>-r<n>`) when one was given: ids are never reused. The answer carries the id used.
 */
export async function migrateWhenReachable(src: TestDaemon, vmId: string, body: Json, timeoutMs = 20_000): Promise<ApiAnswer<ReportJson>> {
  const deadline = performance.now() + timeoutMs;
  for (let attempt = 1; ; attempt++) {
    const b = typeof body.migrationId === "string" && attempt > 1 ? { ...body, migrationId: `${body.migrationId}-r${attempt}` } : body;
    const r = await src.api.migrate(vmId, b);
    if (!refusedUnreachable(r) || performance.now() > deadline) return r;
    await new Promise((ok) => setTimeout(ok, 100));
  }
}

export interface MigrateCheckOptions {
  policy?: string;
  estimator?: string;
  doorbell: boolean;
  migrationId?: string;
  /** gRPC address to hand the source instead of the destination's own (a proxy in between). */
  via?: string;
}

export interface MigrationOutcome {
  report: ReportJson;
  before: VmJson;
  after: VmJson;
  worstErrorNs: bigint;
}

/**
 * Migrates `vmId` from `src` to `dst` through the control API and checks everything a committed
 * migration must show (see the module comment). The policy must advance (advance, kvm-realtime,
 * advance-capped below its cap) for the continuity check to apply.
 */
export async function migrateAndCheck(src: TestDaemon, dst: TestDaemon, vmId: string, o: MigrateCheckOptions): Promise<MigrationOutcome> {
  const before = await src.api.vm(vmId);
  const markerBefore = BigInt(before.vmclock.disruptionMarker);
  const handledBefore = BigInt(before.handledMigrations);
  const handledEventsBefore = (await dst.api.history()).events.filter((e) => e.kind === "handled" && e.vmId === vmId).length;
  const res = await migrateWhenReachable(src, vmId, {
    destination: o.via ?? dst.grpc,
    policy: o.policy ?? "advance",
    estimator: o.estimator ?? "one-sided",
    doorbell: o.doorbell,
    ...(o.migrationId ? { migrationId: o.migrationId } : {}),
  });
  expect(res.status, res.text).toBe(200);
  const r = res.body;
  expect(r.outcome, JSON.stringify(r.error)).toBe("committed");
  expect(r.path, "Transfer and Commit rode one Handover call").toBe("handover");
  const after = await dst.api.vm(vmId);
  const n = before.vcpus;

  // The report: shape, stopped flag everywhere, marker +1, doorbell as asked, error within bound.
  expect(r.vcpus).toBe(n);
  expect(r.stoppedVcpus, "PVCLOCK_GUEST_STOPPED on every vCPU at resume").toBe(n);
  expect(BigInt(r.disruptionMarker), "vmclock marker moved exactly once").toBe(markerBefore + 1n);
  expect(r.doorbellRung).toBe(o.doorbell);
  const bound = BigInt(r.errorBoundNs);
  const blackout = BigInt(r.trueBlackoutNs);
  expect(blackout > 0n).toBe(true);
  expect(abs(BigInt(r.tscErrorNs)) <= bound, `tscErrorNs ${r.tscErrorNs} within ${r.errorBoundNs}`).toBe(true);
  expect(abs(BigInt(r.kvmclockErrorNs)) <= bound, `kvmclockErrorNs ${r.kvmclockErrorNs} within ${r.errorBoundNs}`).toBe(true);
  // tscAtResume against source TSC + true blackout × frequency (vCPU 0, from the report alone).
  const khz = BigInt(r.guestTscKhz);
  const idealFromBlackout = BigInt(r.tscAtPause) + (blackout * khz) / 1_000_000n;
  const pauseReadSlackNs = 1_000_000n; // tscAtPause is read a moment after pauseTrueNs is stamped
  expect(abs(cyclesToNs(BigInt(r.tscAtResume) - idealFromBlackout, khz)) <= bound + pauseReadSlackNs).toBe(true);

  // The destination runs it at the new generation; every vCPU continues the source's TSC.
  expect(after.running).toBe(true);
  expect(after.role).toBe("owner");
  expect(BigInt(after.generation)).toBe(BigInt(before.generation) + 1n);
  expect(BigInt(after.vmclock.disruptionMarker)).toBe(markerBefore + 1n);
  const worstErrorNs = expectTscContinues(before, after, { errorBoundNs: bound });
  // The report is honest: the error it states for vCPU 0 at resume is what every vCPU shows later.
  expect(abs(worstErrorNs - BigInt(r.tscErrorNs)) <= 2n, `report ${r.tscErrorNs} ns vs measured ${worstErrorNs} ns`).toBe(true);

  // The source no longer has it (I6).
  expect(await src.api.vmOrNull(vmId)).toBeNull();

  // The guest acted exactly once (I5), whichever signal it saw first.
  const settled = await waitFor(`guest of ${vmId} to handle the migration`, async () => {
    const v = await dst.api.vm(vmId, 0);
    return BigInt(v.handledMigrations) > handledBefore ? v : undefined;
  });
  expect(BigInt(settled.handledMigrations)).toBe(handledBefore + 1n);
  const handled = (await dst.api.history()).events.filter((e) => e.kind === "handled" && e.vmId === vmId);
  expect(handled.length - handledEventsBefore, "one handled event per migration").toBe(1);
  expect(BigInt((handled.at(-1) as Json).marker as string)).toBe(markerBefore + 1n);
  // Doorbell: delivered once when asked, never when not.
  const rung = await waitFor("doorbell delivery to settle", async () => {
    const v = await dst.api.vm(vmId, 0);
    return o.doorbell ? (v.doorbellsDelivered === 1 ? v : undefined) : v;
  });
  expect(rung.doorbellsDelivered).toBe(o.doorbell ? 1 : 0);
  return { report: r, before, after, worstErrorNs };
}

/**
 * I1 and I2 over recorded samples (any daemons, merged by true time): no vCPU's TSC or kvmclock ever
 * reads lower than an earlier sample of the same VM. Returns the number of samples checked.
 */
export function expectSamplesMonotonic(samples: SampleJson[], vmId: string): number {
  const mine = samples.filter((s) => s.vmId === vmId).sort((a, b) => (BigInt(a.trueNs) < BigInt(b.trueNs) ? -1 : 1));
  const lastTsc = new Map<number, bigint>();
  const lastKvm = new Map<number, bigint>();
  for (const s of mine) {
    s.vcpus.forEach((cpu, k) => {
      const tsc = BigInt(s.tsc[k]!);
      const kvm = BigInt(s.kvmclockNs[k]!);
      const pt = lastTsc.get(cpu);
      const pk = lastKvm.get(cpu);
      if (pt !== undefined && tsc < pt) throw new Error(`I1: vCPU ${cpu} TSC went back ${pt} → ${tsc} at ${s.trueNs} on ${s.daemon}`);
      if (pk !== undefined && kvm < pk) throw new Error(`I2: vCPU ${cpu} kvmclock went back ${pk} → ${kvm} at ${s.trueNs} on ${s.daemon}`);
      lastTsc.set(cpu, tsc);
      lastKvm.set(cpu, kvm);
    });
  }
  return mine.length;
}
