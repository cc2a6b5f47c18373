// Goal: `tscmig watch` shows what the stream says: each VM's bounded clock against true time, and
// migrations with blackout and introduced error against the bound, flagged when past it.
// Method: the pure model fed hand-made events; no daemon.
import { describe, expect, it } from "vitest";
import { eventLine, fmtNs, WatchModel } from "../../src/cli/watch.js";

const host = { name: "h1", grpc: "127.0.0.1:7071", skewNs: "5000000", maxerrorNs: "100000", tscKhz: "2000000", vendor: "vmx" };
const out = (err: string) => ({
  direction: "out",
  migrationId: "m1",
  vmId: "v1",
  destination: "127.0.0.1:7081",
  policy: "advance",
  estimator: "wallclock",
  outcome: "committed",
  trueBlackoutNs: "8000000",
  estimatedBlackoutNs: "13000000",
  tscErrorNs: err,
  errorBoundNs: "200000",
});

describe("watch view", () => {
  it("renders host, VMs and migrations from the state and later events", () => {
    const m = new WatchModel();
    m.apply({ type: "state", id: "x-0", data: { host, vms: [{ id: "v1", generation: "0", bounded: { status: "synchronized" }, running: true, migrating: null }], samples: [], migrations: [], vmCount: 1 } });
    m.apply({ type: "sample", id: "x-1", data: { vmId: "v1", status: "synchronized", errorNs: "-1500", earliestErrorNs: "-300000", latestErrorNs: "297000", hostSkewNs: "5000000" } });
    m.apply({ type: "migration", id: "x-2", data: out("-4999000") });
    const screen = m.render();
    expect(screen).toContain("host: realtime skew 5.00 ms (claims ±100 µs)");
    expect(screen).toMatch(/v1 +0 +synchronized +-1.50 µs +299 µs +5.00 ms/);
    expect(screen).toContain("m1 v1 out → 127.0.0.1:7081 advance/wallclock committed blackout 8.00 ms (est. 13.0 ms) error -5.00 ms of ±200 µs PAST THE BOUND");
  });

  it("prints one line for noteworthy events and none for samples or heartbeats", () => {
    expect(eventLine({ type: "sample", id: "a", data: {} })).toBeNull();
    expect(eventLine({ type: "heartbeat", id: undefined, data: {} })).toBeNull();
    expect(eventLine({ type: "migration", id: "a", data: out("100") })).toMatch(/error 100 ns of ±200 µs$/);
    expect(eventLine({ type: "bye", id: undefined, data: { reason: "daemon shutting down" } })).toBe("bye: daemon shutting down");
  });

  it("formats durations with the unit that fits", () => {
    expect([fmtNs("0"), fmtNs("999"), fmtNs("1000"), fmtNs("-123456"), fmtNs("16000000000"), fmtNs(undefined)]).toEqual(["0 ns", "999 ns", "1.00 µs", "-123 µs", "16.0 s", "–"]);
  });
});
