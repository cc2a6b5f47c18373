// Operational faults at the journal seam of a simulated daemon (the `disk-full` and `damage`
// kinds). The simulator's "disk" is each daemon's MemoryJournal, which outlives its incarnations.
//
//   disk full  while a window is open every journal write throws what the SQLite store throws on
//              ENOSPC (better-sqlite3's SqliteError, code SQLITE_FULL), so the daemon code sees the
//              same failure it would on a real full disk; reads still work
//   damage     while a daemon is down, one of its VM records is edited in place on the "disk" (the
//              way a bit flip or a hand edit changes a row): not through putVm, so whatever checksum
//              the store keeps goes stale exactly as on disk; the operator later copies the record
//              back from a backup
//
// Damage goes through MemoryJournal's own test hook (`corruptVm`): the record changes and the
// checksum taken before does not, as on a disk edited in place.

import type { MemoryJournal, VmRecord } from "../../shared/migration/journal.js";
import { fromJson, toJson } from "../../shared/serde.js";
import type { Random } from "../../shared/time/random.js";
import type { DamageEdit } from "./scenario.js";

/** What a journal write throws on a full disk (the error better-sqlite3 raises for SQLITE_FULL). */
export function journalFullError(): Error {
  const e = new Error("database or disk is full") as Error & { code: string };
  e.name = "SqliteError";
  e.code = "SQLITE_FULL";
  return e;
}

/** VM records a damage can apply to: VMs the daemon owns, with their state. */
export function damageableVms(j: MemoryJournal): string[] {
  return j
    .listVms()
    .filter((r) => r.role === "owner" && typeof r.state === "string" && r.state.length > 0)
    .map((r) => r.vmId)
    .sort();
}

interface StateShape {
  vm: { vcpus: number; tscOffset: BigUint64Array; ratio: BigUint64Array };
}

/**
 * Edits `vmId`'s stored record in place and returns an undamaged copy (the operator's backup) with
 * a line saying what changed. TSC offsets jump (forward by 2^58 cycles or back by 2^40), the ratio
 * runs 1% fast, the vCPU count no longer matches its columns, or the generation turns negative.
 */
export function damageStoredVmRecord(j: MemoryJournal, vmId: string, edit: DamageEdit, r: Random): { backup: VmRecord; detail: string } {
  const backup = j.getVm(vmId);
  if (!backup || typeof backup.state !== "string") throw new Error(`no stored state for ${vmId}`);
  if (edit === "generation") {
    j.corruptVm(vmId, (rec) => void (rec.generation = -5n));
    return { backup, detail: `${vmId}: generation ${backup.generation} → -5` };
  }
  const st = fromJson<StateShape>(backup.state);
  let detail: string;
  if (edit === "tsc") {
    const forward = r.chance(0.5);
    for (let i = 0; i < st.vm.tscOffset.length; i++) st.vm.tscOffset[i] = BigInt.asUintN(64, (st.vm.tscOffset[i] as bigint) + (forward ? 1n << 58n : -(1n << 40n)));
    detail = `${vmId}: every TSC offset ${forward ? "+2^58" : "-2^40"} cycles`;
  } else if (edit === "ratio") {
    for (let i = 0; i < st.vm.ratio.length; i++) st.vm.ratio[i] = (st.vm.ratio[i] as bigint) + (st.vm.ratio[i] as bigint) / 100n;
    detail = `${vmId}: every TSC ratio +1%`;
  } else {
    const n = st.vm.vcpus;
    st.vm.vcpus = n < 4 ? n + 1 : n - 1;
    detail = `${vmId}: vcpus ${n} → ${st.vm.vcpus} against ${n}-entry columns`;
  }
  const damaged = toJson(st);
  j.corruptVm(vmId, (rec) => void (rec.state = damaged));
  return { backup, detail };
}

/** The operator copies the backup over the damaged record. */
export function restoreStoredVmRecord(j: MemoryJournal, backup: VmRecord): void {
  j.putVm({ ...backup });
}
