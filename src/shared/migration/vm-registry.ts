// What the migration roles need from the VMs a daemon hosts, and nothing more: the source pauses,
// resumes, hands off and takes back a VM; the destination asks what it knows of an id and adopts a
// restored VM. The daemon's registry (src/daemon/hosted-vms.ts) implements it; the roles never see
// how VMs are journaled, sampled or shown.

import type { HypervisorVm } from "../hypervisor/backend.js";
import type { GuestState } from "../guest/guest.js";
import type { HostedVm } from "./hosted-vm.js";

/** A VM id this daemon gave up: the generation it left at, and where to ("" if deleted). */
export interface Tombstone {
  generation: bigint;
  peer: string;
}

/** A restored VM that becomes this daemon's: which migration brought it and what to tell its guest. */
export interface Adoption {
  vmId: string;
  generation: bigint;
  migrationId: string;
  /** The guest as it was captured (its NTP state, clocksource, handling). */
  guest: GuestState;
  /** Ring the guest's doorbell once it runs. */
  doorbell: boolean;
  advancedNs: bigint;
  errorBoundNs: bigint;
}

export interface VmRegistry {
  /** The VM hosted here under `id` (running, or paused while migrating out), if any. */
  find(id: string): HostedVm | undefined;
  tombstone(id: string): Tombstone | undefined;
  /** How many VMs are hosted here. */
  readonly size: number;
  /** Marks `h` migrating out (journaled) and stops it: the start of the blackout. */
  pauseForMigration(h: HostedVm): void;
  /** `h` is this daemon's and runs again (after an aborted or refused migration). */
  resume(h: HostedVm): void;
  /** The migration `migrationId` decided to commit: `h` is `peer`'s now; its state is held until `release`. */
  handOff(h: HostedVm, migrationId: string, peer: string): void;
  /** The destination acknowledged the Commit: the handed-off VM's state leaves this daemon. */
  release(migrationId: string): void;
  /** The destination durably refused the Commit: the handed-off VM runs here again. */
  reclaim(migrationId: string): void;
  /**
   * A restored VM becomes this daemon's and runs (inside the transaction that journals the
   * migration's decision: a rollback undoes it). Returns when it resumed, on the true clock and on
   * this host's raw clock.
   */
  adopt(vm: HypervisorVm, a: Adoption): { doorbellRung: boolean; resumedTrueNs: bigint; resumedRawNs: bigint };
}

/** One step of crash recovery a role asks the daemon's recovery loop to run (and retry with back-off). */
export interface RecoveryTask {
  /** Identity of the migration the step is about, unique across roles. */
  key: string;
  step: "commit" | "resolve";
  migrationId: string;
  vmId: string;
  /**
   * The peer's address the step calls: while it is unreachable, one step probes it for all of them.
   * Absent for a step that calls no peer (it never waits on one's back-off).
   */
  peer?: string;
  run(): Promise<void>;
}
