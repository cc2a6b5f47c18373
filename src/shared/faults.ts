// Named fault sites (FoundationDB's BUGGIFY): inert in production, fired by seeded chance in
// simulation. A site is a stable string; the simulator decides per site whether it fires.

export const FAULT_SITES = [
  // process crashes at every protocol phase (the simulator kills and restarts the daemon)
  "crash.source.afterPrepare",
  "crash.source.afterPause",
  "crash.source.afterTransfer",
  "crash.source.afterCommitJournal",
  "crash.source.afterCommit",
  // on-receipt switchover: "handing off" journaled, Transfer not sent; the destination's Resolve answered
  "crash.source.afterHandingOffJournal",
  "crash.source.afterResolve",
  "crash.destination.afterStage",
  "crash.destination.beforeRestore",
  // restored and adopted (running, journaled as owner), the decision not yet journaled
  "crash.destination.duringRestore",
  "crash.destination.afterRestore",
  // on-receipt switchover: a fence journaled, the Resolve not answered yet
  "crash.destination.afterFence",
  // doorbell delivery
  "doorbell.lose",
] as const;

export type FaultSite = (typeof FAULT_SITES)[number];

export interface Faults {
  /** True when the fault at `site` fires now. */
  fire(site: FaultSite): boolean;
  /** Extra delay injected at a delay site (doorbell delivery), ns. */
  delayNs(site: "doorbell.delay"): bigint;
}

export const NO_FAULTS: Faults = {
  fire: () => false,
  delayNs: () => 0n,
};

/** Thrown at a crash site: the simulator catches it and restarts the daemon from its journal. */
export class CrashSignal extends Error {
  constructor(readonly site: FaultSite) {
    super(`simulated crash at ${site}`);
    this.name = "CrashSignal";
  }
}

export function crashPoint(faults: Faults, site: FaultSite): void {
  if (faults.fire(site)) throw new CrashSignal(site);
}
