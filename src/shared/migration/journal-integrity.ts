// Integrity of journal records, shared by the SQLite journal (daemon) and the in-memory one
// (simulator), so that both refuse a damaged record by the same path.
//
// Two checks, because they catch different damage:
// - A checksum over every field of a record, written with it and compared on every read: a record
//   edited in place (a TSC offset, a generation, a role changed with sqlite3, a torn or rotted
//   page) no longer matches. It is a SHA-256, not a CRC, so that no single edit can keep it
//   matching by accident; it is not a signature (anyone who can write the file can recompute it),
//   which is the structural check's job.
// - Structural validation of what a record says (this file: the row; hosted-vm.ts: a VM's state):
//   a record whose checksum matches but whose content is impossible (written by a bug, or edited
//   with the checksum recomputed) is refused too.
//
// A damaged record is `data_loss` with reason `journal_record_damaged`, naming the VM and the
// record. Nothing runs from it: a daemon refuses to start (see daemon/recovery-plan.ts for why it
// stops rather than quarantines).

import { hash } from "node:crypto";
import { TscmigError } from "../errors.js";
import { LIMITS } from "../limits.js";
import type { Decision, MigrationRecord, MigrationRole, VmRecord, VmRole } from "./journal.js";

export const VM_ROLES: readonly VmRole[] = ["owner", "migrating-out", "staged", "handed-off"];
export const MIGRATION_ROLES: readonly MigrationRole[] = ["source", "destination"];
export const DECISIONS: readonly Decision[] = ["pending", "committed", "aborted"];

export const DAMAGED_REASON = "journal_record_damaged";

const U64_MAX = (1n << 64n) - 1n;
const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;
/** Hex digits of the SHA-256 kept (128 bits). */
const CHECKSUM_HEX = 32;

/** Which record: the table and key, and the VM it is about. */
export interface RecordRef {
  table: "vms" | "migrations";
  key: string;
  vmId: string;
}

/** The typed error for a damaged record: names the VM, the record and what is wrong with it. */
export function damagedRecord(ref: RecordRef, problem: string, subfield?: string): TscmigError {
  const where = ref.table === "vms" ? `VM record of ${ref.vmId}` : `migration record ${ref.key} (VM ${ref.vmId})`;
  return new TscmigError("data_loss", `journal ${where} is damaged: ${problem}`, {
    reason: DAMAGED_REASON,
    field: `journal.${ref.table}[${ref.key}]${subfield !== undefined ? `.${subfield}` : ""}`,
  });
}

export function isDamagedRecord(e: unknown): e is TscmigError {
  return e instanceof TscmigError && e.reason === DAMAGED_REASON;
}

/**
 * Length-prefixed fields in one string, so that no two different records hash the same text, and
 * one native call per record (a record is hashed on every write: the simulator writes often).
 * Bytes enter as latin-1 text, one character per byte, tagged apart from strings.
 */
function digest(parts: readonly (string | Uint8Array)[]): string {
  let text = "";
  for (const p of parts) {
    const s = typeof p === "string" ? p : Buffer.from(p.buffer, p.byteOffset, p.byteLength).toString("latin1");
    text += `${typeof p === "string" ? "s" : "b"}${s.length}:${s}`;
  }
  return hash("sha256", text, "hex").slice(0, CHECKSUM_HEX);
}

export function vmChecksum(rec: VmRecord): string {
  return digest(["vm/1", rec.vmId, String(rec.generation), rec.role, rec.state, String(rec.updatedNs)]);
}

export function migrationChecksum(rec: MigrationRecord): string {
  return digest([
    "migration/2",
    rec.migrationId,
    rec.source ?? "",
    rec.sourceKey ?? "",
    rec.vmId,
    rec.role,
    rec.phase,
    rec.decision,
    String(rec.generation),
    rec.peer,
    rec.report ?? "\0none",
    String(rec.updatedNs),
  ]);
}

/**
 * Every field a VM record must hold to mean anything, then its checksum (`"unchanged"`: the caller
 * knows the record is byte for byte what was written, as the in-memory journal does of a record
 * nobody damaged, and hashing it again would only cost). Throws `damagedRecord`.
 */
export function checkVmRecord(rec: VmRecord, checksum: string | null | "unchanged"): void {
  const ref: RecordRef = { table: "vms", key: rec.vmId, vmId: rec.vmId };
  checkKey(ref, rec.vmId, "vmId");
  checkInt(ref, rec.generation, 0n, U64_MAX, "generation");
  checkInt(ref, rec.updatedNs, I64_MIN, I64_MAX, "updatedNs");
  if (!VM_ROLES.includes(rec.role)) throw damagedRecord(ref, `unknown role ${JSON.stringify(rec.role)} (known: ${VM_ROLES.join(", ")})`, "role");
  if (typeof rec.state !== "string" && !(rec.state instanceof Uint8Array)) throw damagedRecord(ref, "state is neither text nor bytes", "state");
  if (checksum !== "unchanged") checkSum(ref, checksum, vmChecksum(rec));
}

export function checkMigrationRecord(rec: MigrationRecord, checksum: string | null | "unchanged"): void {
  const ref: RecordRef = { table: "migrations", key: rec.source ? `${rec.source}/${rec.migrationId}` : rec.migrationId, vmId: rec.vmId };
  checkKey(ref, rec.migrationId, "migrationId");
  if (rec.source !== undefined && rec.source !== "") checkKey(ref, rec.source, "source");
  if (rec.sourceKey !== undefined && (typeof rec.sourceKey !== "string" || !/^[0-9a-f]{0,256}$/.test(rec.sourceKey))) throw damagedRecord(ref, "sourceKey is not a hex key", "sourceKey");
  checkKey(ref, rec.vmId, "vmId");
  checkInt(ref, rec.generation, 0n, U64_MAX, "generation");
  checkInt(ref, rec.updatedNs, I64_MIN, I64_MAX, "updatedNs");
  if (!MIGRATION_ROLES.includes(rec.role)) throw damagedRecord(ref, `unknown role ${JSON.stringify(rec.role)} (known: ${MIGRATION_ROLES.join(", ")})`, "role");
  if (!DECISIONS.includes(rec.decision)) throw damagedRecord(ref, `unknown decision ${JSON.stringify(rec.decision)} (known: ${DECISIONS.join(", ")})`, "decision");
  if (typeof rec.phase !== "string" || rec.phase.length === 0 || rec.phase.length > 64) throw damagedRecord(ref, "phase is not a phase name", "phase");
  if (typeof rec.peer !== "string" || rec.peer.length > 1024) throw damagedRecord(ref, "peer is not an address", "peer");
  if (rec.report !== undefined && typeof rec.report !== "string") throw damagedRecord(ref, "report is not text", "report");
  if (checksum !== "unchanged") checkSum(ref, checksum, migrationChecksum(rec));
}

/**
 * A decimal integer column as the journal stores it: the bigint, or `damagedRecord` when the text
 * is not one (an edit such as "abc" or "1e3").
 */
export function intColumn(ref: RecordRef, text: unknown, field: string): bigint {
  if (typeof text !== "string" || !/^-?[0-9]{1,20}$/.test(text)) throw damagedRecord(ref, `${field} ${JSON.stringify(text)} is not a decimal integer`, field);
  return BigInt(text);
}

function checkKey(ref: RecordRef, id: unknown, field: string): void {
  if (typeof id !== "string" || id.length === 0 || id.length > LIMITS.idLengthMax) throw damagedRecord(ref, `${field} is not an id`, field);
}

function checkInt(ref: RecordRef, v: unknown, min: bigint, max: bigint, field: string): void {
  if (typeof v !== "bigint" || v < min || v > max) throw damagedRecord(ref, `${field} ${String(v)} is outside ${min}..${max}`, field);
}

function checkSum(ref: RecordRef, stored: string | null, computed: string): void {
  if (stored === null) throw damagedRecord(ref, "it carries no checksum", "checksum");
  if (stored !== computed) throw damagedRecord(ref, "its checksum does not match its content (edited or corrupted in place)", "checksum");
}
