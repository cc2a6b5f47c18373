// Goal: `tscmig daemon --backend kvm` hosts real KVM VMs and migrates them between two daemon
// processes under every policy, and the history holds what the REAL guest saw: its RDTSC and the
// kvmclock it computed from its pvclock record, per vCPU; it acted on the stopped flag once per
// migration (a `handled` event via the flag); kvmclock continues across each migration within the
// reported bound; and the checker (I1–I9) passes on that history.
// Method: two `bin/tscmig.js daemon --backend kvm` children on loopback driven through the control
// API; each migration waits (polling, no sleeps) for the destination's real guest to report samples
// of the new generation; both daemons' histories are merged and checked. Skipped with the reason
// where /dev/kvm cannot be opened (not root, no KVM).

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BOUNDARY } from "../../src/shared/codec.js";
import { type GuestSample, historyPageCodec } from "../../src/shared/history.js";
import type { ChaosEvent, ChaosHistory } from "../../src/chaos/history.js";
import { checkHistory } from "../../src/chaos/checker.js";
import { kvmProblem } from "../helpers/kvm.js";
import { trueEpochNs } from "../../src/shared/platform/index.js";
import { startDaemons, stopAllDaemons, type TestDaemon, waitFor, type ReportJson } from "../helpers/daemons.js";

const problem = kvmProblem({ root: true });
if (problem !== null) console.warn(`kvm daemon tests skipped: ${problem}`);

const POLICIES = [
  ["advance", "one-sided", true],
  // one-sided: KVM gets a realtime derived from the destination's own clocks (its fresh VM's KVM_GET_CLOCK has none)
  ["kvm-realtime", "one-sided", false],
  ["freeze", "wallclock", true],
  ["advance-capped", "wallclock", false],
] as const;

describe.skipIf(problem !== null)("two daemons with --backend kvm", () => {
  let a: TestDaemon;
  let b: TestDaemon;
  beforeAll(async () => {
    [a, b] = await startDaemons({ name: "kvm-a", args: ["--backend", "kvm"] }, { name: "kvm-b", args: ["--backend", "kvm"] });
  });
  afterAll(async () => {
    await stopAllDaemons();
  });

  /** The history both daemons hold now, decoded as the live chaos harness decodes it. */
  async function histories(): Promise<{ samples: GuestSample[]; events: ChaosEvent[] }> {
    const samples: GuestSample[] = [];
    const events: ChaosEvent[] = [];
    for (const d of [a, b]) {
      const page = historyPageCodec.decode(await d.api.ok("GET", "/v1/history?limit=100000"), BOUNDARY.api, "history");
      samples.push(...page.samples);
      events.push(...page.events);
    }
    const byTime = (x: { trueNs: bigint }, y: { trueNs: bigint }) => (x.trueNs < y.trueNs ? -1 : x.trueNs > y.trueNs ? 1 : 0);
    return { samples: samples.sort(byTime), events: events.sort(byTime) };
  }

  /** Until the daemon's real guest reported three samples of `generation` on every vCPU (a rate needs two). */
  async function guestReported(d: TestDaemon, id: string, generation: bigint, vcpus: number): Promise<void> {
    await waitFor(`${d.name}: the real guest's samples of generation ${generation}`, async () => {
      const h = historyPageCodec.decode(await d.api.ok("GET", "/v1/history?limit=100000"), BOUNDARY.api, "history");
      const per = new Map<number, number>();
      for (const s of h.samples) if (s.vmId === id && s.generation === generation) per.set(s.vcpus[0] as number, (per.get(s.vcpus[0] as number) ?? 0) + 1);
      return per.size === vcpus && [...per.values()].every((n) => n >= 3);
    }, 30_000, 50);
  }

  it("says it runs the kvm backend (/v1/host)", async () => {
    const host = await a.api.ok<{ backend: { name: string; tscOffsetRestores: string; tscKhz: string } }>("GET", "/v1/host");
    expect(host.backend.name).toBe("kvm");
    expect(["in effect", "not in effect"]).toContain(host.backend.tscOffsetRestores);
  });

  // One vCPU: consecutive samples are one vCPU's, so the checker measures its rate (I8) too.
  for (const vcpus of [1, 2])
  it(`migrates a real ${vcpus}-vCPU VM under every policy; the real guest's samples pass the checker`, async () => {
    const id = `kvm-vm-${vcpus}`;
    const createdNs = BigInt((await a.api.ok<{ trueNs: string }>("GET", "/v1/host")).trueNs);
    const created = await a.api.createVm({ id, vcpus });
    const khz = BigInt(created.guestTscKhz as string);
    await guestReported(a, id, 0n, vcpus);
    const reports: ReportJson[] = [];
    let [from, to] = [a, b];
    for (const [policy, estimator, doorbell] of POLICIES) {
      const r = await from.api.migrate(id, { destination: to.grpc, policy, estimator, doorbell });
      expect(r.status, r.text).toBe(200);
      expect(r.body.outcome, JSON.stringify(r.body.error)).toBe("committed");
      reports.push(r.body);
      await guestReported(to, id, BigInt(r.body.generation), vcpus);
      [from, to] = [to, from];
    }
    const all = await histories();
    const samples = all.samples.filter((s) => s.vmId === id);
    const events = all.events.filter((e) => !("vmId" in e) || e.vmId === id);

    // What the real guest reported is what the history holds: one vCPU per sample, at its own RDTSC.
    expect(samples.length).toBeGreaterThan(0);
    expect(samples.every((s) => s.vcpus.length === 1 && s.guestTscKhz === khz)).toBe(true);
    // It acted on the stopped flag once per migration, the flag being how it learnt of it.
    const handled = events.filter((e) => e.kind === "handled");
    expect(handled.map((e) => (e.kind === "handled" ? `${e.via}@${e.marker}` : ""))).toEqual(POLICIES.map((_, i) => `flag@${i + 1}`));

    // kvmclock continuity per vCPU across each migration: the destination's first sample continues the
    // source's last by the true time between them, within the reported bound (freeze: it lost the blackout).
    reports.forEach((rep, k) => {
      const gen = BigInt(rep.generation);
      for (let cpu = 0; cpu < vcpus; cpu++) {
        const before = samples.filter((s) => s.generation === gen - 1n && s.vcpus[0] === cpu).at(-1) as GuestSample;
        const after = samples.find((s) => s.generation === gen && s.vcpus[0] === cpu) as GuestSample;
        const dKvm = (after.kvmclockNs[0] as bigint) - (before.kvmclockNs[0] as bigint);
        const dTrue = after.trueNs - before.trueNs;
        expect(dKvm, `${POLICIES[k]?.[0]} vCPU ${cpu}: kvmclock went back`).toBeGreaterThanOrEqual(0n);
        const lost = POLICIES[k]?.[0] === "freeze" ? BigInt(rep.estimatedBlackoutNs) : 0n;
        const slackNs = BigInt(rep.errorBoundNs) + 200_000n; // the bound, and two calibrations' error of the samples' instants
        const off = dKvm + lost - dTrue;
        expect(off < 0n ? -off : off, `${POLICIES[k]?.[0]} vCPU ${cpu}: kvmclock ${dKvm} ns over ${dTrue} ns of true time`).toBeLessThanOrEqual(slackNs);
      }
    });

    const history: ChaosHistory = {
      meta: { mode: "live", seed: 0n, epochNs: trueEpochNs(), daemons: [a, b].map((d) => ({ name: d.name, tscKhz: khz, crystalSlopePpm: 0 })), ntpSource: "host", sampleIntervalNs: 100_000_000n, scenario: { backend: "kvm" } },
      samples,
      events: [{ kind: "vm", trueNs: createdNs, daemon: a.name, vmId: id, vcpus, guestTscKhz: khz, clocksource: "kvm-clock", migrationHandling: true, handlingMode: "ditch" }, ...events],
    };
    const check = checkHistory(history);
    console.log(`kvm daemons: ${samples.length} real-guest samples, ${handled.length} handled; checked ${JSON.stringify(check.checked)}; violations ${JSON.stringify(check.counts)}`);
    expect(check.violations).toEqual([]);
    if (vcpus === 1) expect(check.checked.ratePairs).toBeGreaterThan(0);
  }, 180_000);
});
