// Goal: the live harness checks every host report against the one true epoch it pinned for the
// campaign: a daemon on another epoch (1 s off, as a btime flip made one) fails the run as a harness
// error naming both values, not as guest-clock (I4) violations and not silently by overwriting a
// cluster-wide epoch with the last report's.
// Method: LiveCluster.recordHost over crafted GET /v1/host bodies (no process): a matching report is
// recorded as the daemon's clock; a mismatching one throws HarnessError and leaves an "error" event
// that the checker reports as E; the run's epoch stays the pinned one.
import { describe, expect, it } from "vitest";
import { checkHistory } from "../../src/chaos/checker.js";
import type { ChaosHistory } from "../../src/chaos/history.js";
import { HarnessError, LiveCluster, type LiveDaemon } from "../../src/chaos/live/cluster.js";
import type { FaultProxy } from "../../src/chaos/live/proxy.js";
import { offsetModelToJson, type OffsetModel } from "../../src/shared/time/offset-model.js";

const S = 1_000_000_000n;
const PINNED = 1_796_239_527_069_402_713n;

function daemon(name: string): LiveDaemon {
  return { name, proxy: {} as FaultProxy, http: "127.0.0.1:0", grpc: "127.0.0.1:0", data: "/nonexistent", args: [], proc: null, api: null, stopping: false };
}

/** A GET /v1/host body from a daemon on `epochNs` with a constant skew, read at true time `trueNs`. */
function hostReport(epochNs: bigint, trueNs: bigint, skewNs: bigint) {
  const model: OffsetModel = { kind: "constant", offsetNs: skewNs };
  return { name: "h", tscKhz: "2000000", trueNs: String(trueNs), realtimeNs: String(epochNs + trueNs + skewNs), rawNs: String(trueNs), skewNs: String(skewNs), maxerrorNs: "397474881", skewModel: offsetModelToJson(model) };
}

describe("LiveCluster.recordHost against the pinned true epoch", () => {
  it("records a report on the pinned epoch as the daemon's clock, whatever its skew", () => {
    const c = new LiveCluster({ handling: true, trueEpochNs: PINNED });
    c.recordHost(daemon("d0"), hostReport(PINNED, 60n * S, 297_474_881n));
    c.recordHost(daemon("d1"), hostReport(PINNED, 61n * S, -3n * S));
    expect(c.events.map((e) => e.kind)).toEqual(["hostClock", "hostClock"]);
    expect(c.epochNs).toBe(PINNED);
  });

  it("fails loudly on a daemon whose epoch is 1 s off, and keeps the pinned epoch for the run", () => {
    const c = new LiveCluster({ handling: true, trueEpochNs: PINNED });
    c.recordHost(daemon("d0"), hostReport(PINNED, 60n * S, 0n));
    // The seed-1203 case: skew 297.5 ms, realtime 1 s early because the daemon took btime after a flip.
    const stale = hostReport(PINNED - S, 70n * S, 297_474_881n);
    expect(() => c.recordHost(daemon("d1"), stale)).toThrow(HarnessError);
    expect(() => c.recordHost(daemon("d1"), stale)).toThrow(/harness error: d1 runs on true epoch 1796239526069402713 ns, not the 1796239527069402713 ns the harness pinned \(-1000000000 ns apart\)/);
    expect(c.epochNs).toBe(PINNED); // not overwritten by the last report
    const errors = c.events.filter((e) => e.kind === "error");
    expect(errors.length).toBe(2);
    expect(c.events.filter((e) => e.kind === "hostClock").length).toBe(1); // d1's clock is not taken as its model

    // The checker reports it as the harness failing (E), with the message, and no guest-clock violation.
    const history: ChaosHistory = {
      meta: { mode: "live", seed: 1203n, epochNs: c.epochNs, daemons: [{ name: "d0", tscKhz: 2_000_000n, crystalSlopePpm: 0 }, { name: "d1", tscKhz: 2_000_000n, crystalSlopePpm: 0 }], ntpSource: "host", sampleIntervalNs: 100_000_000n, scenario: { daemons: 2, handling: true } },
      samples: [],
      events: c.events,
    };
    const found = checkHistory(history).violations;
    expect(found.length).toBeGreaterThan(0);
    expect(found.every((v) => v.invariant === "E" && v.message.includes("harness error: d1 runs on true epoch"))).toBe(true);
  });

  it("notices a difference of one nanosecond (the report's clocks are of one instant)", () => {
    const c = new LiveCluster({ handling: true, trueEpochNs: PINNED });
    expect(() => c.recordHost(daemon("d0"), hostReport(PINNED + 1n, 60n * S, 5n))).toThrow(/\(1 ns apart\)/);
  });
});
