// Human-readable renderings shared by the CLI commands: durations in ns as the nearest readable
// unit, and a migration report as a short summary (`--json` prints the report itself).

type Json = Record<string, unknown>;

/** A duration or offset in ns (decimal string or number) as "12.345 ms"; "-" when absent. */
export const fmtNs = (v: unknown): string => {
  if (typeof v !== "string" && typeof v !== "number") return "-";
  const n = BigInt(v);
  const a = n < 0n ? -n : n;
  const sign = n < 0n ? "-" : "";
  if (a >= 1_000_000_000n) return `${sign}${(Number(a) / 1e9).toFixed(6)} s`;
  if (a >= 1_000_000n) return `${sign}${(Number(a) / 1e6).toFixed(3)} ms`;
  if (a >= 1_000n) return `${sign}${(Number(a) / 1e3).toFixed(3)} µs`;
  return `${sign}${a} ns`;
};

/** Whether |introduced TSC error| is within the reported bound; undefined when the report has neither. */
export function withinBound(r: Json): boolean | undefined {
  if (typeof r.tscErrorNs !== "string" || typeof r.errorBoundNs !== "string") return undefined;
  // Both clocks: on a host that ignores TSC offsets (kvm backend) the TSC runs on untouched and only
  // kvmclock shows what the restore did.
  const bound = BigInt(r.errorBoundNs);
  const errs: bigint[] = [BigInt(r.tscErrorNs)];
  if (typeof r.kvmclockErrorNs === "string") errs.push(BigInt(r.kvmclockErrorNs));
  return errs.every((err) => (err < 0n ? -err : err) <= bound);
}

/**
 * Whether a committed report carries the destination's restore figures. A source that learned the
 * commit from Resolve (its Transfer's or Commit's answer lost) has none: every figure is 0, and a
 * guest TSC of 0 at resume is no real restore's.
 */
function hasRestoreFigures(r: Json): boolean {
  return r.tscAtResume !== "0" && r.tscAtResume !== 0;
}

/** `tscmig migrate`'s summary of a migration report. */
export function renderMigration(r: Json): string {
  const lines = [`outcome: ${String(r.outcome)}${r.error ? ` — ${String((r.error as Json).message)}` : ""} (migration ${String(r.migrationId)}, VM ${String(r.vmId)})`];
  if (r.outcome === "committed" && !hasRestoreFigures(r))
    lines.push("restore report: not received (the source learned of the commit from the destination's answer to Resolve, which carries no figures)");
  else if (r.outcome === "committed") {
    const ok = withinBound(r);
    lines.push(
      `policy ${String(r.policy)}, estimator ${String(r.estimator)}, switchover ${String(r.switchover ?? "two-phase")}, doorbell ${r.doorbellRung ? "rung" : "not rung"}${r.capped ? ", advance capped" : ""}`,
      `blackout: true ${fmtNs(r.trueBlackoutNs)}, estimated ${fmtNs(r.estimatedBlackoutNs)}; advanced ${fmtNs(r.advancedNs)}`,
      `introduced error: TSC ${fmtNs(r.tscErrorNs)}, kvmclock ${fmtNs(r.kvmclockErrorNs)}; reported bound ±${fmtNs(r.errorBoundNs)}${ok === undefined ? "" : ok ? " (within)" : " (EXCEEDED)"}`,
    );
  }
  return `${lines.join("\n")}\n`;
}
