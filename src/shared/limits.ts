// Every limit of the product in one place (STYLE 11, TigerBeetle's "put a limit on everything").
// Relations between them are checked when this module loads.

import { assert } from "./errors.js";

export const LIMITS = {
  /** KVM_MAX_VCPUS on x86 is far larger; 1024 is the product's contract (docs/time-across-migration.md#the-time-model). */
  vcpuCountMax: 1024,
  /** Lowest and highest TSC frequency we emulate, in kHz (1 MHz .. 0x7fffffff kHz, KVM's cap). */
  tscKhzMin: 1_000n,
  tscKhzMax: 0x7fff_ffffn,
  /** |drift| of a crystal or of a realtime skew model: Linux's MAXFREQ (500 ppm). */
  driftPpmMax: 500,
  /** |offset| of any skew model, 1000 s (Jepsen's bumps go to 262 s). */
  offsetNsMax: 1_000_000_000_000n,
  /** One-sided anchors (Handover answers before the Transfer) a destination keeps per migration. */
  anchorsMax: 16,
  /** Longest blackout a destination accepts before it refuses the migration (10 min). */
  blackoutNsMax: 600_000_000_000n,
  /** Largest encoded gRPC message either daemon accepts or sends. */
  messageBytesMax: 4 * 1024 * 1024,
  /** VMs one daemon hosts. */
  vmCountMax: 10_000,
  /** Migrations one daemon carries at once, in either direction. */
  migrationsInFlightMax: 256,
  /**
   * Calls of one exchange method (the Handover) a server keeps open at once: one per migration in
   * flight, twice over. Beyond, a new call is refused at once (resource_exhausted): an authenticated
   * peer cannot park streams without end.
   */
  exchangeCallsMax: 512,
  /**
   * How long a new exchange call (a Handover) may hold its slot before its first message arrives;
   * past it the call is ended (deadline_exceeded, reason exchange_idle) and the slot freed. A source
   * writes its first message as it opens the call and gives up on it after `rpcDeadlineNs` without
   * an answer, and the server starts counting only when the call reaches it, after that write: so
   * the server never ends a call whose source still waits on it. No idle limit between later
   * messages: those gaps hold a VM's pause and capture, and the source's durable COMMIT write, which
   * no deadline here can bound; `exchangeCallNsMax` bounds the call as a whole.
   */
  exchangeFirstMessageNs: 5_000_000_000n,
  /** Messages one exchange call carries at most: Open, the probes (one per anchor), Transfer, Commit, and spare. */
  exchangeMessagesMax: 20,
  /**
   * Longest an exchange call may hold its slot, however busy. A source gives its own Handover call
   * this long (`exchangeMessagesMax` answers of `rpcDeadlineNs` each, as its gRPC deadline) and the
   * call is cancelled then anyway; the server's cut only ends calls that declared no deadline, or a
   * longer one: a peer that opened for a real migration and then went quiet parks a slot this long.
   */
  exchangeCallNsMax: 100_000_000_000n,
  /**
   * How long a prepared (not yet staged) migration holds its slot after the source's last message:
   * past it the destination aborts it durably. Longer than a Prepare → Transfer of a healthy source
   * (its probes, each within a deadline), short enough that a flood of Prepares frees itself.
   */
  prepareLeaseNs: 15_000_000_000n,
  /** Probe exchanges per migration. */
  probeExchangesMax: 16,
  /** Default per-call deadline between daemons. */
  rpcDeadlineNs: 5_000_000_000n,
  /** Commit/resolve retries before a migration is left for the recovery loop. */
  retriesMax: 20,
  /** Length of an id (VM, migration, daemon name). */
  idLengthMax: 128,
  /** Cap of `advance-capped` unless the request gives one (1 s, docs/time-across-migration.md#advance-capped--advance-up-to-a-point). */
  advanceCapNsDefault: 1_000_000_000n,
  /** NTP_PHASE_LIMIT in µs (kernel/time/ntp.c). */
  ntpPhaseLimitUs: 16_000_000n,
  /** Longest wait between retries of an unwritable journal (a full disk): how late a daemon notices space returned. */
  journalRetryNsMax: 5_000_000_000n,
  /** Samples one VM's workload keeps in memory (a ring). */
  historySamplesMax: 4096,
  /** Concurrent `GET /v1/events` streams one daemon serves (dashboards, `tscmig watch`). */
  eventStreamsMax: 32,
  /** Frames one stream may have waiting for a slow client before it is cut (the client resumes by id). */
  eventQueueFramesMax: 4096,
  /** Recent events kept so a reconnecting stream resumes where it stopped (Last-Event-ID). */
  eventReplayMax: 4096,
  /** A snapshot's backend payload (a real VM's memory, compressed, and its vCPUs' registers). */
  backendPayloadBytesMax: 2 * 1024 * 1024,
  /** Real KVM VMs one daemon hosts at once (each holds a VM fd, one fd and one kvm_run page per vCPU, and vCPU threads). */
  kvmVmsMax: 64,
  /** vCPUs over all of one daemon's real KVM VMs (kernel memory: a few pages each). */
  kvmVcpusTotalMax: 4096,
} as const;

assert(LIMITS.tscKhzMin > 0n && LIMITS.tscKhzMin < LIMITS.tscKhzMax, "tsc kHz range");
assert(LIMITS.vcpuCountMax >= 1 && LIMITS.vcpuCountMax <= 1024, "vCPU limit within the wire format");
assert(LIMITS.advanceCapNsDefault < LIMITS.blackoutNsMax, "cap below the blackout limit");
assert(LIMITS.messageBytesMax >= 1024 * 200, "a 1024-vCPU snapshot must fit a message");
assert(LIMITS.messageBytesMax >= LIMITS.backendPayloadBytesMax + 1024 * 200, "a snapshot with a full backend payload must fit a message");
assert(LIMITS.eventStreamsMax >= 1 && LIMITS.eventQueueFramesMax >= 16 && LIMITS.eventReplayMax >= 16, "event stream limits");
assert(LIMITS.rpcDeadlineNs * BigInt(LIMITS.retriesMax) < LIMITS.blackoutNsMax, "retries end before the blackout limit");
assert(LIMITS.prepareLeaseNs > 2n * LIMITS.rpcDeadlineNs, "a lease outlives a Prepare and a probe that each run to their deadline");
assert(LIMITS.exchangeFirstMessageNs >= LIMITS.rpcDeadlineNs, "a Handover call waits for its first message as long as its source waits for the answer");
assert(LIMITS.exchangeMessagesMax >= LIMITS.anchorsMax + 3, "a Handover call carries Open, a probe per anchor, Transfer and Commit");
assert(LIMITS.exchangeCallNsMax >= LIMITS.rpcDeadlineNs * BigInt(LIMITS.exchangeMessagesMax), "the server cuts a Handover call no sooner than its source's own deadline does");
