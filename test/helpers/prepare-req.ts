// A peer's Prepare as tests build it by hand: a 1-vCPU VM at 2 GHz under advance + one-sided, from
// source "a"; each test names what it is about and overrides the rest.
import type { PrepareReq } from "../../src/shared/migration/messages.js";

export function prepareReq(o: Partial<PrepareReq> & Pick<PrepareReq, "migrationId" | "vmId">): PrepareReq {
  return {
    generation: 1n,
    vcpuCount: 1,
    guestTscKhz: 2_000_000n,
    sourceFracBits: 48,
    policy: "advance",
    estimator: "one-sided",
    doorbell: false,
    advanceCapNs: 0n,
    sourceName: "a",
    sourceGrpc: "a",
    sourceKey: "ee".repeat(16),
    ...o,
  };
}

/** Prepare `i` of a flood from "mallory", for a VM nobody runs unless `vmId` says otherwise. */
export function floodPrepare(i: number, vmId = `ghost-${i}`): PrepareReq {
  return prepareReq({ migrationId: `flood-${i}`, vmId, sourceName: "mallory", sourceGrpc: "mallory", sourceKey: "aa".repeat(16) });
}
