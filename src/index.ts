/**
 * tscmig as a library: the algorithm that carries a VM's time across a live migration, for a VMM
 * to embed. Everything here is pure computation over injected clocks: no sockets, no files, no
 * timers of its own, no reads of the machine's clocks.
 *
 * - **Kernel arithmetic**, bit-exact with KVM and Linux on x86-64: u64 wrap helpers, the pvclock
 *   time scale, TSC scaling and KVM_SET_TSC_KHZ's decision, pvclock records and their reads,
 *   KVM_SET_CLOCK's advance, the vmclock page and its reads.
 * - **An emulated hypervisor and guest** ({@link EmulatedHost}, {@link EmulatedVm}, {@link Guest}) on
 *   simulated time ({@link SimClock}, {@link SimScheduler}), to try the algorithm without /dev/kvm.
 * - **Snapshot and restore per policy**: {@link captureSnapshot} on the source, {@link validateSnapshot}
 *   and {@link restoreSnapshot} on the destination under `advance`, `kvm-realtime`, `freeze` or
 *   `advance-capped`.
 * - **Blackout estimators with their bounds**: {@link wallclockEstimate}, {@link oneSidedEstimate},
 *   {@link probeOffset} with {@link probeEstimate}, and {@link estimateBlackout} to pick one by name.
 * - **The checker**: {@link checkHistory} proves invariants I1–I9 over a {@link ChaosHistory} the
 *   caller recorded (guest samples and events stamped with true time), or names every violation.
 *
 * The algorithm, the estimators' math and the invariants are explained in the repository's `docs/`
 * (docs/time-across-migration.md, docs/estimators.md, docs/invariants.md).
 *
 * All 64-bit quantities are `bigint`; names carry their unit last (`blackoutNs`, `tscKhz`).
 * Invalid input throws a {@link TscmigError} naming the field, before anything is changed.
 *
 * @example
 * ```ts
 * import { getTimeScale, scaleDelta, tscRatio, scaleTsc, VMX } from "tscmig";
 * const { mul, shift } = getTimeScale(1_000_000_000n, 3_000_000_000n); // ns per cycle at 3 GHz
 * scaleDelta(3_000_000_000n, mul, shift); // 999_999_999n: one second of cycles, in ns
 * const ratio = tscRatio(1_500_000n, 3_000_000n, VMX.fracBits); // a 1.5 GHz guest on a 3 GHz host
 * scaleTsc(3_000_000_000n, ratio, VMX.fracBits); // 1_500_000_000n
 * ```
 *
 * @packageDocumentation
 */

// ---- kernel arithmetic ---------------------------------------------------------------------------
export * from "./shared/kvm/index.js";

// ---- clocks and simulated time -------------------------------------------------------------------
export type { Clock, Scheduler, Timer } from "./shared/time/clock.js";
export { NS_PER_MS, NS_PER_S, NS_PER_US } from "./shared/time/clock.js";
export { SimClock, SimScheduler } from "./shared/time/sim.js";
export { SkewController, type SkewState, type SkewUpdate } from "./shared/time/skew.js";
export { type OffsetModel, offsetAt, maxAbsOffsetNs, sum as sumOffsetModels, ZERO_MODEL } from "./shared/time/offset-model.js";

// ---- the emulated hypervisor and guest -----------------------------------------------------------
export type { HostClockPair, HostInfo, HypervisorBackend, HypervisorVm, KvmClockData, PvclockPages, RealGuestCounters, RealGuestReports, RealGuestSample, VmSpec, VmState } from "./shared/hypervisor/backend.js";
export { EmulatedBackend } from "./shared/hypervisor/emulated-backend.js";
export { emulatedTruth, type TruthProbe } from "./shared/hypervisor/truth.js";
export { EmulatedHost, type HostOptions } from "./shared/hypervisor/host.js";
export { EmulatedVm, type VmOptions } from "./shared/hypervisor/vm.js";
export {
  Guest,
  type BoundedNow,
  type BoundedStatus,
  type Clocksource,
  type GuestOptions,
  type GuestState,
  type HandledEvent,
  type HandlingMode,
  type NtpReading,
  type SignalSource,
} from "./shared/guest/guest.js";
export { type NtpState, NTP_PHASE_LIMIT_US, STA_UNSYNC } from "./shared/guest/ntp.js";

// ---- snapshot and restore per policy -------------------------------------------------------------
export { captureSnapshot, validateSnapshot, snapshotRecord, SNAPSHOT_FORMAT_VERSION, type CaptureMeta, type Snapshot } from "./shared/migration/snapshot.js";
export {
  restoreSnapshot,
  guestKvmclockAtSnapshot,
  cyclesIn,
  parsePolicy,
  POLICIES,
  type PolicyName,
  type RestoreInstant,
  type RestoreOptions,
  type RestoreResult,
} from "./shared/migration/restore.js";

// ---- blackout estimators -------------------------------------------------------------------------
export {
  estimateBlackout,
  wallclockEstimate,
  oneSidedEstimate,
  probeOffset,
  probeEstimate,
  parseEstimator,
  DRIFT_ALLOWANCE_PPM,
  ESTIMATORS,
  type BlackoutEstimate,
  type BlackoutInputs,
  type EstimatorName,
  type OneSidedInputs,
  type ProbeExchange,
  type ProbeResult,
} from "./shared/migration/blackout.js";

// ---- the checker over a recorded history ---------------------------------------------------------
export { type GuestSample, type HistoryEvent, MIGRATION_EVENT_FIELDS, type MigrationEvent } from "./shared/history.js";
export { MIGRATION_OUTCOMES, type MigrationError, type MigrationOutcome, type MigrationPath, type MigrationReport, type PhaseTimings, type RestoreReport } from "./shared/migration/report.js";
export { SWITCHOVER_MODES, type SwitchoverMode } from "./shared/migration/messages.js";
export {
  emptyHistory,
  canonicalText,
  historyHash,
  type ChaosEvent,
  type ChaosHistory,
  type ChaosMeta,
  type DaemonMeta,
  type HarnessEvent,
  type RestoredEvent,
  RESTORED_FIELDS,
} from "./chaos/history.js";
export {
  checkHistory,
  CHECKS,
  INVARIANTS,
  INVARIANT_TITLES,
  type CheckCounts,
  type CheckOptions,
  type CheckResult,
  type FaultClass,
  type Invariant,
  type MigrationRow,
  type Value,
  type Violation,
} from "./chaos/checker.js";

// ---- errors and limits ---------------------------------------------------------------------------
export { ERROR_CODES, TscmigError, isTscmigError, type ErrorCode, type Errno, type ErrorDetails } from "./shared/errors.js";
export { LIMITS } from "./shared/limits.js";
