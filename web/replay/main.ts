// The step-through page of `tscmig chaos replay` (src/chaos/replay.ts writes its data): a list of
// the run's steps in true-time order, filterable by kind, with the state at the chosen step —
// each host's skew and claimed bound, each guest's last clock read — and the run's timeline with
// the chosen instant marked. Keys: ← → step, n next violation, Home/End.

import { fill, h } from "../shared/dom.js";
import { type Column, type Mark, type Span, TimeChart } from "../shared/time-chart.js";
import { fmtNs } from "../shared/units.js";

type Kind = "message" | "fault" | "clock" | "event" | "verdict";
type Step = [number, Kind, string, string, string, string, 0 | 1];

interface Timeline {
  endMs: number;
  hosts: { name: string; tMs: number[]; skewUs: number[]; maxerrorUs: number[] }[];
  vms: { id: string; tMs: number[]; errorUs: number[]; halfUs: (number | null)[]; host: number[] }[];
  faults: { site: string; fromMs: number; toMs: number; detail: string }[];
  migrations: { vmId: string; source: string; destination: string; outcome: string; pauseMs: number | null; resumeMs: number | null }[];
}

interface ReplayData {
  title: string;
  seed: string;
  source: string;
  command: string;
  steps: Step[];
  cut: number;
  timeline: Timeline;
  violations: number;
  hostFaults: number;
  messagesTraced: boolean;
}

const MS = 1e6;
const US = 1e3;
const WINDOW = 150; // rows drawn on each side of the current step
const KINDS: Kind[] = ["message", "fault", "event", "clock", "verdict"];
const KIND_LABEL: Record<Kind, string> = { message: "messages", fault: "faults", event: "events", clock: "clock reads", verdict: "verdicts" };

const data = JSON.parse((document.getElementById("tscmig-replay-data") as HTMLElement).textContent ?? "{}") as ReplayData;
const shown = new Set<Kind>(KINDS);
let visible: number[] = [];
let cur = 0; // index into data.steps
let query = "";

const list = h("ol", { class: "steps", id: "steps" });
const state = h("div", { class: "state", id: "state" });
const position = h("span", { class: "muted", id: "position" });
const charts: { chart: TimeChart; x: number[]; cols: Column[]; spans: Span[]; marks: Mark[] }[] = [];

function filterSteps(): void {
  const q = query.toLowerCase();
  visible = [];
  data.steps.forEach((s, i) => {
    if (!shown.has(s[1])) return;
    if (q !== "" && !`${s[2]} ${s[3]} ${s[4]} ${s[5]}`.toLowerCase().includes(q)) return;
    visible.push(i);
  });
}

function go(i: number): void {
  if (data.steps.length === 0) return;
  cur = Math.max(0, Math.min(data.steps.length - 1, i));
  renderList();
  renderState();
  renderMarks();
  history.replaceState(null, "", `#step=${cur}`);
}

/** The visible step nearest to the current one, moved by `delta` visible steps. */
function move(delta: number): void {
  if (visible.length === 0) return;
  let k = visible.findIndex((i) => i >= cur);
  if (k < 0) k = visible.length - 1;
  if (visible[k] !== cur && delta > 0) delta -= 1;
  go(visible[Math.max(0, Math.min(visible.length - 1, k + delta))] as number);
}

function nextViolation(): void {
  const i = data.steps.findIndex((s, k) => k > cur && s[6] === 1);
  if (i >= 0) go(i);
}

function renderList(): void {
  let k = visible.findIndex((i) => i >= cur);
  if (k < 0) k = visible.length - 1;
  const from = Math.max(0, k - WINDOW);
  const to = Math.min(visible.length, k + WINDOW);
  const rows = visible.slice(from, to).map((i) => {
    const s = data.steps[i] as Step;
    const li = h("li", { class: `step ${s[1]}${s[6] ? " violation" : ""}${i === cur ? " current" : ""}`, "data-step": i, value: i + 1 }, h("span", { class: "t" }, fmtNs(s[0] * MS)), h("span", { class: "kind" }, s[1]), h("b", {}, s[2]), h("span", { class: "detail" }, s[3]));
    li.addEventListener("click", () => go(i));
    return li;
  });
  fill(list, from > 0 ? h("li", { class: "muted more" }, `… ${from} earlier step(s)`) : null, ...rows, to < visible.length ? h("li", { class: "muted more" }, `… ${visible.length - to} later step(s)`) : null);
  list.querySelector(".current")?.scrollIntoView({ block: "center" });
  position.textContent = `step ${cur + 1} of ${data.steps.length}${data.cut ? ` (${data.cut} more not kept)` : ""} · ${visible.length} shown`;
}

function valueAt(tMs: number[], v: number[], t: number): number | null {
  let out: number | null = null;
  for (let i = 0; i < tMs.length && (tMs[i] as number) <= t; i++) out = v[i] as number;
  return out;
}

function renderState(): void {
  const s = data.steps[cur] as Step;
  const t = s[0];
  const tl = data.timeline;
  const hosts = tl.hosts.map((x) => {
    const skew = valueAt(x.tMs, x.skewUs, t);
    const bound = valueAt(x.tMs, x.maxerrorUs, t);
    const lying = skew !== null && bound !== null && Math.abs(skew) > bound;
    return h("tr", {}, h("td", {}, x.name), h("td", { class: lying ? "bad" : "" }, skew === null ? "–" : fmtNs(skew * US)), h("td", {}, bound === null ? "–" : `±${fmtNs(bound * US)}`), h("td", { class: "bad" }, lying ? "lying: skew past its claim" : ""));
  });
  const clocks = new Map<string, Step>();
  for (let i = cur; i >= 0; i--) {
    const x = data.steps[i] as Step;
    if (x[1] === "clock" && x[4] !== "" && !clocks.has(x[4])) clocks.set(x[4], x);
  }
  const vms = [...clocks.values()].map((x) => h("tr", {}, h("td", {}, x[4]), h("td", {}, x[5]), h("td", {}, x[2].replace(/^.*: /, "")), h("td", {}, x[3]), h("td", { class: "muted" }, `${fmtNs((t - x[0]) * MS)} ago`)));
  fill(
    state,
    h("h3", {}, `at ${fmtNs(t * MS)} of true time`),
    h("div", { class: `current-step ${s[1]}${s[6] ? " violation" : ""}` }, h("span", { class: "kind" }, s[1]), h("b", {}, s[2]), h("div", {}, s[3])),
    h("h3", {}, "hosts"),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "host"), h("th", {}, "realtime − true"), h("th", {}, "claims"), h("th", {}, ""))), h("tbody", {}, ...hosts)),
    h("h3", {}, "guests (last clock read)"),
    vms.length ? h("table", {}, h("thead", {}, h("tr", {}, ...["VM", "on", "bounded clock", "reading", ""].map((x) => h("th", {}, x)))), h("tbody", {}, ...vms)) : h("p", { class: "muted" }, "no clock read yet"),
  );
}

function renderMarks(): void {
  const t = (data.steps[cur] as Step)[0] * MS;
  for (const c of charts) c.chart.setData(c.x, c.cols, c.spans, [...c.marks, { at: t, color: "#111", label: "▼ this step" }]);
}

function buildCharts(root: HTMLElement): void {
  const tl = data.timeline;
  const spans: Span[] = tl.faults.filter((f) => f.toMs > f.fromMs).map((f) => ({ from: f.fromMs * MS, to: f.toMs * MS, color: "rgba(9,105,218,0.12)" }));
  for (const m of tl.migrations) if (m.pauseMs !== null && m.resumeMs !== null) spans.push({ from: m.pauseMs * MS, to: m.resumeMs * MS, color: "rgba(207,34,46,0.35)", label: "blackout" });
  const times = [...new Set(tl.hosts.flatMap((x) => x.tMs))].sort((a, b) => a - b);
  const hostEl = h("div", { class: "plot" });
  root.append(hostEl);
  const hostCols: Column[] = tl.hosts.map((x) => times.map((t) => valueAt(x.tMs, x.skewUs, t)).map((v) => (v === null ? null : v * US)));
  const palette = ["#d1242f", "#0969da", "#1a7f37", "#8250df", "#bf8700"];
  charts.push({
    chart: new TimeChart(hostEl, { yLabel: "host − true", xMode: "duration", xLabel: "true time since the run started", series: tl.hosts.map((x, i) => ({ label: `${x.name} realtime skew`, color: palette[i % palette.length] as string, width: 2 })), height: 220 }),
    x: times.map((t) => t * MS),
    cols: hostCols,
    spans,
    marks: [],
  });
  for (const vm of tl.vms.slice(0, 6)) {
    const el = h("div", { class: "plot" });
    root.append(el);
    charts.push({
      chart: new TimeChart(el, {
        yLabel: "guest − true",
        xMode: "duration",
        xLabel: "true time since the run started",
        series: [
          { label: `${vm.id} guest realtime error`, color: "#0969da", width: 2 },
          { label: "claimed latest", color: "#2da44e", width: 1 },
          { label: "claimed earliest", color: "#2da44e", width: 1 },
        ],
        bands: [{ upper: 1, lower: 2, fill: "rgba(45,164,78,0.15)" }],
        height: 220,
      }),
      x: vm.tMs.map((t) => t * MS),
      cols: [vm.errorUs.map((e) => e * US), vm.halfUs.map((hf, i) => (hf === null ? null : ((vm.errorUs[i] as number) + hf) * US)), vm.halfUs.map((hf, i) => (hf === null ? null : ((vm.errorUs[i] as number) - hf) * US))],
      spans: spans.filter((_s, i) => i < tl.faults.length || tl.migrations.some((m) => m.vmId === vm.id)),
      marks: [],
    });
  }
}

function boot(): void {
  const root = document.getElementById("replay") as HTMLElement;
  const search = h("input", { type: "search", placeholder: "filter: VM, daemon, method, text", id: "step-search" });
  search.addEventListener("input", () => {
    query = search.value;
    filterSteps();
    renderList();
  });
  const toggles = KINDS.map((k) => {
    const box = h("input", { type: "checkbox", checked: true, "data-kind": k });
    box.addEventListener("change", () => {
      if (box.checked) shown.add(k);
      else shown.delete(k);
      filterSteps();
      renderList();
    });
    return h("label", { class: `toggle ${k}` }, box, ` ${KIND_LABEL[k]} (${data.steps.filter((s) => s[1] === k).length})`);
  });
  const button = (text: string, fn: () => void, id: string) => {
    const b = h("button", { type: "button", id }, text);
    b.addEventListener("click", fn);
    return b;
  };
  const chartsEl = h("div", { class: "charts" });
  fill(
    root,
    h("h1", {}, data.title),
    h(
      "p",
      {},
      `${data.source}; `,
      h("b", { class: data.violations ? "bad" : "ok" }, data.violations ? `${data.violations} violation(s)` : "no violation"),
      data.hostFaults ? ` and ${data.hostFaults} host-clock fault(s)` : "",
      data.messagesTraced ? "" : h("span", { class: "muted" }, " — messages are traced only when the run is re-simulated from its seed"),
    ),
    h("pre", { class: "cmd" }, data.command),
    h("div", { class: "controls" }, button("first", () => go(0), "first"), button("◀ step", () => move(-1), "prev"), button("step ▶", () => move(1), "next"), button("next violation ▶▶", nextViolation, "next-violation"), button("last", () => go(data.steps.length - 1), "last"), position),
    h("div", { class: "controls" }, ...toggles, search),
    h("div", { class: "layout" }, list, h("div", {}, state, chartsEl)),
  );
  document.addEventListener("keydown", (e) => {
    if ((e.target as HTMLElement).tagName === "INPUT") return;
    if (e.key === "ArrowRight" || e.key === "ArrowDown") move(1);
    else if (e.key === "ArrowLeft" || e.key === "ArrowUp") move(-1);
    else if (e.key === "n") nextViolation();
    else if (e.key === "Home") go(0);
    else if (e.key === "End") go(data.steps.length - 1);
    else return;
    e.preventDefault();
  });
  filterSteps();
  buildCharts(chartsEl);
  const m = /#step=(\d+)/.exec(location.hash);
  const firstViolation = data.steps.findIndex((s) => s[6] === 1);
  go(m ? Number(m[1]) : firstViolation >= 0 ? firstViolation : 0);
}

boot();
