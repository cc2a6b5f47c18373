// An emulated host (docs/time-across-migration.md#the-time-model): a TSC crystal, the kernel's raw monotonic clock derived from it with
// the nominal calibration, and an NTP-disciplined realtime clock with an injected error. All three
// are pure functions of the deployment's true time, read through the injected Clock.
//
//   hostTsc(t)      = tsc0 + tscHz · (t + crystal(t)) / 10^9       (crystal: drift, wander)
//   hostRawNs(t)    = rawBase + scale_delta(hostTsc(t) − tsc0, mul, shift)   (nominal tscHz)
//   hostRealtime(t) = epoch + t + skew(t)
//
// Because the raw clock is derived from the TSC with the *nominal* frequency, it drifts with the
// crystal: that is what makes one-sided blackout measurements cost drift, and only drift.

import { invalid } from "../errors.js";
import { LIMITS } from "../limits.js";
import type { Clock } from "../time/clock.js";
import { type OffsetModel, offsetAt, validateOffsetModel, ZERO_MODEL } from "../time/offset-model.js";
import { SkewController } from "../time/skew.js";
import { getTimeScale, scaleDelta, type TimeScale } from "../kvm/time-scale.js";
import { SVM, VMX, type TscVendor } from "../kvm/tsc.js";
import type { HostInfo } from "./backend.js";

export interface HostOptions {
  name: string;
  /** True time (the deployment's shared reference). */
  clock: Clock;
  /** Wall-clock instant of true time zero. */
  epochNs: bigint;
  tscKhz?: bigint;
  vendor?: "vmx" | "svm";
  tscScaling?: boolean;
  /** The crystal's error: drift and wander only (a crystal never steps). */
  crystal?: OffsetModel;
  /** Host TSC at true time 0 (a host booted some time before). */
  tsc0?: bigint;
  /** Raw clock at true time 0. */
  rawBaseNs?: bigint;
  /** Realtime error model and the bound the host claims for it. */
  skew?: OffsetModel;
  maxerrorNs?: bigint;
  jitterSeed?: bigint;
}

export class EmulatedHost {
  readonly info: HostInfo;
  readonly clock: Clock;
  readonly skew: SkewController;
  readonly epochNs: bigint;
  private readonly tscHz: bigint;
  private readonly crystal: OffsetModel;
  private readonly crystalIsZero: boolean;
  private readonly tsc0: bigint;
  private readonly rawBaseNs: bigint;
  readonly rawScale: TimeScale;
  /**
   * The last instant `tscAt` and `rawNsAt` were asked for, and their values: both are pure functions
   * of true time, and a simulated instant reads one host many times (every message's arrival, every
   * lease check, every guest sample of every vCPU), each read a few bigint products and divisions.
   */
  private tscMemoTNs: bigint | null = null;
  private tscMemo = 0n;
  private rawMemoTNs: bigint | null = null;
  private rawMemo = 0n;

  constructor(opts: HostOptions) {
    const tscKhz = opts.tscKhz ?? 2_000_000n;
    if (tscKhz < LIMITS.tscKhzMin || tscKhz > LIMITS.tscKhzMax)
      throw invalid("host.tscKhz", `must be within ${LIMITS.tscKhzMin}..${LIMITS.tscKhzMax} kHz`);
    const u64 = (v: bigint | undefined, field: string) => {
      if (v !== undefined && (v < 0n || v > 0xffff_ffff_ffff_ffffn)) throw invalid(field, "must be a u64");
    };
    u64(opts.tsc0, "host.tsc0");
    u64(opts.rawBaseNs, "host.rawBaseNs");
    u64(opts.epochNs, "host.epochNs");
    const vendor: TscVendor = opts.vendor === "svm" ? SVM : opts.vendor === "vmx" || opts.vendor === undefined ? VMX : badVendor(opts.vendor);
    if (opts.name.length === 0 || opts.name.length > LIMITS.idLengthMax) throw invalid("host.name", "must be 1..128 characters");
    this.crystal = opts.crystal ?? ZERO_MODEL;
    validateOffsetModel(this.crystal, "host.crystal", { crystal: true });
    this.crystalIsZero = this.crystal.kind === "constant" && this.crystal.offsetNs === 0n;
    this.info = { name: opts.name, tscKhz, vendor, tscScaling: opts.tscScaling ?? true };
    this.clock = opts.clock;
    this.epochNs = opts.epochNs;
    this.tscHz = tscKhz * 1000n;
    this.tsc0 = opts.tsc0 ?? 0n;
    this.rawBaseNs = opts.rawBaseNs ?? 0n;
    this.rawScale = getTimeScale(1_000_000_000n, this.tscHz);
    this.skew = new SkewController(opts.skew ?? ZERO_MODEL, opts.maxerrorNs ?? 0n, opts.jitterSeed ?? 0n);
  }

  /** True time now. */
  trueNs(): bigint {
    return this.clock.monotonicNs();
  }

  tscAt(tNs: bigint): bigint {
    if (this.tscMemoTNs === tNs) return this.tscMemo;
    const local = this.crystalIsZero ? tNs : tNs + offsetAt(this.crystal, tNs);
    this.tscMemo = this.tsc0 + (this.tscHz * local) / 1_000_000_000n;
    this.tscMemoTNs = tNs;
    return this.tscMemo;
  }

  rawNsAt(tNs: bigint): bigint {
    if (this.rawMemoTNs === tNs) return this.rawMemo;
    this.rawMemo = this.rawBaseNs + scaleDelta(this.tscAt(tNs) - this.tsc0, this.rawScale.mul, this.rawScale.shift);
    this.rawMemoTNs = tNs;
    return this.rawMemo;
  }

  /** Raw nanoseconds for a TSC value read on this host (the clocksource conversion). */
  rawNsOfTsc(tsc: bigint): bigint {
    return this.rawBaseNs + scaleDelta(tsc - this.tsc0, this.rawScale.mul, this.rawScale.shift);
  }

  realtimeNsAt(tNs: bigint): bigint {
    return this.epochNs + tNs + this.skew.offsetAt(tNs);
  }

  /** The host's own monotonic clock now: what durations measured on this host use. */
  rawNs(): bigint {
    return this.rawNsAt(this.trueNs());
  }

  realtimeNs(): bigint {
    return this.realtimeNsAt(this.trueNs());
  }

  maxerrorNs(): bigint {
    return this.skew.state.maxerrorNs;
  }
}

function badVendor(v: string): never {
  throw invalid("host.vendor", `must be "vmx" or "svm", not ${JSON.stringify(v)}`);
}
