// `tscmig watch`: the dashboard's event stream in a terminal. A pure model folds events into what
// the screen shows (host clocks, each VM's bounded clock against true time, recent migrations with
// blackout and introduced error against the bound); the runner redraws it on a terminal a few
// times a second, or prints one line per event elsewhere (pipes, CI logs, --lines).

import { TscmigError } from "../shared/errors.js";
import type { Scheduler } from "../shared/time/clock.js";
import { sleep } from "../shared/time/clock.js";
import { eventStream, type StreamEvent } from "./event-stream.js";

type Obj = Record<string, unknown>;

interface VmRow {
  id: string;
  status: string;
  errorNs: string;
  halfWidthNs: string;
  hostSkewNs: string;
  generation: string;
  note: string;
}

/** "12.3 µs", "-4.56 ms": three significant digits in the unit that fits. */
export function fmtNs(text: string | undefined): string {
  if (text === undefined || !/^-?\d+$/.test(text)) return "–";
  const v = Number(text);
  const a = Math.abs(v);
  const [div, unit] = a >= 1e9 ? [1e9, "s"] : a >= 1e6 ? [1e6, "ms"] : a >= 1e3 ? [1e3, "µs"] : [1, "ns"];
  const x = v / div;
  return `${x.toFixed(div === 1 || Math.abs(x) >= 100 ? 0 : Math.abs(x) >= 10 ? 1 : 2)} ${unit}`;
}

export class WatchModel {
  host: Obj | null = null;
  readonly vms = new Map<string, VmRow>();
  readonly migrations: Obj[] = [];
  trueNs = "0";
  connection = "connecting";
  events = 0;

  apply(e: StreamEvent): void {
    this.events++;
    const d = e.data as Obj;
    switch (e.type) {
      case "state": {
        this.vms.clear();
        this.migrations.length = 0;
        this.host = d.host as Obj;
        for (const v of d.vms as Obj[]) this.vm(v);
        for (const s of d.samples as Obj[]) this.sample(s);
        for (const m of d.migrations as Obj[]) this.migration(m);
        return;
      }
      case "host":
        this.host = d;
        this.trueNs = String(d.trueNs);
        return;
      case "vm":
        return this.vm(d);
      case "vm-gone": {
        const row = this.vms.get(String(d.id));
        if (row) row.note = `migrated to ${String(d.destination)}`;
        return;
      }
      case "sample":
        return this.sample(d);
      case "migration":
        return this.migration(d);
      case "heartbeat":
        this.trueNs = String(d.trueNs);
        return;
      default:
        return;
    }
  }

  private row(id: string): VmRow {
    let r = this.vms.get(id);
    if (!r) this.vms.set(id, (r = { id, status: "?", errorNs: "", halfWidthNs: "", hostSkewNs: "", generation: "?", note: "" }));
    return r;
  }

  private vm(v: Obj): void {
    const r = this.row(String(v.id));
    r.generation = String(v.generation);
    r.status = String((v.bounded as Obj).status);
    r.note = v.migrating ? `migrating (${String(v.migrating)})` : v.running ? "" : "paused";
  }

  private sample(s: Obj): void {
    const r = this.row(String(s.vmId));
    r.status = String(s.status);
    r.errorNs = String(s.errorNs);
    r.halfWidthNs = ((BigInt(String(s.latestErrorNs)) - BigInt(String(s.earliestErrorNs))) / 2n).toString();
    r.hostSkewNs = String(s.hostSkewNs);
  }

  private migration(m: Obj): void {
    const i = this.migrations.findIndex((x) => x.migrationId === m.migrationId && x.direction === m.direction);
    if (i >= 0) this.migrations.splice(i, 1);
    this.migrations.push(m);
    if (this.migrations.length > 8) this.migrations.shift();
  }

  /** The screen, plain text. */
  render(): string {
    const h = this.host;
    const lines: string[] = [];
    lines.push(`tscmig watch — ${h ? String(h.name) : "?"}  [${this.connection}]  ${this.events} events`);
    if (h)
      lines.push(
        `host: realtime skew ${fmtNs(String(h.skewNs))} (claims ±${fmtNs(String(h.maxerrorNs))})  TSC ${String(h.tscKhz)} kHz ${String(h.vendor)}  gRPC ${String(h.grpc)}`,
      );
    lines.push("");
    lines.push(pad(["VM", "gen", "bounded clock", "guest − true", "claimed ±", "host skew", ""], [20, 4, 14, 13, 13, 12, 0]));
    for (const r of this.vms.values()) {
      lines.push(pad([r.id, r.generation, r.status, fmtNs(r.errorNs), fmtNs(r.halfWidthNs), fmtNs(r.hostSkewNs), r.note], [20, 4, 14, 13, 13, 12, 0]));
    }
    if (this.vms.size === 0) lines.push("(no VMs)");
    lines.push("");
    lines.push("recent migrations:");
    for (const m of [...this.migrations].reverse()) lines.push(`  ${migrationLine(m)}`);
    if (this.migrations.length === 0) lines.push("  (none)");
    return `${lines.join("\n")}\n`;
  }
}

function pad(cells: string[], widths: number[]): string {
  return cells.map((c, i) => ((widths[i] ?? 0) > 0 ? c.slice(0, widths[i]).padEnd(widths[i] ?? 0) : c)).join(" ").trimEnd();
}

export function migrationLine(m: Obj): string {
  const dir = m.direction === "out" ? `out → ${String(m.destination)}` : `in ← ${String(m.source)}`;
  const base = `${String(m.migrationId)} ${String(m.vmId)} ${dir} ${String(m.policy ?? "?")}/${String(m.estimator ?? "?")} ${String(m.outcome)}`;
  if (m.outcome !== "committed") return base;
  if (m.direction === "out") {
    const err = BigInt(String(m.tscErrorNs));
    const bound = BigInt(String(m.errorBoundNs));
    const within = (err < 0n ? -err : err) <= bound;
    return `${base} blackout ${fmtNs(String(m.trueBlackoutNs))} (est. ${fmtNs(String(m.estimatedBlackoutNs))}) error ${fmtNs(String(m.tscErrorNs))} of ±${fmtNs(String(m.errorBoundNs))}${within ? "" : " PAST THE BOUND"}`;
  }
  return `${base} blackout ≈ ${fmtNs(String(m.estimatedBlackoutNs))} (estimated here) bound ±${fmtNs(String(m.errorBoundNs))}`;
}

/** One line for a noteworthy event (line mode); samples and heartbeats are not noteworthy. */
export function eventLine(e: StreamEvent): string | null {
  const d = e.data as Obj;
  switch (e.type) {
    case "state":
      return `state: ${String((d.host as Obj).name)}, ${String(d.vmCount)} VMs, ${(d.migrations as unknown[]).length} migrations`;
    case "vm":
      return null;
    case "vm-gone":
      return `vm ${String(d.id)} left for ${String(d.destination)}`;
    case "guest":
      return `guest of ${String(d.vmId)} acted on a migration via ${String(d.via)} (${String(d.mode)}), marker ${String(d.marker)}`;
    case "migration":
      return `migration ${migrationLine(d)}`;
    case "peers":
      return `peers: ${(d.peers as Obj[]).map((p) => `${String(p.name)} (${String(p.grpc)})`).join(", ")}`;
    case "reset":
    case "bye":
      return `${e.type}: ${String(d.reason)}`;
    default:
      return null;
  }
}

export interface WatchOptions {
  api: string;
  token?: string;
  /** Redraw a screen (a terminal) or print lines. */
  mode: "screen" | "lines" | "json";
  /** Stop after this long (0: until interrupted). */
  durationNs: bigint;
  scheduler: Scheduler;
  write: (s: string) => void;
  signal: AbortSignal;
}

/** Follows the stream, reconnecting from the last id after drops and daemon restarts. */
export async function runWatch(o: WatchOptions): Promise<void> {
  const stop = new AbortController();
  const signal = stop.signal;
  o.signal.addEventListener("abort", () => stop.abort(), { once: true });
  if (o.durationNs > 0n) void sleep(o.scheduler, o.durationNs).then(() => stop.abort());
  const model = new WatchModel();
  let lastId: string | undefined;
  let dirty = false;
  let backoffNs = 250_000_000n;
  const draw = () => {
    if (o.mode !== "screen" || !dirty) return;
    dirty = false;
    o.write(`\x1b[H\x1b[2J${model.render()}`);
  };
  const timer = o.mode === "screen" ? setIntervalOn(o.scheduler, 250_000_000n, draw, signal) : null;
  while (!signal.aborted) {
    try {
      for await (const e of eventStream(o.api, { ...(o.token ? { token: o.token } : {}), ...(lastId ? { lastEventId: lastId } : {}), signal })) {
        if (e.id !== undefined) lastId = e.id;
        model.connection = "live";
        backoffNs = 250_000_000n;
        model.apply(e);
        dirty = true;
        if (o.mode === "json") o.write(`${JSON.stringify({ type: e.type, id: e.id, data: e.data })}\n`);
        else if (o.mode === "lines") {
          const line = eventLine(e);
          if (line !== null) o.write(`${line}\n`);
        }
      }
      model.connection = "stream ended; reconnecting";
    } catch (e) {
      if (signal.aborted) break;
      if (e instanceof TscmigError && (e.code === "unauthenticated" || e.code === "permission_denied")) throw e;
      model.connection = `reconnecting (${e instanceof Error ? e.message : String(e)})`;
      if (o.mode === "lines") o.write(`${model.connection}\n`);
    }
    dirty = true;
    draw();
    if (signal.aborted) break;
    await sleep(o.scheduler, backoffNs);
    backoffNs = backoffNs * 2n > 5_000_000_000n ? 5_000_000_000n : backoffNs * 2n;
  }
  timer?.cancel();
  draw();
}

function setIntervalOn(s: Scheduler, everyNs: bigint, fn: () => void, signal: AbortSignal): { cancel(): void } {
  let t = s.after(everyNs, tick);
  function tick() {
    if (signal.aborted) return;
    fn();
    t = s.after(everyNs, tick);
  }
  return { cancel: () => t.cancel() };
}
