// The guest kernel's NTP error state as Linux keeps it (kernel/time/ntp.c, kvm-time.md §6):
// time_maxerror grows by MAXFREQ/NSEC_PER_USEC = 500 µs at every second_overflow() and saturates at
// NTP_PHASE_LIMIT (16 s), which sets STA_UNSYNC. We evaluate the per-second ticks lazily from the
// guest's own clocksource (second_overflow runs on guest seconds), which is exact and needs no timer.

export const STA_PLL = 0x1;
export const STA_UNSYNC = 0x40;
export const NTP_PHASE_LIMIT_US = 16_000_000n;
export const MAXERROR_GROWTH_US_PER_S = 500n;
export const TIME_OK = 0;
export const TIME_ERROR = 5;

export interface NtpState {
  status: number;
  maxerrorUs: bigint;
  esterrorUs: bigint;
  /** Guest clocksource ns of the last second_overflow() tick applied. */
  tickClocksourceNs: bigint;
}

export function bootNtpState(clocksourceNs: bigint): NtpState {
  return { status: STA_UNSYNC, maxerrorUs: NTP_PHASE_LIMIT_US, esterrorUs: NTP_PHASE_LIMIT_US, tickClocksourceNs: clocksourceNs };
}

/** Applies the second_overflow() ticks due by clocksource time `nowCsNs` (mutates). */
export function secondOverflow(s: NtpState, nowCsNs: bigint): void {
  if (nowCsNs <= s.tickClocksourceNs) return;
  const ticks = (nowCsNs - s.tickClocksourceNs) / 1_000_000_000n;
  if (ticks === 0n) return;
  s.tickClocksourceNs += ticks * 1_000_000_000n;
  s.maxerrorUs += ticks * MAXERROR_GROWTH_US_PER_S;
  if (s.maxerrorUs > NTP_PHASE_LIMIT_US) {
    s.maxerrorUs = NTP_PHASE_LIMIT_US;
    s.status |= STA_UNSYNC;
  }
}

/** __ntp_clear for the error fields: what "ditch the NTP sync" means (Franke, thread §7). */
export function ditchSync(s: NtpState): void {
  s.status |= STA_UNSYNC;
  s.maxerrorUs = NTP_PHASE_LIMIT_US;
  s.esterrorUs = NTP_PHASE_LIMIT_US;
}

/** adjtimex(ADJ_MAXERROR|ADJ_ESTERROR|ADJ_STATUS) from a synchronising daemon. */
export function adjtimexSync(s: NtpState, maxerrorUs: bigint, esterrorUs: bigint, nowCsNs: bigint): void {
  const clamp = (v: bigint) => (v < 0n ? 0n : v > NTP_PHASE_LIMIT_US ? NTP_PHASE_LIMIT_US : v);
  s.maxerrorUs = clamp(maxerrorUs);
  s.esterrorUs = clamp(esterrorUs);
  s.status = (s.status | STA_PLL) & ~STA_UNSYNC;
  s.tickClocksourceNs = nowCsNs;
}

/** adjtimex()'s return value: TIME_ERROR while unsynchronised. */
export function adjtimexState(s: NtpState): number {
  return (s.status & STA_UNSYNC) !== 0 ? TIME_ERROR : TIME_OK;
}
