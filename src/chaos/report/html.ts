// The human report (`--html FILE`): one self-contained page. It reads top down the way a person
// triages a campaign: the verdict and what each count counts; then the violations, each with its
// plot and the command that replays its run; then every run, browsable, each with its timeline
// (each host's skew with the fault periods shaded and the migrations marked, each guest's error
// against truth); then the distributions; raw data last.
//
// Self-contained: the chart library (uPlot) and the viewer are inlined from the project's own build
// (dist/web/report.js), nothing is fetched. Sized for thousands of runs: each run's timeline is a
// few KB of compact JSON embedded as a string, parsed only when the run is shown.

import { CHECKS, INVARIANT_TITLES, type Violation } from "../checker.js";
import type { CampaignResult } from "../campaign.js";
import { readWebAsset } from "../../shared/web-assets.js";
import { buildJsonReport, type GroupStats, type ReportContext } from "./json.js";
import { fmtNs, fmtTick, type Histogram } from "./stats.js";
import { xmlEscape as esc } from "./junit.js";

const C = { ok: "#1a7f37", bad: "#cf222e", band: "#54aeff", line: "#0550ae", gray: "#8c959f", grid: "#d0d7de", warn: "#bf8700", text: "#24292f" };

/** Failing runs shown as cards at the top (every one is also in the run browser). */
const VIOLATION_CARDS_MAX = 30;

function num(x: number): string {
  return Number.isFinite(x) ? x.toFixed(1) : "0";
}

/** |error| per group on a log axis: a bar from p50 to p99, a tick at max. Decade ticks: 1 µs, 10 µs, … */
function rangeChart(groups: Record<string, GroupStats>, pick: (g: GroupStats) => { p50: number; p99: number; max: number }, unit: "ns" | "ratio"): string {
  const names = Object.keys(groups);
  if (names.length === 0) return `<p class="muted">no committed migrations</p>`;
  const W = 550;
  const row = 26;
  const m = { l: 205, r: 24, t: 20, b: 34 };
  const H = m.t + m.b + row * names.length;
  const vals = names.flatMap((n) => {
    const s = pick(groups[n] as GroupStats);
    return [s.p50, s.p99, s.max];
  });
  const pos = vals.filter((v) => v > 0);
  const lo = unit === "ratio" ? 1e-4 : 10 ** Math.floor(Math.log10(Math.max(1, Math.min(...pos, 1e3))));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(...pos, unit === "ratio" ? 2 : 1e3)));
  const X = (v: number) => m.l + (Math.log10(Math.max(lo, v) / lo) / Math.log10(hi / lo)) * (W - m.l - m.r);
  const out: string[] = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img">`];
  const decades = Math.round(Math.log10(hi / lo));
  const every = Math.max(1, Math.ceil(decades / 6));
  for (let k = 0, d = lo; d <= hi * 1.0001; d *= 10, k++) {
    out.push(`<line x1="${num(X(d))}" x2="${num(X(d))}" y1="${m.t - 4}" y2="${H - m.b}" stroke="${C.grid}" stroke-width="0.5"/>`);
    if (k % every === 0) out.push(`<text x="${num(X(d))}" y="${H - m.b + 14}" font-size="10" text-anchor="middle">${esc(unit === "ns" ? fmtTick(d) : String(Number(d.toPrecision(1))))}</text>`);
  }
  out.push(`<text x="${(m.l + W - m.r) / 2}" y="${H - 4}" font-size="10" text-anchor="middle" fill="${C.gray}">${unit === "ns" ? "|error| at resume (log scale)" : "error ÷ reported bound (log scale; 1 = the bound)"}</text>`);
  if (unit === "ratio") out.push(`<line x1="${num(X(1))}" x2="${num(X(1))}" y1="${m.t - 8}" y2="${H - m.b}" stroke="${C.bad}" stroke-width="1.5"><title>error = bound</title></line>`);
  names.forEach((n, i) => {
    const g = groups[n] as GroupStats;
    const s = pick(g);
    const y = m.t + i * row + row / 2;
    const bad = unit === "ratio" && s.max > 1;
    out.push(`<text x="${m.l - 8}" y="${y + 4}" font-size="11" text-anchor="end">${esc(n)} (${g.migrations}${g.hostFaults ? ` +${g.hostFaults}` : ""})</text>`);
    out.push(`<rect x="${num(X(s.p50))}" y="${y - 6}" width="${num(Math.max(2, X(s.p99) - X(s.p50)))}" height="12" fill="${bad ? C.bad : C.band}" fill-opacity="0.6"><title>${esc(`p50 ${fmt(s.p50, unit)}, p99 ${fmt(s.p99, unit)}`)}</title></rect>`);
    out.push(`<line x1="${num(X(s.max))}" x2="${num(X(s.max))}" y1="${y - 8}" y2="${y + 8}" stroke="${bad ? C.bad : C.line}" stroke-width="2"><title>${esc(`max ${fmt(s.max, unit)}`)}</title></line>`);
    out.push(`<circle cx="${num(X(s.p50))}" cy="${y}" r="3" fill="${C.line}"/>`);
  });
  out.push(`<text x="${m.l}" y="12" font-size="10" fill="${C.gray}">bar: p50→p99, tick: max; (n +k): k left out, their bound broken by a host clock fault</text>`);
  out.push(`</svg>`);
  return out.join("");
}

function fmt(v: number, unit: "ns" | "ratio"): string {
  return unit === "ns" ? fmtNs(v) : v.toPrecision(3);
}

/** Log-binned counts; the x axis labelled at whole decades only (1 ms, 10 ms, …), the y axis at round counts. */
function histogramSvg(h: Histogram): string {
  const W = 720;
  const H = 210;
  const m = { l: 48, r: 10, t: 10, b: 40 };
  const n = h.counts.length;
  const maxC = Math.max(1, ...h.counts);
  const bw = (W - m.l - m.r) / n;
  const out: string[] = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img">`];
  const step = niceCount(maxC / 4);
  for (let c = 0; c <= maxC; c += step) {
    const y = H - m.b - (c / maxC) * (H - m.t - m.b);
    out.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${num(y)}" y2="${num(y)}" stroke="${C.grid}" stroke-width="0.5"/><text x="${m.l - 4}" y="${num(y + 3)}" font-size="10" text-anchor="end">${c}</text>`);
  }
  h.counts.forEach((c, i) => {
    const bh = (c / maxC) * (H - m.t - m.b);
    const lo = h.edges[i] as number;
    const hi = h.edges[i + 1] as number;
    out.push(`<rect x="${num(m.l + i * bw + 1)}" y="${num(H - m.b - bh)}" width="${num(bw - 2)}" height="${num(bh)}" fill="${C.band}"><title>${esc(`${fmtNs(lo)} – ${fmtNs(hi)}: ${c}`)}</title></rect>`);
  });
  h.edges.forEach((e, i) => {
    const decade = Math.abs(Math.log10(e) - Math.round(Math.log10(e))) < 1e-9;
    if (!h.log || decade) out.push(`<line x1="${num(m.l + i * bw)}" x2="${num(m.l + i * bw)}" y1="${H - m.b}" y2="${H - m.b + 4}" stroke="${C.text}"/><text x="${num(m.l + i * bw)}" y="${H - m.b + 15}" font-size="10" text-anchor="middle">${esc(fmtTick(e))}</text>`);
  });
  out.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${H - m.b}" y2="${H - m.b}" stroke="${C.text}"/>`);
  out.push(`<text x="${(m.l + W - m.r) / 2}" y="${H - 4}" font-size="10" text-anchor="middle" fill="${C.gray}">true blackout (log scale); bars: committed migrations per bin</text>`);
  out.push(`</svg>`);
  return out.join("");
}

/** 1, 2 or 5 × 10^k, at least `raw` and at least 1. */
function niceCount(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(Math.max(raw, 1)));
  for (const k of [1, 2, 5, 10]) if (k * p >= raw) return Math.max(1, k * p);
  return 10 * p;
}

function table(head: string[], rows: string[][]): string {
  return `<table><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join("")}</tr></thead><tbody>${rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("")}</tbody></table>`;
}

/** JSON for a <script type="application/json"> block: nothing in it can close the element. */
function scriptJson(v: unknown): string {
  return JSON.stringify(v).replaceAll("<", "\\u003c").replaceAll("\u2028", "\\u2028").replaceAll("\u2029", "\\u2029");
}

/** A command template: the replay command with the seed cut out, so each run's is rebuilt in the page. */
function template(cmd: (seed: bigint) => string): [string, string] {
  const marker = 18_446_744_073_709_551_557n; // a seed no real run has: the largest 64-bit prime
  const text = cmd(marker);
  const i = text.indexOf(marker.toString());
  return i < 0 ? [text, ""] : [text.slice(0, i), text.slice(i + marker.toString().length)];
}

const SWITCHOVERS = ["two-phase", "on-receipt"] as const;

/** Per switchover mode: started, then each outcome the sources reported (`migrationsBySwitchover` keys "mode:what"). */
function switchoverTable(counts: Record<string, number>): string {
  const whats = [...new Set(Object.keys(counts).map((k) => k.slice(k.indexOf(":") + 1)))].filter((w) => w !== "started").sort();
  const cols = ["started", ...whats];
  return table(["switchover", ...cols], SWITCHOVERS.map((m) => [m, ...cols.map((w) => String(counts[`${m}:${w}`] ?? 0))]));
}

function countsSection(r: CampaignResult, j: ReturnType<typeof buildJsonReport>): string {
  const c = j.checked;
  const cards: [number | string, string, string][] = [
    [c.runs, "runs", "seeded runs, each replayable alone"],
    [c.migrationsStarted, "migrations started", "migrate calls the harness made"],
    [c.migrationsCommitted, "migrations committed", "new VM generations that ran: counted from ownership, so it includes migrations whose source died before reporting"],
    [`${j.migrationsByPath.handover} / ${j.migrationsByPath.unary}`, "Handover / unary", "committed migrations the sources reported, by what carried Transfer and Commit: one Handover call, or the unary calls"],
    ...SWITCHOVERS.map((m): [string, string, string] => [
      `${r.migrationsBySwitchover[`${m}:committed`] ?? 0} / ${r.migrationsBySwitchover[`${m}:started`] ?? 0}`,
      `${m}: committed / started`,
      `migrations whose switchover mode (drawn by seed) was ${m}; committed as their sources reported`,
    ]),
    [c.migrations, "checked against their bound (I3)", "committed, reported by the source, under advance, kvm-realtime or advance-capped below its cap"],
    [c.samples, "guest samples", `${c.vcpuReadings} vCPU readings in them`],
    [c.faults, "faults injected", "crashes, kills, lost, duplicated, reset or blackholed messages, stalls, lost doorbells"],
    [c.handled, "guest migration handlings", "times a guest acted on a migration signal (I5 checks exactly once)"],
    [j.determinism.checked, "determinism reruns", "runs rerun from their seed to compare history hashes"],
  ];
  if (j.timing) cards.push([j.timing.runsPerSecond, "runs / s", `${j.timing.jobs} job(s)`]);
  const outcomeNote = `What each source's migrate call returned. Its "committed" counts only migrations whose source lived to report; the card above counts every new generation that ran${
    r.outcomes.committed !== undefined && r.outcomes.committed !== c.migrationsCommitted ? ` (here ${c.migrationsCommitted} against ${r.outcomes.committed})` : ""
  }.`;
  return (
    `<div class="kv">${cards.map(([v, k, note]) => `<div title="${esc(note)}"><b>${esc(String(v))}</b>${esc(k)}<small>${esc(note)}</small></div>`).join("")}</div>` +
    `<details><summary>migration outcomes as sources reported them</summary><p class="muted">${esc(outcomeNote)}</p>${table(["outcome", "migrations"], Object.entries(r.outcomes).map(([k, n]) => [esc(k), String(n)]))}` +
    `${switchoverTable(r.migrationsBySwitchover)}</details>`
  );
}

function violationCards(r: CampaignResult, ctx: ReportContext, stepThrough: (seed: bigint) => string): string {
  if (r.failingRuns.length === 0) return "";
  const byRun = new Map<number, Violation[]>();
  for (const v of r.violations) {
    if (v.run === undefined) continue;
    let l = byRun.get(v.run);
    if (!l) byRun.set(v.run, (l = []));
    l.push(v);
  }
  const parts: string[] = [`<h2 id="violations">Violations</h2>`];
  parts.push(
    `<p>${r.violationCount} violation(s) in ${r.failingRuns.length} run(s)${r.failingRuns.length > VIOLATION_CARDS_MAX ? `; the first ${VIOLATION_CARDS_MAX} runs below, every one in <a href="#runs">the run browser</a>` : ""}. Each plot shows the guest's error against true time with its claimed bound (band), the hosts' skew, the blackouts, and where the checker found the violation.</p>`,
  );
  for (const f of r.failingRuns.slice(0, VIOLATION_CARDS_MAX)) {
    const vs = byRun.get(f.run) ?? [];
    const first = vs.find((v) => v.vmId !== undefined) ?? vs[0];
    parts.push(
      `<div class="card violation" id="run-${f.run}-violations"><h3>run ${f.run} (seed ${f.seed}): ${esc(f.invariants.map((i) => `${i} ${INVARIANT_TITLES[i as keyof typeof INVARIANT_TITLES] ?? ""}`).join("; "))}</h3>` +
        `<ul>${vs
          .slice(0, 4)
          .map((v) => `<li><b>${esc(v.invariant)}</b> ${esc(v.message)}</li>`)
          .join("")}${vs.length > 4 ? `<li class="muted">… and ${vs.length - 4} more listed for this run (its verdicts are in the run browser, all of them in the JSON report)</li>` : ""}</ul>` +
        `<div class="plot" data-run="${f.run}" data-vm="${esc(first?.vmId ?? "")}"><p class="muted">the plot needs JavaScript</p></div>` +
        `<div class="cmd"><span>replay:</span><pre>${esc(ctx.replay(f.seed))}</pre></div>` +
        `<div class="cmd"><span>step through:</span><pre>${esc(stepThrough(f.seed))}</pre></div></div>`,
    );
  }
  return parts.join("\n");
}

function rawData(r: CampaignResult, j: ReturnType<typeof buildJsonReport>): string {
  const parts: string[] = [`<h2 id="raw">Raw data</h2>`];
  if (r.violations.length > 0) {
    parts.push(`<h3>Violations with their values</h3><p class="muted">${r.violationCount} in all; each run lists at most 20 per invariant (the JSON report has the listed ones).</p>`);
    parts.push(
      table(
        ["inv", "run", "seed", "VM", "vCPU", "daemon", "true ns", "what", "values"],
        r.violations.slice(0, 200).map((v) => [
          esc(v.invariant),
          String(v.run ?? ""),
          String(v.seed ?? ""),
          esc(v.vmId ?? ""),
          v.vcpu !== undefined ? String(v.vcpu) : "",
          esc(v.daemon ?? ""),
          v.trueNs !== undefined ? String(v.trueNs) : "",
          esc(v.message),
          `<code>${esc(JSON.stringify(v.values))}</code>`,
        ]),
      ),
    );
  }
  if (r.hostFaults.length > 0) {
    parts.push(
      `<h3>Host clock faults (not bugs)</h3><p class="muted">A host whose real realtime skew exceeded the maxerror it claimed ("lying clock"), or whose realtime stepped between probe and resume ("stepped clock"): estimators that trust those clocks cannot keep their bound. ${esc(Object.entries(r.hostFaultsByClass).map(([k, n]) => `${k} ×${n}`).join(", "))}.</p>`,
    );
    parts.push(table(["inv", "class", "run", "seed", "what"], r.hostFaults.slice(0, 100).map((v) => [esc(v.invariant), esc(v.faultClass ?? ""), String(v.run ?? ""), String(v.seed ?? ""), esc(v.message)])));
  }
  const d = j.distributions;
  parts.push(`<h3>Per policy and estimator</h3>`);
  parts.push(
    table(
      ["policy / estimator", "migrations", "|error| p50", "p99", "max", "error/bound p50", "p99", "max", "blackout p50", "p99", "left out (host faults)"],
      Object.entries(d.byPolicyAndEstimator).map(([k, g]) => [
        esc(k),
        String(g.migrations),
        esc(fmtNs(g.absErrorNs.p50)),
        esc(fmtNs(g.absErrorNs.p99)),
        esc(fmtNs(g.absErrorNs.max)),
        g.errorOverBound.p50.toPrecision(3),
        g.errorOverBound.p99.toPrecision(3),
        g.errorOverBound.max.toPrecision(3),
        esc(fmtNs(g.blackoutNs.p50)),
        esc(fmtNs(g.blackoutNs.p99)),
        String(g.hostFaults),
      ]),
    ),
  );
  parts.push(
    `<div class="grid"><div>${table(["fault site", "times injected"], Object.entries(r.faultSites).sort((a, b) => b[1] - a[1]).map(([k, n]) => [esc(k), String(n)]))}</div><div>${table(["fault kind", "runs with it active"], Object.entries(r.faultKinds).sort((a, b) => b[1] - a[1]).map(([k, n]) => [esc(k), String(n)]))}</div></div>`,
  );
  parts.push(`<h3>Determinism</h3><p>${j.determinism.checked} run(s) rerun from their seed; ${j.determinism.mismatches.length} gave a different history hash.</p>`);
  return parts.join("\n");
}

const STYLE = `
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;color:${C.text};margin:24px auto;max-width:1240px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid ${C.grid};padding-bottom:4px} h3{font-size:14px;margin:14px 0 6px}
.verdict{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-weight:600}
.verdict.pass{background:${C.ok}} .verdict.fail{background:${C.bad}}
.muted{color:${C.gray}} code,pre{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;background:#f6f8fa;border-radius:4px}
code{padding:1px 4px;word-break:break-all}
pre{padding:6px 8px;margin:0;white-space:pre-wrap;overflow-wrap:anywhere}
.cmd{display:grid;grid-template-columns:7.5em 1fr;gap:6px;align-items:start;margin:4px 0} .cmd span{color:${C.gray};padding-top:6px}
table{border-collapse:collapse;font-size:12px;margin:6px 0} th,td{border:1px solid ${C.grid};padding:3px 6px;text-align:left;vertical-align:top} th{background:#f6f8fa}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(570px,1fr));gap:14px}
.card{border:1px solid ${C.grid};border-radius:6px;padding:8px 10px;margin:10px 0} .card h3{margin:0 0 4px}
.card.violation{border-color:#ffcecb}
.kv{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:6px}
.kv div{background:#f6f8fa;border-radius:6px;padding:6px 8px} .kv b{display:block;font-size:18px} .kv small{display:block;color:${C.gray};font-size:11px;line-height:1.3}
.plot{min-height:40px}
`;

export function buildHtml(r: CampaignResult, ctx: ReportContext): string {
  const j = buildJsonReport(r, ctx);
  const pass = r.violationCount === 0;
  const stepThrough = ctx.stepThrough ?? ((seed: bigint) => ctx.replay(seed).replace(/^tscmig chaos /, "tscmig chaos replay "));
  const data = {
    rows: r.runRows.map((x) => [x.run, x.seed.toString(), x.migrationsStarted, x.migrationsCommitted, x.faults, x.active.join(","), x.violations, x.hostFaults, x.invariants.join(",")]),
    rowFields: ["run", "seed", "migrationsStarted", "migrationsCommitted", "faults", "active", "violations", "hostFaults", "invariants"],
    timelines: Object.fromEntries(r.timelines),
    replay: template(ctx.replay),
    stepThrough: template(stepThrough),
  };
  const parts: string[] = [];
  parts.push(`<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>tscmig chaos ${esc(r.mode)} seed ${r.seed}: ${pass ? "pass" : "FAIL"}</title>`);
  parts.push(`<style>${readWebAsset("report.css")}</style><style>${STYLE}</style></head><body>`);
  parts.push(`<h1>tscmig chaos — ${esc(r.mode)} campaign, seed ${r.seed}</h1>`);
  parts.push(
    `<p><span class="verdict ${pass ? "pass" : "fail"}">${pass ? "PASS" : "FAIL"}</span> ${r.violationCount} violation(s) in ${r.failingRuns.length} of ${j.checked.runs} runs; ${r.hostFaultCount} host-clock fault(s) reported apart. <span class="muted">${esc(Object.entries(ctx.options).map(([k, v]) => `${k}=${v}`).join(" "))}</span></p>`,
  );
  parts.push(
    `<p>${table(
      ["", "invariant", "violations"],
      CHECKS.map((i) => {
        const n = j.violationsByInvariant[i] ?? 0;
        return [`<span style="color:${n ? C.bad : C.ok}">${n ? "✗" : "✓"}</span>`, `${i} ${esc(INVARIANT_TITLES[i as keyof typeof INVARIANT_TITLES])}`, String(n)];
      }),
    )}</p>`,
  );
  parts.push(violationCards(r, ctx, stepThrough));
  parts.push(`<h2>What was checked</h2>${countsSection(r, j)}`);
  parts.push(
    `<h2 id="runs">Runs</h2><p class="muted">Every run of the campaign. Pick one to see its timeline: each host's realtime skew and claimed bound, fault periods shaded, migrations marked (blackout from pause to resume), each guest's error against true time, and the checker's verdicts.${r.runRows.length > r.timelines.size ? ` Timelines are embedded for the failing runs and the first ${r.timelines.size - r.failingRuns.length > 0 ? r.timelines.size - r.failingRuns.length : 0} others; any run can be replayed and stepped through with its commands.` : ""}</p><div id="run-browser"><p class="muted">the run browser needs JavaScript</p></div>`,
  );
  const d = j.distributions;
  parts.push(`<h2>Migration error per policy</h2><p class="muted">Per committed migration its source reported: |guest TSC at resume − what the source would read|, and that over the bound the restore reported.</p>`);
  parts.push(`<div class="grid"><div class="card"><h3>|TSC error at resume|</h3>${rangeChart(d.byPolicy, (g) => g.absErrorNs, "ns")}</div><div class="card"><h3>error / reported bound (must stay ≤ 1)</h3>${rangeChart(d.byPolicy, (g) => g.errorOverBound, "ratio")}</div></div>`);
  parts.push(`<h2>Migration error per estimator</h2>`);
  parts.push(`<div class="grid"><div class="card"><h3>|TSC error at resume|</h3>${rangeChart(d.byEstimator, (g) => g.absErrorNs, "ns")}</div><div class="card"><h3>error / reported bound (must stay ≤ 1)</h3>${rangeChart(d.byEstimator, (g) => g.errorOverBound, "ratio")}</div></div>`);
  parts.push(`<h2>Blackout</h2><p class="muted">True time from the source's pause to the destination's resume: p50 ${esc(fmtNs(d.blackoutNs.p50))}, p99 ${esc(fmtNs(d.blackoutNs.p99))}, max ${esc(fmtNs(d.blackoutNs.max))} over ${d.blackoutNs.count} committed migrations.</p>${histogramSvg(d.blackoutNs.histogram)}`);
  parts.push(rawData(r, j));
  parts.push(`<p class="muted">Generated by tscmig chaos. Replay the campaign: <code>${esc(ctx.replay(r.seed).replace(" --runs 1 ", ` --runs ${r.runs} `))}</code></p>`);
  parts.push(`<script type="application/json" id="tscmig-report-data">${scriptJson(data)}</script>`);
  parts.push(`<script>${readWebAsset("report.js").replaceAll("</script", "<\\/script")}</script>`);
  parts.push(`</body></html>`);
  return parts.join("\n");
}
