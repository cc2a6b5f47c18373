// Pieces of the page that only format: the skew model in words, a migration's phase timeline, the
// introduced error against its bound, a VM's figures.

import { h } from "../shared/dom.js";
import { fmtKhz, fmtNs } from "../shared/units.js";
import type { MigrationEvent, SkewModel, VmEvent } from "./model.js";

export function describeSkew(m: SkewModel): string {
  const n = (k: string) => fmtNs(m[k] as string);
  switch (m.kind) {
    case "constant":
      return `offset ${n("offsetNs")}`;
    case "drift":
      return `drift ${String(m.ppm)} ppm`;
    case "step":
      return `step ${n("stepNs")}`;
    case "periodic":
      return `wander ±${n("amplitudeNs")} every ${n("periodNs")}`;
    case "jitter":
      return `jitter ±${n("amplitudeNs")} every ${n("intervalNs")}`;
    case "strobe":
      return `strobe ${n("deltaNs")} every ${n("periodNs")}`;
    case "sum": {
      const parts = (m.parts ?? []).map(describeSkew).filter((t) => t !== "offset 0 ns");
      return parts.length > 0 ? parts.join(" + ") : "none (agrees with true time)";
    }
    default:
      return m.kind;
  }
}

export function vmStats(v: VmEvent): HTMLElement {
  const b = v.bounded;
  return h(
    "div",
    { class: "stats" },
    h("span", {}, "bounded clock ", h("b", { class: "pill", "data-status": b.status, "data-role": "vm-status" }, b.status)),
    h("span", {}, "guest error ", h("b", {}, b.errorNs !== undefined ? fmtNs(b.errorNs) : "–")),
    h("span", {}, "claimed ± ", h("b", {}, b.latestErrorNs !== undefined && b.earliestErrorNs !== undefined ? fmtNs((Number(b.latestErrorNs) - Number(b.earliestErrorNs)) / 2) : "–")),
    h("span", { title: "as of the guest's last NTP tick" }, "NTP maxerror ", h("b", {}, fmtNs(Number(v.ntp.maxerrorUs) * 1000)), v.ntp.synchronized ? "" : " (UNSYNC)"),
    h("span", {}, `${v.vcpus} vCPU${v.vcpus === 1 ? "" : "s"} · ${fmtKhz(v.guestTscKhz)} · ${v.clocksource}`),
    h("span", {}, `generation ${v.generation} · ${v.role}${v.running ? "" : " (paused)"}`),
    h("span", {}, `migrations handled by the guest ${v.handledMigrations} · vmclock marker ${v.vmclock.disruptionMarker}`),
    v.stoppedVcpus > 0 ? h("span", { class: "bad" }, `PVCLOCK_GUEST_STOPPED on ${v.stoppedVcpus}/${v.vcpusRead} vCPUs`) : null,
    v.migrating ? h("span", { class: "bad" }, `migrating (${v.migrating})`) : null,
  );
}

interface Phase {
  label: string;
  startNs: number;
  durNs: number;
  color: string;
  note?: string;
}

/** The phases of a migration on one time line from the pause (source) or the estimated pause (destination). */
export function phasesOf(m: MigrationEvent): { phases: Phase[]; totalNs: number; title: string } {
  const p = m.phases ?? {};
  const num = (v: string | undefined) => (v === undefined ? 0 : Number(v));
  if (m.direction === "out") {
    const capture = num(p.captureNs);
    const encode = num(p.encodeNs);
    const transfer = num(p.transferNs);
    const commit = num(p.commitNs);
    const decode = num(p.decodeNs);
    const restore = num(p.restoreNs);
    const fwd = Math.min(num(m.transferForwardNs), transfer);
    const tStart = capture + encode;
    const cStart = tStart + transfer;
    const blackout = num(m.trueBlackoutNs);
    const phases: Phase[] = [
      { label: "capture", startNs: 0, durNs: capture, color: "#8250df" },
      { label: "encode", startNs: capture, durNs: encode, color: "#bf3989" },
      { label: "transfer (round trip)", startNs: tStart, durNs: transfer, color: "#0969da" },
      { label: "  decode (destination)", startNs: tStart + fwd, durNs: decode, color: "#54aeff", note: "inside the transfer" },
      { label: "commit (round trip)", startNs: cStart, durNs: commit, color: "#1a7f37" },
      { label: "  restore (destination)", startNs: cStart + Math.max(0, (commit - restore) / 2), durNs: restore, color: "#4ac26b", note: "inside the commit; placement approximate" },
    ];
    if (blackout > 0) phases.push({ label: "blackout (true)", startNs: 0, durNs: blackout, color: "#cf222e" });
    return { phases, totalNs: Math.max(blackout, cStart + commit, 1), title: "from the source's pause" };
  }
  // Destination: its own instants on the shared true clock, from the Transfer's arrival or the
  // estimated pause, whichever is earlier, to the resume here.
  const est = num(m.estimatedBlackoutNs);
  const resume = num(m.resumeTrueNs);
  const recv = num(m.transferReceivedTrueNs) || resume - est;
  const pause = resume - est;
  const origin = Math.min(recv, pause);
  const decode = num(p.decodeNs);
  const restore = num(p.restoreNs);
  const phases: Phase[] = [];
  if (recv > pause) phases.push({ label: "source: capture, encode, send", startNs: pause - origin, durNs: recv - pause, color: "#8250df", note: "as far as the destination can tell" });
  phases.push(
    { label: "decode", startNs: recv - origin, durNs: decode, color: "#54aeff" },
    { label: "wait for commit", startNs: recv - origin + decode, durNs: Math.max(0, resume - restore - recv - decode), color: "#d0d7de" },
    { label: "restore", startNs: resume - restore - origin, durNs: restore, color: "#4ac26b" },
    { label: "blackout (estimated)", startNs: pause - origin, durNs: est, color: "#cf222e" },
  );
  return { phases, totalNs: Math.max(resume - origin, 1), title: "on the shared true clock, up to the resume here" };
}

export function gantt(m: MigrationEvent): HTMLElement {
  const { phases, totalNs, title } = phasesOf(m);
  const el = h("div", { class: "gantt", title, "data-role": "phases", "data-phases": phases.map((p) => p.label.trim()).join(",") });
  for (const p of phases) {
    const left = (100 * Math.max(0, p.startNs)) / totalNs;
    const width = Math.min(100 - left, (100 * p.durNs) / totalNs);
    const bar = h("div", { class: "bar", title: p.note ?? "" });
    bar.style.left = `${left}%`;
    bar.style.width = `${Math.max(width, 0)}%`;
    bar.style.background = p.color;
    el.append(h("div", {}, p.label), h("div", { class: "track" }, bar), h("div", { class: "num" }, fmtNs(p.durNs)));
  }
  return el;
}

/** |introduced error| against the bound: green within, red past it. */
export function errorVsBound(m: MigrationEvent): HTMLElement {
  const bound = Number(m.errorBoundNs ?? "0");
  if (m.tscErrorNs === undefined) {
    return h("span", { class: "muted" }, `bound ${fmtNs(bound)}; the introduced error is known at the source (it holds the truth of the pause)`);
  }
  const err = Number(m.tscErrorNs);
  const within = Math.abs(err) <= bound;
  const frac = bound > 0 ? Math.min(1, Math.abs(err) / bound) : 1;
  const bar = h("div", {});
  bar.style.width = `${(frac * 100).toFixed(1)}%`;
  bar.style.background = within ? "#1a7f37" : "#cf222e";
  return h(
    "span",
    { "data-role": "error-vs-bound", "data-within": String(within) },
    h("span", { class: "errbar", title: "introduced error as a share of the bound" }, bar),
    h("span", { class: within ? "ok" : "bad" }, `${fmtNs(err)} of ±${fmtNs(bound)}${within ? "" : " — PAST THE BOUND"}`),
  );
}
