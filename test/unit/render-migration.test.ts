// Goal: `tscmig migrate`'s summary never presents a committed migration whose restore figures the
// source never received (it learned the commit from Resolve) as measured: no "bound ±0 ns (within)".
// Method: renderMigration on a report with restore figures and on one with the zeros such a source holds.

import { describe, expect, it } from "vitest";
import { renderMigration } from "../../src/cli/render.js";

const base = { outcome: "committed", migrationId: "m1", vmId: "vm1", policy: "advance", estimator: "one-sided", switchover: "on-receipt", doorbellRung: false, capped: false };
const zeros = { trueBlackoutNs: "0", estimatedBlackoutNs: "0", advancedNs: "0", tscErrorNs: "0", kvmclockErrorNs: "0", errorBoundNs: "0", tscAtResume: "0" };

describe("renderMigration", () => {
  it("prints a received restore report's figures and verdict", () => {
    const out = renderMigration({ ...base, ...zeros, trueBlackoutNs: "14000000", estimatedBlackoutNs: "13000000", advancedNs: "13000000", tscErrorNs: "1000", errorBoundNs: "300000", tscAtResume: "184273856233183" });
    expect(out).toContain("blackout: true 14.000 ms");
    expect(out).toContain("reported bound ±300.000 µs (within)");
  });

  it("says the restore report was not received instead of printing zeros as a verdict", () => {
    const out = renderMigration({ ...base, ...zeros });
    expect(out).toContain("outcome: committed");
    expect(out).toContain("restore report: not received");
    expect(out).not.toContain("(within)");
    expect(out).not.toContain("blackout: true 0 ns");
  });
});
