// What a restarting daemon reads from its journal, read and checked in full before anything is
// acted on: every record's checksum and structure (journal-integrity.ts), every VM's state
// (hosted-vm.ts). A damaged record stops the start with `data_loss` (reason
// `journal_record_damaged`) naming the VM and the record, and nothing has run by then.
//
// Why stop rather than quarantine the record and start without it: the journal is the fencing
// authority. A damaged VM record may be a tombstone (the generation a VM left at) or the owner
// record of a VM paused mid-migration; a daemon that started without it would accept that VM back
// at a stale generation, or let a source's Resolve read "unknown" and drop a copy that was the only
// one. Either runs a VM twice or loses it (I6, I7). Only an operator can decide what the record
// should have said (restore the journal, or remove the record knowing what it was), so the start
// fails with a message that says which record, and the daemon never runs from it.

import type { HostInfo } from "../shared/hypervisor/backend.js";
import type { JournalStore, MigrationRecord, VmRecord } from "../shared/migration/journal.js";
import { TscmigError } from "../shared/errors.js";
import { isDamagedRecord, type RecordRef } from "../shared/migration/journal-integrity.js";
import { loadPersistedVm, loadStagedPayload, type PersistedVm, type StagedPayload } from "../shared/migration/hosted-vm.js";

export type RecoveredVm =
  /** `held`: the paused VM's state, kept until its destination acknowledged the Commit. */
  | { kind: "tombstone"; rec: VmRecord; held?: PersistedVm }
  | { kind: "staged"; rec: VmRecord; payload: StagedPayload }
  | { kind: "hosted"; rec: VmRecord; state: PersistedVm; text: string };

export interface RecoveryPlan {
  vms: RecoveredVm[];
  /** Every migration record, oldest first. */
  migrations: MigrationRecord[];
}

/** Reads and checks the whole journal; throws on the first damaged record, before anything acts. */
export function readRecoveryPlan(journal: JournalStore, host: HostInfo): RecoveryPlan {
  try {
    const migrations = journal.listMigrations();
    const vms = journal.listVms().map((rec) => recoveredVm(rec, host));
    return { vms, migrations };
  } catch (e) {
    if (!isDamagedRecord(e)) throw e;
    throw new TscmigError(
      e.code,
      `${e.message}. Nothing runs from a damaged record: restore the journal from a copy, or delete that record knowing what it held (a tombstone or a paused VM lost this way can run twice or nowhere)`,
      { reason: e.reason as string, ...(e.field !== undefined ? { field: e.field } : {}) },
    );
  }
}

function recoveredVm(rec: VmRecord, host: HostInfo): RecoveredVm {
  const ref: RecordRef = { table: "vms", key: rec.vmId, vmId: rec.vmId };
  const text = typeof rec.state === "string" ? rec.state : Buffer.from(rec.state).toString("utf8");
  switch (rec.role) {
    case "handed-off":
      return text === "" ? { kind: "tombstone", rec } : { kind: "tombstone", rec, held: loadPersistedVm(text, ref, host) };
    case "staged":
      return { kind: "staged", rec, payload: loadStagedPayload(text, ref, rec.generation) };
    case "owner":
    case "migrating-out":
      return { kind: "hosted", rec, state: loadPersistedVm(text, ref, host), text };
  }
}
