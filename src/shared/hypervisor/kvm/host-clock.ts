// The real host's TSC against the daemon's clocks. A KVM VM's guest TSC is the host TSC (plus an
// offset where the kernel honours one), and KVM_GET_CLOCK, once a vCPU has run, reads CLOCK_REALTIME
// and the host TSC at one instant: that pair, with CLOCK_REALTIME − CLOCK_MONOTONIC read around it,
// places a TSC value on CLOCK_MONOTONIC, the live daemons' true time. The rate between pairs comes
// from the pairs themselves (the first and the latest), so the kernel's calibration of tsc_khz does
// not enter; instants are extrapolated from the latest pair, refreshed at most every `refreshNs`.
//
// The daemon's realtime is an emulated host's (epoch + true time + injected skew): `toDaemonRealtime`
// and `toKernelRealtime` move a realtime between that frame and the kernel's, so KVM_SET_CLOCK's
// REALTIME advance sees the skew a skewed host would have.

import { TscmigError } from "../../errors.js";
import { CLOCK_MONOTONIC, CLOCK_REALTIME, type Libc } from "../../platform/libc.js";
import type { EmulatedHost } from "../host.js";

/** One KVM_GET_CLOCK with KVM_CLOCK_HOST_TSC: the kernel's realtime and host TSC of one instant. */
export interface KernelClockPair {
  realtimeNs: bigint;
  hostTsc: bigint;
}

interface Anchor {
  tsc: bigint;
  monoNs: bigint;
}

const DEFAULT_REFRESH_NS = 100_000_000n;
const BRACKETS = 5;
/** A realtime step (settimeofday, a leap second) is far larger than any bracket. */
const REALTIME_STEP_NS = 1_000_000n;
/** Below this span between anchors the nominal rate is used (a rate from a short span is noise). */
const RATE_SPAN_MIN_NS = 1_000_000_000n;

export class HostTscClock {
  private first: Anchor | null = null;
  private last: Anchor | null = null;
  /** CLOCK_REALTIME − CLOCK_MONOTONIC at the latest anchor (changes only when realtime is stepped). */
  private realMinusMonoNs = 0n;
  /** Width of the bracket that gave it (the narrowest yet). */
  private bracketWidthNs: bigint | null = null;

  constructor(
    private readonly libc: Libc,
    private readonly readPair: () => KernelClockPair,
    private readonly host: EmulatedHost,
    private readonly nominalKhz: bigint,
    private readonly refreshNs: bigint = DEFAULT_REFRESH_NS,
  ) {
    this.refresh();
  }

  /** A new anchor now: one KVM_GET_CLOCK, placed on CLOCK_MONOTONIC by CLOCK_REALTIME − CLOCK_MONOTONIC. */
  refresh(): void {
    const pair = this.readPair();
    this.measureRealMinusMono();
    const a = { tsc: pair.hostTsc, monoNs: pair.realtimeNs - this.realMinusMonoNs };
    if (a.tsc === 0n) throw new TscmigError("internal", "KVM_GET_CLOCK gave no host TSC (no vCPU has run on the clock VM)");
    if (this.first === null) this.first = a;
    this.last = a;
  }

  /**
   * CLOCK_REALTIME − CLOCK_MONOTONIC from the narrowest of a few MONOTONIC/REALTIME/MONOTONIC
   * brackets. The two clocks are slewed alike, so the difference moves only when realtime is stepped:
   * a bracket widened by a preemption (tens of µs on a busy host) would move it by half its width, so
   * a reading is taken only from a narrow bracket, or when it shows a step.
   */
  private measureRealMinusMono(): void {
    let best: { d: bigint; width: bigint } | null = null;
    for (let k = 0; k < BRACKETS; k++) {
      const m1 = this.libc.clockNs(CLOCK_MONOTONIC);
      const r = this.libc.clockNs(CLOCK_REALTIME);
      const m2 = this.libc.clockNs(CLOCK_MONOTONIC);
      const width = m2 - m1;
      if (best === null || width < best.width) best = { d: r - (m1 + m2) / 2n, width };
    }
    const b = best as { d: bigint; width: bigint };
    const moved = b.d - this.realMinusMonoNs;
    const stepped = moved > REALTIME_STEP_NS || moved < -REALTIME_STEP_NS;
    if (this.bracketWidthNs === null || b.width <= this.bracketWidthNs || stepped) {
      this.realMinusMonoNs = b.d;
      this.bracketWidthNs = b.width;
    }
  }

  /** Anchors a kernel pair already read elsewhere (a VM's own KVM_GET_CLOCK): saves an ioctl. */
  absorb(pair: KernelClockPair): void {
    if (pair.hostTsc === 0n) return;
    this.last = { tsc: pair.hostTsc, monoNs: pair.realtimeNs - this.realMinusMonoNs };
  }

  private current(): Anchor {
    const last = this.last as Anchor;
    if (this.host.trueNs() - last.monoNs > this.refreshNs) this.refresh();
    return this.last as Anchor;
  }

  /** Cycles per ns as a fraction num/den. */
  private rate(last: Anchor): { num: bigint; den: bigint } {
    const f = this.first as Anchor;
    const span = last.monoNs - f.monoNs;
    if (span >= RATE_SPAN_MIN_NS && last.tsc > f.tsc) return { num: last.tsc - f.tsc, den: span };
    return { num: this.nominalKhz, den: 1_000_000n };
  }

  /** The host TSC at CLOCK_MONOTONIC instant `monoNs` (true time on a live daemon). */
  tscAtMono(monoNs: bigint): bigint {
    const a = this.current();
    const { num, den } = this.rate(a);
    return a.tsc + ((monoNs - a.monoNs) * num) / den;
  }

  /** The CLOCK_MONOTONIC instant at which the host TSC read `tsc`. */
  monoOfTsc(tsc: bigint): bigint {
    const a = this.current();
    const { num, den } = this.rate(a);
    return a.monoNs + ((tsc - a.tsc) * den) / num;
  }

  /** A kernel CLOCK_REALTIME value in the daemon's realtime frame (its emulated host, skew included). */
  toDaemonRealtime(kernelRealtimeNs: bigint): bigint {
    return this.host.realtimeNsAt(kernelRealtimeNs - this.realMinusMonoNs);
  }

  /** A realtime of the daemon's frame as the kernel's CLOCK_REALTIME would read it (skew now removed). */
  toKernelRealtime(daemonRealtimeNs: bigint): bigint {
    const t = this.host.trueNs();
    const skewNs = this.host.realtimeNsAt(t) - this.host.epochNs - t;
    return daemonRealtimeNs - this.host.epochNs - skewNs + this.realMinusMonoNs;
  }
}
