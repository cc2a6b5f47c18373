// Goal: the test-only fault hook fires exactly the listed sites — a listed crash site calls the
// injected crash (main.ts: SIGKILL), a listed non-crash site returns true, anything else is inert —
// and TSCMIG_FAULTS refuses names that are not fault sites. Method: pure functions, a throwing crash.
import { describe, expect, it } from "vitest";
import { liveFaults, parseFaultSites } from "../../src/daemon/live-faults.js";
import { loadDaemonConfig } from "../../src/daemon/daemon-config.js";
import { TscmigError } from "../../src/shared/errors.js";
import type { FaultSite } from "../../src/shared/faults.js";

class Crashed extends Error {
  constructor(readonly site: FaultSite) {
    super(site);
  }
}

describe("live fault hook", () => {
  it("crashes at a listed crash site, fires a listed non-crash site, and leaves the rest inert", () => {
    const f = liveFaults(["crash.destination.beforeRestore", "doorbell.lose"], (site) => {
      throw new Crashed(site);
    });
    expect(() => f.fire("crash.destination.beforeRestore")).toThrow(Crashed);
    expect(f.fire("doorbell.lose")).toBe(true);
    expect(f.fire("crash.source.afterTransfer")).toBe(false);
    expect(f.delayNs("doorbell.delay")).toBe(0n);
  });

  it("parses a comma-separated list of known sites and refuses unknown names", () => {
    expect(parseFaultSites(" crash.source.afterTransfer, crash.destination.afterStage ,")).toEqual(["crash.source.afterTransfer", "crash.destination.afterStage"]);
    expect(parseFaultSites("")).toEqual([]);
    expect(() => parseFaultSites("crash.source.afterTransfr")).toThrow(/unknown fault site/);
  });

  it("comes from TSCMIG_FAULTS through the config loader, none by default", () => {
    const home = { HOME: "/home/op" };
    expect(loadDaemonConfig({ flags: {}, env: home }).faults).toEqual([]);
    expect(loadDaemonConfig({ flags: {}, env: { ...home, TSCMIG_FAULTS: "crash.source.afterPause" } }).faults).toEqual(["crash.source.afterPause"]);
    let err: unknown;
    try {
      loadDaemonConfig({ flags: {}, env: { ...home, TSCMIG_FAULTS: "nope" } });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TscmigError);
    expect((err as TscmigError).message).toMatch(/^faults \(env TSCMIG_FAULTS "nope"\)/);
  });
});
