// The chaos report's viewer (inlined into the report by src/chaos/report/html.ts): draws each
// violation's plot, and the run browser — every run listed, filterable and paged, and the chosen
// run's timeline. A run's data is embedded as a JSON string and parsed only when it is shown.

import { fill, h } from "../shared/dom.js";
import { type Column, type Mark, type SeriesSpec, type Span, TimeChart } from "../shared/time-chart.js";
import { fmtNs } from "../shared/units.js";
import type { RunTimeline as Timeline } from "../../src/chaos/report/timeline-types.js";

interface ReportData {
  rows: (string | number)[][];
  rowFields: string[];
  timelines: Record<string, string>;
  replay: [string, string];
  stepThrough: [string, string];
}

interface Row {
  run: number;
  seed: string;
  migrationsStarted: number;
  migrationsCommitted: number;
  faults: number;
  active: string;
  violations: number;
  hostFaults: number;
  invariants: string;
}

const PAGE = 50;
const PALETTE = ["#d1242f", "#0969da", "#1a7f37", "#8250df", "#bf8700", "#bf3989"];
const MS = 1e6;
const US = 1e3;

const data = JSON.parse((document.getElementById("tscmig-report-data") as HTMLElement).textContent ?? "{}") as ReportData;
const rows: Row[] = data.rows.map((r) => Object.fromEntries(data.rowFields.map((f, i) => [f, r[i]])) as unknown as Row);
const parsed = new Map<number, Timeline>();

function timeline(run: number): Timeline | null {
  const cached = parsed.get(run);
  if (cached) return cached;
  const text = data.timelines[String(run)];
  if (text === undefined) return null;
  const t = JSON.parse(text) as Timeline;
  parsed.set(run, t);
  return t;
}

const command = (tpl: [string, string], seed: string) => `${tpl[0]}${seed}${tpl[1]}`;

function faultColor(site: string): string {
  if (site === "daemon.down" || site.startsWith("crash") || site.startsWith("kill")) return "rgba(207,34,46,0.16)";
  if (site.startsWith("stall")) return "rgba(191,135,0,0.18)";
  if (site.startsWith("net.")) return "rgba(9,105,218,0.12)";
  if (site.startsWith("doorbell")) return "rgba(130,80,223,0.16)";
  return "rgba(140,149,159,0.18)";
}

/** Fault periods shaded (labelled when they last), blackouts of the chosen migrations in red. */
function spansOf(t: Timeline, vmId: string | null): Span[] {
  const spans: Span[] = t.faults.map((f) => ({
    from: f.fromMs * MS,
    to: f.toMs * MS,
    color: faultColor(f.site),
    ...(f.toMs - f.fromMs > t.endMs / 50 ? { label: f.site } : {}),
  }));
  for (const m of t.migrations)
    if ((vmId === null || m.vmId === vmId) && m.pauseMs !== null && m.resumeMs !== null)
      spans.push({ from: m.pauseMs * MS, to: m.resumeMs * MS, color: "rgba(207,34,46,0.35)", label: `blackout ${fmtNs((m.resumeMs - m.pauseMs) * MS)}` });
  return spans;
}

function marksOf(t: Timeline, vmId: string | null): Mark[] {
  const marks: Mark[] = [];
  for (const m of t.migrations) {
    if (vmId !== null && m.vmId !== vmId) continue;
    const at = m.resumeMs ?? m.startMs;
    if (at === null) continue;
    const ok = m.outcome === "committed";
    marks.push({ at: at * MS, color: ok ? "#1a7f37" : "#9a6700", label: `${vmId === null ? `${m.vmId} ` : ""}${m.source}→${m.destination} ${m.outcome}` });
  }
  for (const v of t.verdicts) if (v.tMs !== null && (vmId === null || v.vmId === vmId || v.vmId === null)) marks.push({ at: v.tMs * MS, color: v.hostFault ? "#9a6700" : "#cf222e", label: `${v.invariant}${v.hostFault ? ` (${v.hostFault})` : ""}` });
  if (t.healMs !== null) marks.push({ at: t.healMs * MS, color: "#57606a", label: "faults stop" });
  return marks;
}

/** Each host's skew and claimed bound, on one time axis. */
function hostChart(el: HTMLElement, t: Timeline): void {
  const times = [...new Set(t.hosts.flatMap((x) => x.tMs))].sort((a, b) => a - b);
  const series: SeriesSpec[] = [];
  const columns: Column[] = [];
  t.hosts.forEach((host, i) => {
    const color = PALETTE[i % PALETTE.length] as string;
    const at = new Map(host.tMs.map((x, k) => [x, k]));
    series.push({ label: `${host.name} realtime skew`, color, width: 2 });
    series.push({ label: `${host.name} claimed bound`, color, dash: [3, 3], width: 1 });
    columns.push(times.map((x) => (at.has(x) ? (host.skewUs[at.get(x) as number] as number) * US : null)));
    columns.push(times.map((x) => (at.has(x) ? (host.maxerrorUs[at.get(x) as number] as number) * US : null)));
  });
  const chart = new TimeChart(el, { yLabel: "host − true", xMode: "duration", xLabel: "true time since the run started", series, rangeFrom: series.map((_s, i) => i).filter((i) => i % 2 === 0), height: 240 });
  chart.setData(times.map((x) => x * MS), columns.map((c) => fillGaps(c)), spansOf(t, null), marksOf(t, null));
}

/** Carries each host's last value forward where another host had a point (one shared x axis). */
function fillGaps(c: Column): Column {
  let last: number | null = null;
  return c.map((v) => (v === null ? last : (last = v)));
}

/** One guest's error against truth with its claimed bound, and the skew of the host it ran on. */
function vmChart(el: HTMLElement, t: Timeline, vmId: string): void {
  const vm = t.vms.find((v) => v.id === vmId);
  if (!vm) {
    fill(el, h("p", { class: "muted" }, `no samples of ${vmId} in this run`));
    return;
  }
  const skewAt = (hostIdx: number, tMs: number): number | null => {
    const host = t.hosts[hostIdx];
    if (!host) return null;
    let v: number | null = null;
    for (let i = 0; i < host.tMs.length && (host.tMs[i] as number) <= tMs; i++) v = host.skewUs[i] as number;
    return v === null ? null : v * US;
  };
  const chart = new TimeChart(el, {
    yLabel: "guest − true",
    xMode: "duration",
    xLabel: "true time since the run started",
    series: [
      { label: `${vmId} guest realtime error`, color: "#0969da", width: 2 },
      { label: "claimed latest", color: "#2da44e", width: 1 },
      { label: "claimed earliest", color: "#2da44e", width: 1 },
      { label: "its host's realtime skew", color: "#d1242f", dash: [6, 4], width: 1.5 },
    ],
    bands: [{ upper: 1, lower: 2, fill: "rgba(45,164,78,0.15)" }],
    rangeFrom: [0, 1, 2, 3],
    height: 240,
  });
  const hi = vm.halfUs.map((hf, i) => (hf === null ? null : ((vm.errorUs[i] as number) + hf) * US));
  const lo = vm.halfUs.map((hf, i) => (hf === null ? null : ((vm.errorUs[i] as number) - hf) * US));
  chart.setData(
    vm.tMs.map((x) => x * MS),
    [vm.errorUs.map((e) => e * US), hi, lo, vm.tMs.map((x, i) => skewAt(vm.host[i] as number, x))],
    spansOf(t, vmId),
    marksOf(t, vmId),
  );
}

function runPanel(run: number): HTMLElement {
  const row = rows.find((r) => r.run === run);
  const panel = h("div", { class: "card", id: "run-panel", "data-run": run });
  if (!row) return panel;
  const t = timeline(run);
  panel.append(
    h("h3", {}, `run ${run} (seed ${row.seed}) — ${row.violations > 0 ? `${row.violations} violation(s): ${row.invariants}` : row.hostFaults > 0 ? `${row.hostFaults} host-clock fault(s)` : "no violation"}`),
    h("div", { class: "cmd" }, h("span", {}, "replay:"), h("pre", {}, command(data.replay, row.seed))),
    h("div", { class: "cmd" }, h("span", {}, "step through:"), h("pre", {}, command(data.stepThrough, row.seed))),
  );
  if (!t) {
    panel.append(h("p", { class: "muted" }, "This run's timeline is not embedded (the report keeps every failing run's and the first ones'); its commands above reproduce it."));
    return panel;
  }
  const hostEl = h("div", { class: "plot", "data-role": "host-timeline" });
  panel.append(h("p", { class: "muted" }, `${t.hosts.length} hosts, ${t.vms.length} VMs, ${t.migrations.length} migrations, ${t.faults.length} faults shown${Object.keys(t.faultsOmitted).length ? ` (more not shown: ${Object.entries(t.faultsOmitted).map(([k, n]) => `${k} ×${n}`).join(", ")})` : ""}. Drag to zoom, double-click to zoom out.`), hostEl);
  const vmEls = t.vms.slice(0, 8).map((vm) => {
    const el = h("div", { class: "plot", "data-role": "vm-timeline", "data-vm": vm.id });
    panel.append(el);
    return [vm.id, el] as const;
  });
  panel.append(
    h("h3", {}, "Migrations"),
    table(
      ["VM", "source → destination", "policy / estimator", "outcome", "start", "pause → resume", "error at resume", "bound"],
      t.migrations.map((m) => [
        m.vmId,
        `${m.source} → ${m.destination}`,
        `${m.policy} / ${m.estimator}`,
        m.outcome + (m.hostFault ? ` (${m.hostFault})` : ""),
        m.startMs !== null ? fmtNs(m.startMs * MS) : "–",
        m.pauseMs !== null && m.resumeMs !== null ? `${fmtNs(m.pauseMs * MS)} → ${fmtNs(m.resumeMs * MS)} (${fmtNs((m.resumeMs - m.pauseMs) * MS)})` : "–",
        m.errorUs !== null ? fmtNs(m.errorUs * US) : "–",
        m.boundUs !== null ? `±${fmtNs(m.boundUs * US)}` : "–",
      ]),
    ),
    h("h3", {}, "Checker verdicts"),
    t.verdicts.length === 0 ? h("p", { class: "muted" }, "none: every invariant held") : table(["invariant", "at", "VM", "daemon", "what"], t.verdicts.map((v) => [v.invariant + (v.hostFault ? ` (${v.hostFault}, not a bug)` : ""), v.tMs !== null ? fmtNs(v.tMs * MS) : "–", v.vmId ?? "", v.daemon ?? "", v.message])),
    h("details", {}, h("summary", {}, `Faults (${t.faults.length})`), table(["site", "from", "to", "what"], t.faults.map((f) => [f.site, fmtNs(f.fromMs * MS), f.toMs > f.fromMs ? fmtNs(f.toMs * MS) : "", f.detail]))),
  );
  // Charts need their element in the page to measure its width.
  requestAnimationFrame(() => {
    hostChart(hostEl, t);
    for (const [id, el] of vmEls) vmChart(el, t, id);
  });
  return panel;
}

function table(head: string[], body: string[][]): HTMLElement {
  return h("table", {}, h("thead", {}, h("tr", {}, ...head.map((x) => h("th", {}, x)))), h("tbody", {}, ...body.map((r) => h("tr", {}, ...r.map((c) => h("td", {}, c))))));
}

function runBrowser(root: HTMLElement): void {
  const filter = h("select", { id: "run-filter" }, h("option", { value: "all" }, "all runs"), h("option", { value: "failing" }, "runs with violations"), h("option", { value: "host" }, "runs with host-clock faults"), h("option", { value: "timeline" }, "runs with a timeline"));
  const search = h("input", { type: "search", id: "run-search", placeholder: "run, seed, invariant or fault kind" });
  const info = h("span", { class: "muted" });
  const prev = h("button", { type: "button" }, "◀ previous");
  const next = h("button", { type: "button" }, "next ▶");
  const list = h("div", {});
  const panelHost = h("div", {});
  let page = 0;
  const matching = () => {
    const q = search.value.trim().toLowerCase();
    return rows.filter((r) => {
      if (filter.value === "failing" && r.violations === 0) return false;
      if (filter.value === "host" && r.hostFaults === 0) return false;
      if (filter.value === "timeline" && data.timelines[String(r.run)] === undefined) return false;
      if (q === "") return true;
      return String(r.run) === q || r.seed === q || r.invariants.toLowerCase().includes(q) || r.active.toLowerCase().includes(q);
    });
  };
  const show = (run: number) => {
    fill(panelHost, runPanel(run));
    history.replaceState(null, "", `#run=${run}`);
  };
  const render = () => {
    const all = matching();
    const pages = Math.max(1, Math.ceil(all.length / PAGE));
    page = Math.min(page, pages - 1);
    const shown = all.slice(page * PAGE, page * PAGE + PAGE);
    info.textContent = `${all.length} of ${rows.length} runs · page ${page + 1} of ${pages}`;
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;
    const body = shown.map((r) => {
      const tr = h(
        "tr",
        { class: r.violations > 0 ? "failing" : "", "data-run": r.run },
        h("td", {}, h("a", { href: `#run=${r.run}` }, String(r.run))),
        h("td", {}, r.seed),
        h("td", {}, String(r.violations), r.invariants ? ` (${r.invariants})` : ""),
        h("td", {}, String(r.hostFaults)),
        h("td", {}, `${r.migrationsCommitted} / ${r.migrationsStarted}`),
        h("td", {}, String(r.faults)),
        h("td", {}, r.active.replaceAll(",", ", ")),
      );
      tr.addEventListener("click", (e) => {
        e.preventDefault();
        show(r.run);
      });
      return tr;
    });
    fill(list, h("table", { class: "runs" }, h("thead", {}, h("tr", {}, ...["run", "seed", "violations", "host-clock faults", "migrations committed / started", "faults injected", "fault kinds active"].map((x) => h("th", {}, x)))), h("tbody", {}, ...body)));
  };
  filter.addEventListener("change", () => {
    page = 0;
    render();
  });
  search.addEventListener("input", () => {
    page = 0;
    render();
  });
  prev.addEventListener("click", () => {
    page--;
    render();
  });
  next.addEventListener("click", () => {
    page++;
    render();
  });
  fill(root, h("div", { class: "browser-controls" }, filter, search, prev, next, info), list, panelHost);
  render();
  const m = /#run=(\d+)/.exec(location.hash);
  const first = m ? Number(m[1]) : (rows.find((r) => r.violations > 0) ?? rows[0])?.run;
  if (first !== undefined) fill(panelHost, runPanel(first));
}

function violationPlots(): void {
  for (const el of document.querySelectorAll<HTMLElement>(".plot[data-run]")) {
    const t = timeline(Number(el.dataset.run));
    fill(el);
    if (!t) continue;
    const vm = el.dataset.vm;
    if (vm) vmChart(el, t, vm);
    else hostChart(el, t);
  }
}

violationPlots();
runBrowser(document.getElementById("run-browser") as HTMLElement);
