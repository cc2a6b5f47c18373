// The dashboard: one page per daemon. It opens the event stream, keeps what it heard (bounded), and
// redraws a few times a second. Controls call the control API; their effects come back as events.

import { fill, h } from "../shared/dom.js";
import { type Column, type Mark, type Span, TimeChart } from "../shared/time-chart.js";
import { fmtKhz, fmtNs } from "../shared/units.js";
import { ApiError, call, hasToken, LiveStream, setToken, takeTokenFromFragment } from "./api.js";
import type { GuestEvent, HostEvent, HostPoint, MigrationEvent, PeerInfo, SampleEvent, StateEvent, VmEvent } from "./model.js";
import { describeSkew, errorVsBound, gantt, vmStats } from "./views.js";

const POINTS_MAX = 3000;
const MIGRATIONS_SHOWN_MAX = 50;

interface VmView {
  id: string;
  summary: VmEvent | null;
  gone: { destination: string } | null;
  el: HTMLElement;
  stats: HTMLElement;
  title: HTMLElement;
  chartEl: HTMLElement;
  chart: TimeChart;
  x: number[];
  err: Column;
  hi: Column;
  lo: Column;
  skew: Column;
  synced: boolean[];
  dirty: boolean;
  destinationSelect: HTMLSelectElement | null;
}

const S = {
  epochNs: 0n,
  host: null as HostEvent | null,
  hostX: [] as number[],
  hostSkew: [] as Column,
  hostMaxerr: [] as Column,
  hostMin: [] as Column,
  hostChart: null as TimeChart | null,
  vms: new Map<string, VmView>(),
  migrations: new Map<string, MigrationEvent>(),
  guest: [] as GuestEvent[],
  peers: [] as PeerInfo[],
  renderPending: false,
  hostDirty: false,
  migrationsDirty: false,
};

const $ = (id: string) => document.getElementById(id) as HTMLElement;

function unixS(trueNs: string | number | bigint): number {
  return Number(S.epochNs + BigInt(trueNs)) / 1e9;
}

function notice(text: string, ok = false): void {
  const el = $("notice");
  el.textContent = text;
  el.className = ok ? "ok" : "";
  el.hidden = text === "";
}

// ---- event handling ---------------------------------------------------------------------------

function onEvent(type: string, data: unknown): void {
  switch (type) {
    case "state":
      return onState(data as StateEvent);
    case "reset":
      return; // a state event follows
    case "host":
      return onHost(data as HostEvent);
    case "vm":
      return onVm(data as VmEvent);
    case "vm-gone": {
      const d = data as { id: string; destination: string };
      const v = S.vms.get(d.id);
      if (v) {
        v.gone = { destination: d.destination };
        v.dirty = true;
      }
      return schedule();
    }
    case "sample":
      return onSample(data as SampleEvent);
    case "guest":
      S.guest.push(data as GuestEvent);
      if (S.guest.length > 500) S.guest.shift();
      markVm((data as GuestEvent).vmId);
      return;
    case "migration":
      return onMigration(data as MigrationEvent);
    case "peers":
      S.peers = (data as { peers: PeerInfo[] }).peers;
      renderPeers();
      return;
    case "heartbeat":
      $("truth").textContent = `true time ${fmtNs(Number((data as { trueNs: string }).trueNs))} since the epoch of truth`;
      return;
  }
}

function onState(st: StateEvent): void {
  for (const v of S.vms.values()) v.chart.destroy();
  S.vms.clear();
  fill($("vm-list"));
  S.migrations.clear();
  S.hostX = [];
  S.hostSkew = [];
  S.hostMaxerr = [];
  S.hostMin = [];
  S.epochNs = BigInt(st.host.epochNs);
  for (const p of st.hostSeries) addHostPoint(p);
  onHost(st.host);
  S.peers = st.peers;
  S.guest = st.guest;
  for (const v of st.vms) onVm(v);
  for (const s of st.samples) onSample(s);
  for (const m of st.migrations) onMigration(m);
  // A VM with samples but no longer here left by migration: say where it went.
  for (const v of S.vms.values()) {
    if (v.summary !== null) continue;
    const out = [...S.migrations.values()].filter((m) => m.direction === "out" && m.vmId === v.id && m.outcome === "committed").pop();
    if (out) v.gone = { destination: out.destination ?? "?" };
  }
  if (st.vmCount > st.vms.length) notice(`${st.vmCount} VMs here; the first ${st.vms.length} are shown`, true);
  renderPeers();
  schedule();
}

function addHostPoint(p: HostPoint): void {
  S.hostX.push(unixS(p.trueNs));
  S.hostSkew.push(Number(p.skewNs));
  S.hostMaxerr.push(Number(p.maxerrorNs));
  S.hostMin.push(-Number(p.maxerrorNs));
  if (S.hostX.length > POINTS_MAX) for (const a of [S.hostX, S.hostSkew, S.hostMaxerr, S.hostMin]) a.shift();
}

function onHost(hst: HostEvent): void {
  const first = S.host === null;
  S.host = hst;
  S.epochNs = BigInt(hst.epochNs);
  $("daemon-name").textContent = hst.name;
  document.title = `tscmig ${hst.name}`;
  if (!first) addHostPoint({ trueNs: hst.trueNs, skewNs: hst.skewNs, maxerrorNs: hst.maxerrorNs });
  S.hostDirty = true;
  schedule();
}

function onVm(v: VmEvent): void {
  const view = S.vms.get(v.id) ?? createVmView(v.id);
  view.summary = v;
  view.gone = null;
  view.dirty = true;
  schedule();
}

function onSample(s: SampleEvent): void {
  const v = S.vms.get(s.vmId) ?? createVmView(s.vmId);
  const synced = s.status === "synchronized";
  v.x.push(unixS(s.trueNs));
  v.err.push(Number(s.errorNs));
  v.hi.push(synced ? Number(s.latestErrorNs) : null);
  v.lo.push(synced ? Number(s.earliestErrorNs) : null);
  v.skew.push(Number(s.hostSkewNs));
  v.synced.push(synced);
  if (v.x.length > POINTS_MAX) for (const a of [v.x, v.err, v.hi, v.lo, v.skew, v.synced]) a.shift();
  v.dirty = true;
  schedule();
}

function onMigration(m: MigrationEvent): void {
  S.migrations.set(`${m.direction}:${m.migrationId}`, m);
  S.migrationsDirty = true;
  markVm(m.vmId);
}

function markVm(id: string): void {
  const v = S.vms.get(id);
  if (v) v.dirty = true;
  schedule();
}

// ---- rendering ---------------------------------------------------------------------------------

function schedule(): void {
  if (S.renderPending) return;
  S.renderPending = true;
  window.setTimeout(render, 200);
}

function render(): void {
  S.renderPending = false;
  if (S.hostDirty) renderHost();
  for (const v of S.vms.values()) if (v.dirty) renderVm(v);
  if (S.migrationsDirty) renderMigrations();
}

function renderHost(): void {
  S.hostDirty = false;
  const hst = S.host;
  if (!hst) return;
  const body = $("host-body");
  if (S.hostChart === null) {
    fill(
      body,
      h("dl", { class: "kv", id: "host-kv" }),
      h("div", { class: "chart", id: "host-chart", "data-role": "host-chart" }),
      skewForm(),
    );
    S.hostChart = new TimeChart($("host-chart"), {
      yLabel: "host − true",
      xMode: "clock",
      height: 200,
      series: [
        { label: "realtime skew", color: "#d1242f", width: 2, stepped: true },
        { label: "claimed +maxerror", color: "#8c959f", dash: [4, 3], width: 1 },
        { label: "claimed −maxerror", color: "#8c959f", dash: [4, 3], width: 1 },
      ],
      bands: [{ upper: 1, lower: 2, fill: "rgba(140,149,159,0.12)" }],
    });
  }
  const skew = Number(hst.skewNs);
  const maxerr = Number(hst.maxerrorNs);
  fill(
    $("host-kv"),
    h("dt", {}, "host"),
    h("dd", {}, `${hst.name} · gRPC ${hst.grpc}`),
    h("dt", {}, "realtime skew now"),
    h("dd", { "data-role": "host-skew", "data-skew-ns": hst.skewNs, class: Math.abs(skew) > maxerr ? "bad" : "" }, fmtNs(skew), Math.abs(skew) > maxerr ? " (past the claimed bound: a lying clock)" : ""),
    h("dt", {}, "skew model"),
    h("dd", {}, describeSkew(hst.skewModel)),
    h("dt", {}, "claimed maxerror"),
    h("dd", {}, `±${fmtNs(maxerr)}`),
    h("dt", {}, "TSC"),
    h("dd", {}, `${fmtKhz(hst.tscKhz)} · ${hst.vendor} (${hst.fracBits} fractional bits) · scaling ${hst.tscScaling ? "offered" : "absent"}`),
  );
  S.hostChart.setData(S.hostX, [S.hostSkew, S.hostMaxerr, S.hostMin]);
  for (const v of S.vms.values()) refreshDestinations(v);
}

function createVmView(id: string): VmView {
  const title = h("h3", {}, id);
  const stats = h("div", {});
  const chartEl = h("div", { class: "chart", "data-role": "vm-chart", "data-vm": id });
  const el = h("div", { class: "vm", "data-vm": id }, h("div", { class: "vm-head" }, title), stats, chartEl);
  $("vm-list").append(el);
  const view: VmView = {
    id,
    summary: null,
    gone: null,
    el,
    stats,
    title,
    chartEl,
    chart: new TimeChart(chartEl, {
      yLabel: "guest − true",
      xMode: "clock",
      series: [
        { label: "guest realtime error", color: "#0969da", width: 2 },
        { label: "claimed latest", color: "#2da44e", width: 1 },
        { label: "claimed earliest", color: "#2da44e", width: 1 },
        { label: "host realtime skew", color: "#d1242f", dash: [6, 4], width: 1.5, stepped: true },
      ],
      bands: [{ upper: 1, lower: 2, fill: "rgba(45,164,78,0.15)" }],
    }),
    x: [],
    err: [],
    hi: [],
    lo: [],
    skew: [],
    synced: [],
    dirty: true,
    destinationSelect: null,
  };
  el.append(migrateForm(view));
  S.vms.set(id, view);
  return view;
}

/** Blackouts and signals of this VM's migrations, and the guest's reactions, on its plot. */
function overlays(v: VmView): { spans: Span[]; marks: Mark[] } {
  const spans: Span[] = [];
  const marks: Mark[] = [];
  for (const m of S.migrations.values()) {
    if (m.vmId !== v.id || m.outcome !== "committed") continue;
    if (m.direction === "out" && m.pauseTrueNs && m.resumeTrueNs && m.pauseTrueNs !== "0") {
      spans.push({ from: unixS(m.pauseTrueNs), to: unixS(m.resumeTrueNs), color: "rgba(207,34,46,0.18)", label: `blackout ${fmtNs(Number(m.trueBlackoutNs))} → ${m.destination ?? ""}` });
    }
    if (m.direction === "in" && m.resumeTrueNs && m.estimatedBlackoutNs) {
      const resume = BigInt(m.resumeTrueNs);
      spans.push({ from: unixS(resume - BigInt(m.estimatedBlackoutNs)), to: unixS(resume), color: "rgba(207,34,46,0.18)", label: `blackout ≈ ${fmtNs(Number(m.estimatedBlackoutNs))} (estimated)` });
      const at = unixS(resume);
      if ((m.stoppedVcpus ?? 0) > 0) marks.push({ at, color: "#9a6700", label: `stopped flag ×${m.stoppedVcpus}` });
      if (m.disruptionMarker) marks.push({ at, color: "#8250df", label: `vmclock marker ${m.disruptionMarker}` });
      if (m.doorbellRung) marks.push({ at, color: "#bf3989", label: "doorbell" });
    }
  }
  for (const g of S.guest) if (g.vmId === v.id) marks.push({ at: unixS(g.trueNs), color: "#1a7f37", label: `guest acted (${g.via}, ${g.mode})` });
  // Where the guest claims no bound (unsynchronized), shade lightly: the band is absent there.
  let start = -1;
  for (let i = 0; i <= v.x.length; i++) {
    const unsynced = i < v.x.length && !v.synced[i];
    if (unsynced && start < 0) start = i;
    if (!unsynced && start >= 0) {
      spans.push({ from: v.x[start] as number, to: v.x[Math.min(i, v.x.length - 1)] as number, color: "rgba(154,103,0,0.08)" });
      start = -1;
    }
  }
  return { spans, marks };
}

function renderVm(v: VmView): void {
  v.dirty = false;
  if (v.gone) {
    v.el.classList.add("gone");
    fill(v.title, v.id, h("span", { class: "muted" }, ` — migrated to ${v.gone.destination}`));
    fill(v.stats, h("div", { class: "stats muted" }, "No longer here: the plot ends at the pause, and the blackout to the resume on the destination is shaded."));
  } else if (v.summary) fill(v.stats, vmStats(v.summary));
  $("vm-count").textContent = `(${[...S.vms.values()].filter((x) => !x.gone).length} here)`;
  const { spans, marks } = overlays(v);
  v.chart.setData(v.x, [v.err, v.hi, v.lo, v.skew], spans, marks);
  // What the plot shows last, for people reading the DOM (and the browser tests).
  v.chartEl.dataset.hostSkewNs = String(v.skew[v.skew.length - 1] ?? "");
  v.chartEl.dataset.errorNs = String(v.err[v.err.length - 1] ?? "");
  v.chartEl.dataset.blackouts = String(spans.filter((sp) => sp.label?.startsWith("blackout")).length);
}

function renderMigrations(): void {
  S.migrationsDirty = false;
  const list = [...S.migrations.values()].slice(-MIGRATIONS_SHOWN_MAX).reverse();
  if (list.length === 0) return;
  const rows = list.map((m) =>
    h(
      "tr",
      { "data-migration": m.migrationId, "data-direction": m.direction },
      h("td", {}, m.direction === "out" ? "out →" : "in ←", h("br", {}), h("code", {}, m.migrationId)),
      h("td", {}, m.vmId, h("br", {}), h("span", { class: "muted" }, m.direction === "out" ? `to ${m.destination ?? ""}` : `from ${m.source}`)),
      h("td", {}, `${m.policy ?? "?"} / ${m.estimator ?? "?"}`, m.capped ? h("span", { class: "bad" }, " capped") : null),
      h("td", {}, h("span", { class: "pill", "data-status": m.outcome }, m.outcome), m.error ? h("div", { class: "bad" }, m.error.message) : null),
      h(
        "td",
        {},
        m.direction === "out" ? `true ${fmtNs(Number(m.trueBlackoutNs ?? 0))}` : "",
        h("br", {}),
        `estimated ${fmtNs(Number(m.estimatedBlackoutNs ?? 0))}`,
        h("br", {}),
        `advanced ${fmtNs(Number(m.advancedNs ?? 0))}`,
      ),
      h("td", {}, m.outcome === "committed" ? errorVsBound(m) : "–"),
      h("td", {}, m.outcome === "committed" ? gantt(m) : "–"),
    ),
  );
  fill(
    $("migration-list"),
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, ...["migration", "VM", "policy / estimator", "outcome", "blackout", "introduced error vs bound", "phases"].map((t) => h("th", {}, t)))),
      h("tbody", {}, ...rows),
    ),
  );
}

function renderPeers(): void {
  const body = $("peers-body");
  if (S.peers.length === 0) fill(body, h("p", { class: "muted" }, "none known yet: give --peers, or migrate to a gRPC address below"));
  else
    fill(
      body,
      h(
        "ul",
        {},
        ...S.peers.map((p) => h("li", { "data-peer": p.grpc }, h("b", {}, p.name), ` gRPC ${p.grpc} `, h("span", { class: "muted" }, `(${p.via})`), p.http ? h("span", {}, " · ", h("a", { href: `${p.http}/ui/` }, "its dashboard")) : null)),
      ),
    );
  for (const v of S.vms.values()) refreshDestinations(v);
}

// ---- controls ----------------------------------------------------------------------------------

/** "5ms", "-2.5 µs", "1s", "300" (ns) → ns as a decimal string. */
function durationNs(text: string, field: string): string {
  const m = /^\s*(-?[0-9]+(?:\.[0-9]+)?)\s*(ns|us|µs|ms|s)?\s*$/.exec(text);
  if (!m) throw new Error(`${field}: expected a duration such as 5ms, -250us or 1s`);
  const scale = { ns: 1, us: 1e3, µs: 1e3, ms: 1e6, s: 1e9 }[(m[2] ?? "ns") as "ns"];
  return BigInt(Math.round(Number(m[1]) * scale)).toString();
}

async function act(what: string, fn: () => Promise<unknown>): Promise<void> {
  try {
    await fn();
    notice(`${what}: done`, true);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) showTokenForm();
    notice(`${what}: ${e instanceof Error ? e.message : String(e)}`);
  }
}

function input(name: string, attrs: Record<string, string> = {}): HTMLInputElement {
  return h("input", { type: "text", name, ...attrs });
}

function select(name: string, options: string[], selected?: string): HTMLSelectElement {
  return h("select", { name }, ...options.map((o) => h("option", { value: o, selected: o === selected }, o)));
}

function createVmForm(): HTMLElement {
  const id = input("id", { placeholder: "generated", size: "14" });
  const vcpus = h("input", { type: "number", name: "vcpus", min: 1, max: 1024, value: 2 });
  const cs = select("clocksource", ["kvm-clock", "tsc"]);
  const handling = h("input", { type: "checkbox", name: "migrationHandling", checked: true });
  const mode = select("handlingMode", ["ditch", "widen"]);
  const form = h(
    "form",
    { class: "inline", id: "create-vm-form" },
    h("label", {}, "id", id),
    h("label", {}, "vCPUs", vcpus),
    h("label", {}, "clocksource", cs),
    h("label", {}, "guest handles migrations", handling),
    h("label", {}, "handling", mode),
    h("button", { type: "submit", class: "primary" }, "Create VM"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    void act("create VM", () =>
      call("POST", "/v1/vms", {
        vcpus: Number(vcpus.value),
        ...(id.value.trim() !== "" ? { id: id.value.trim() } : {}),
        clocksource: cs.value,
        migrationHandling: handling.checked,
        handlingMode: mode.value,
      }),
    );
  });
  return form;
}

function skewForm(): HTMLElement {
  const offset = input("offset", { placeholder: "e.g. 5ms", size: "8" });
  const drift = input("drift", { placeholder: "ppm", size: "6" });
  const step = input("step", { placeholder: "e.g. -2ms", size: "8" });
  const maxerr = input("maxerror", { placeholder: "e.g. 100us", size: "8" });
  const clear = h("button", { type: "button", id: "skew-clear" }, "Clear skew");
  const form = h(
    "form",
    { class: "inline", id: "skew-form" },
    h("label", {}, "offset", offset),
    h("label", {}, "drift (ppm)", drift),
    h("label", {}, "step", step),
    h("label", {}, "claimed maxerror", maxerr),
    h("button", { type: "submit", class: "primary" }, "Inject skew"),
    clear,
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    void act("inject skew", async () => {
      const body: Record<string, unknown> = {};
      if (offset.value.trim() !== "") body.offsetNs = durationNs(offset.value, "offset");
      if (drift.value.trim() !== "") body.driftPpm = Number(drift.value);
      if (step.value.trim() !== "") body.stepNs = durationNs(step.value, "step");
      if (maxerr.value.trim() !== "") body.maxerrorNs = durationNs(maxerr.value, "maxerror");
      if (Object.keys(body).length === 0) throw new Error("give an offset, a drift, a step or a bound");
      return call("PUT", "/v1/host/clock", body);
    });
  });
  clear.addEventListener("click", () => void act("clear skew", () => call("PUT", "/v1/host/clock", { reset: true })));
  return form;
}

function migrateForm(v: VmView): HTMLElement {
  const dest = h("select", { name: "destination" });
  const other = input("other", { placeholder: "HOST:PORT (gRPC)", size: "16" });
  const policy = select("policy", ["advance", "kvm-realtime", "freeze", "advance-capped"]);
  const estimator = select("estimator", ["one-sided", "wallclock", "probe"]);
  const doorbell = h("input", { type: "checkbox", name: "doorbell", checked: true });
  v.destinationSelect = dest;
  refreshDestinations(v);
  const form = h(
    "form",
    { class: "inline migrate-form" },
    h("label", {}, "migrate to", dest),
    h("label", {}, "or gRPC address", other),
    h("label", {}, "policy", policy),
    h("label", {}, "estimator", estimator),
    h("label", {}, "ring doorbell", doorbell),
    h("button", { type: "submit", class: "primary" }, "Migrate"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const destination = other.value.trim() !== "" ? other.value.trim() : dest.value;
    void act(`migrate ${v.id}`, async () => {
      if (destination === "") throw new Error("choose a destination");
      const r = await call<{ outcome: string; error?: { message: string } }>("POST", `/v1/vms/${encodeURIComponent(v.id)}/migrate`, {
        destination,
        policy: policy.value,
        estimator: estimator.value,
        doorbell: doorbell.checked,
      });
      if (r.outcome !== "committed") throw new Error(`${r.outcome}${r.error ? `: ${r.error.message}` : ""}`);
    });
  });
  return form;
}

function refreshDestinations(v: VmView): void {
  const sel = v.destinationSelect;
  if (!sel) return;
  const self = S.host?.grpc;
  const options = S.peers.filter((p) => p.grpc !== self);
  const key = options.map((p) => p.grpc).join(",");
  if (sel.dataset.key === key) return;
  sel.dataset.key = key;
  fill(sel, ...options.map((p) => h("option", { value: p.grpc }, `${p.name} (${p.grpc})`)));
}

function showTokenForm(): void {
  const form = $("token-form") as HTMLFormElement;
  form.hidden = false;
  ($("token-input") as HTMLInputElement).focus();
}

// ---- boot --------------------------------------------------------------------------------------

function boot(): void {
  takeTokenFromFragment();
  fill($("vm-create"), createVmForm());
  renderPeers();
  const conn = $("conn");
  const stream = new LiveStream(
    onEvent,
    (status, detail) => {
      conn.dataset.status = status;
      conn.textContent = detail ? `${status}: ${detail}` : status;
    },
    showTokenForm,
  );
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    setToken(($("token-input") as HTMLInputElement).value);
    ($("token-form") as HTMLFormElement).hidden = true;
    void stream.start();
  });
  $("token-button").addEventListener("click", showTokenForm);
  if (!hasToken()) $("token-button").textContent = "token…";
  void stream.start();
}

boot();
