// `tscmig chaos replay`: one run as a step-through page. Re-simulated from its seed (same seed, same
// run: the simulator is deterministic, and tracing messages draws nothing), or read from a
// `--history` file, then checked; every message on the simulated wire, every fault, every guest
// clock read, every node and harness event and each of the checker's verdicts becomes one step on
// the true-time line. The page (self-contained, its viewer inlined from dist/web/replay.js) shows
// the steps with the state of hosts and guests at the chosen one, and the run's timeline.

import { readFileSync, statSync, writeFileSync } from "node:fs";
import { TscmigError } from "../shared/errors.js";
import { readWebAsset } from "../shared/web-assets.js";
import { type CheckResult, checkHistory } from "./checker.js";
import { type ChaosEvent, type ChaosHistory, historyLineOf } from "./history.js";
import { runTimeline } from "./report/timeline.js";
import type { NetTrace } from "./sim/network.js";
import { runSimulation } from "./sim/run.js";
import type { ScenarioOptions } from "./sim/scenario.js";

export type StepKind = "message" | "fault" | "clock" | "event" | "verdict";

/** One step: [true ms, kind, title, detail, VM or "", daemon or "", 1 when a violation]. */
export type Step = [number, StepKind, string, string, string, string, 0 | 1];

/** Steps one page holds (a run has a few thousand; a pathological one is cut, and says so). */
export const REPLAY_STEPS_MAX = 50_000;

const ms = (ns: bigint) => Math.round(Number(ns) / 1e3) / 1e3;

function fmtNs(ns: bigint): string {
  const a = ns < 0n ? -ns : ns;
  const v = Number(ns);
  if (a >= 1_000_000_000n) return `${(v / 1e9).toPrecision(4)} s`;
  if (a >= 1_000_000n) return `${(v / 1e6).toPrecision(4)} ms`;
  if (a >= 1_000n) return `${(v / 1e3).toPrecision(4)} µs`;
  return `${v} ns`;
}

function eventStep(e: ChaosEvent): Step | null {
  const t = ms(e.trueNs);
  switch (e.kind) {
    case "fault":
      return [t, "fault", e.site, e.detail, "", /^(\S+)/.exec(e.detail)?.[1] ?? "", 0];
    case "run":
      return [t, "event", `${e.vmId} runs on ${e.daemon}`, `generation ${e.generation}`, e.vmId, e.daemon, 0];
    case "stop":
      return [t, "event", `${e.vmId} stops on ${e.daemon}`, `${e.why}, generation ${e.generation}`, e.vmId, e.daemon, 0];
    case "handled":
      return [t, "event", `guest of ${e.vmId} acts on a migration`, `via ${e.via}, marker ${e.marker}, ${e.mode}${e.widenedByNs > 0n ? `, bound widened by ${fmtNs(e.widenedByNs)}` : ""}`, e.vmId, e.daemon, 0];
    case "migration":
      return [
        t,
        "event",
        `migration ${e.migrationId} ${e.outcome}`,
        `${e.vmId} ${e.source}→${e.destination} ${e.policy}/${e.estimator}; blackout ${fmtNs(e.resumeTrueNs - e.pauseTrueNs)}, estimated ${fmtNs(e.estimatedBlackoutNs)}, advanced ${fmtNs(e.advancedNs)}, bound ±${fmtNs(e.errorBoundNs)}`,
        e.vmId,
        e.source,
        0,
      ];
    case "hostClock":
      return [t, "event", `${e.daemon}'s realtime error model set`, `claims ±${fmtNs(e.maxerrorNs)}; ${JSON.stringify(e.model, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v))}`, "", e.daemon, 0];
    case "vm":
      return [t, "event", `${e.vmId} created on ${e.daemon}`, `${e.vcpus} vCPUs, ${e.guestTscKhz} kHz, ${e.clocksource}, migration handling ${e.migrationHandling ? e.handlingMode : "off"}`, e.vmId, e.daemon, 0];
    case "migrateStart":
      return [t, "event", `harness: migrate ${e.vmId} ${e.source}→${e.destination}`, `${e.policy}/${e.estimator}${e.doorbell ? ", doorbell" : ""}`, e.vmId, e.source, 0];
    case "restart":
      return [t, "event", `${e.daemon} restarts`, `incarnation ${e.incarnation}`, "", e.daemon, 0];
    case "restored":
      return [t, "event", `${e.destination} restored ${e.vmId}`, `${e.migrationId}: bound ±${fmtNs(e.errorBoundNs)}, estimated blackout ${fmtNs(e.estimatedBlackoutNs)}`, e.vmId, e.destination, 0];
    case "heal":
      return [t, "event", "faults stop; the network heals", `recovery bound ${fmtNs(e.recoveryBoundNs)}`, "", "", 0];
    case "final":
      return [t, "event", "final ownership", e.owners.map((o) => `${o.vmId}: ${o.daemons.join("+") || "nowhere"} (generation ${o.generation})`).join("; ") + (e.unresolved.length ? `; unresolved ${e.unresolved.join(", ")}` : ""), "", "", 0];
    case "error":
      return [t, "fault", `${e.daemon} threw`, e.message, "", e.daemon, 1];
    default:
      return null;
  }
}

/** Every step of the run in true-time order (stable: a message before the event it caused at the same instant). */
export function replaySteps(h: ChaosHistory, check: CheckResult, messages: readonly NetTrace[]): { steps: Step[]; cut: number } {
  const steps: Step[] = [];
  for (const m of messages) {
    const title = m.what === "reply" ? `${m.from}→${m.to} ${m.method} reply (${m.result})` : `${m.from}→${m.to} ${m.method} ${m.what === "send" ? "sent" : m.what === "deliver" ? "delivered" : "delivered again (duplicate)"}`;
    steps.push([ms(m.trueNs), "message", title, `${m.bytes} bytes`, "", m.what === "reply" ? m.from : m.what === "send" ? m.from : m.to, 0]);
  }
  const epoch = h.meta.epochNs;
  for (const s of h.samples) {
    const b = s.bounded;
    const err = b.realtimeNs - (epoch + s.trueNs);
    const half = (b.latestNs - b.earliestNs) / 2n;
    steps.push([
      ms(s.trueNs),
      "clock",
      `${s.vmId} on ${s.daemon} reads its clocks: ${b.status}`,
      `guest realtime ${err >= 0n ? "+" : ""}${fmtNs(err)} from true time, claims ±${fmtNs(half)}; vCPU0 TSC ${s.tsc[0] ?? "?"}, kvmclock ${s.kvmclockNs[0] ?? "?"} ns`,
      s.vmId,
      s.daemon,
      0,
    ]);
  }
  for (const e of h.events) {
    const st = eventStep(e);
    if (st) steps.push(st);
  }
  for (const v of [...check.violations, ...check.hostFaults]) {
    steps.push([v.trueNs !== undefined ? ms(v.trueNs) : ms(h.events[h.events.length - 1]?.trueNs ?? 0n), "verdict", `${v.invariant}${v.faultClass ? ` (${v.faultClass}: a host clock broke its claim, not a bug)` : " violated"}`, v.message, v.vmId ?? "", v.daemon ?? "", v.faultClass ? 0 : 1]);
  }
  const order: Record<StepKind, number> = { message: 0, fault: 1, event: 2, clock: 3, verdict: 4 };
  steps.sort((a, b) => a[0] - b[0] || order[a[1]] - order[b[1]]);
  const cut = Math.max(0, steps.length - REPLAY_STEPS_MAX);
  return { steps: cut > 0 ? steps.slice(0, REPLAY_STEPS_MAX) : steps, cut };
}

// ---- history files ---------------------------------------------------------------------------------

/** A `--history` file above this size is refused rather than read (one run writes a few MB). */
const HISTORY_FILE_BYTES_MAX = 512 * 1024 * 1024;

/** Reads a `--history` file (canonical JSON lines) back into a history the checker takes. */
export function readHistoryFile(path: string): ChaosHistory {
  let text: string;
  try {
    // A regular file of bounded size: /dev/zero was read without end, a FIFO blocked for good.
    const st = statSync(path);
    if (!st.isFile()) throw new TscmigError("invalid_argument", `--history ${path}: not a regular file (write one with tscmig chaos --history FILE)`, { field: "history" });
    if (st.size > HISTORY_FILE_BYTES_MAX) throw new TscmigError("invalid_argument", `--history ${path}: ${st.size} bytes, more than a run's history may be (${HISTORY_FILE_BYTES_MAX})`, { field: "history" });
    text = readFileSync(path, "utf8");
  } catch (e) {
    if (e instanceof TscmigError) throw e;
    throw new TscmigError("not_found", `--history ${path}: ${e instanceof Error ? e.message : String(e)}`, { field: "history" });
  }
  const h: ChaosHistory = { meta: undefined as unknown as ChaosHistory["meta"], samples: [], events: [] };
  text.split("\n").forEach((line, i) => {
    if (line.trim() !== "") historyLineOf(line, h, `--history ${path}: line ${i + 1}`);
  });
  if (h.meta === undefined)
    throw new TscmigError("invalid_argument", `--history ${path}: no meta line (write one with tscmig chaos --history FILE)`, { field: "history" });
  return h;
}

// ---- the page ---------------------------------------------------------------------------------------

export interface ReplayPage {
  title: string;
  seed: string;
  source: string;
  command: string;
  history: ChaosHistory;
  check: CheckResult;
  messages: NetTrace[];
}

function scriptJson(v: unknown): string {
  return JSON.stringify(v).replaceAll("<", "\\u003c").replaceAll("\u2028", "\\u2028").replaceAll("\u2029", "\\u2029");
}

const escHtml = (s: string) => s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c] as string);

export function replayHtml(p: ReplayPage): string {
  const { steps, cut } = replaySteps(p.history, p.check, p.messages);
  const timeline = runTimeline(p.history, p.check, 0, BigInt(p.seed === "" ? "0" : p.seed), { pointsMax: 2000, hostPointsMax: 400, faultsMax: 2000, verdictsMax: 200 });
  const violations = p.check.violations.length;
  const data = { title: p.title, seed: p.seed, source: p.source, command: p.command, steps, cut, timeline, violations, hostFaults: p.check.hostFaults.length, messagesTraced: p.messages.length > 0 };
  return [
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>${escHtml(p.title)}</title>`,
    `<style>${readWebAsset("replay.css")}</style></head><body>`,
    `<noscript>This step-through view needs JavaScript.</noscript><div id="replay"></div>`,
    `<script type="application/json" id="tscmig-replay-data">${scriptJson(data)}</script>`,
    `<script>${readWebAsset("replay.js").replaceAll("</script", "<\\/script")}</script>`,
    `</body></html>`,
  ].join("\n");
}

export interface ReplayRequest {
  seed?: bigint;
  scenario?: ScenarioOptions;
  historyFile?: string;
  command: string;
}

/** Re-simulates (or reads) and checks one run; the page's inputs. */
export async function replayRun(r: ReplayRequest): Promise<ReplayPage> {
  if (r.historyFile !== undefined) {
    const history = readHistoryFile(r.historyFile);
    return { title: `tscmig chaos replay: ${r.historyFile}`, seed: history.meta.seed.toString(), source: `history file ${r.historyFile}`, command: r.command, history, check: checkHistory(history), messages: [] };
  }
  if (r.seed === undefined || r.scenario === undefined) throw new TscmigError("invalid_argument", "give --seed (with the campaign's scenario flags) or --history FILE", { field: "seed" });
  const messages: NetTrace[] = [];
  const run = await runSimulation(r.seed, { ...r.scenario, traceMessages: (m) => messages.push(m) });
  return { title: `tscmig chaos replay: seed ${r.seed}`, seed: r.seed.toString(), source: "re-simulated from its seed", command: r.command, history: run.history, check: checkHistory(run.history), messages };
}

export function writeReplay(page: ReplayPage, file: string): { steps: number; violations: number } {
  const html = replayHtml(page);
  writeFileSync(file, html);
  return { steps: replaySteps(page.history, page.check, page.messages).steps.length, violations: page.check.violations.length };
}
