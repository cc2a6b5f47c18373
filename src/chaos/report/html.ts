// The human report (`--html FILE`): one self-contained page — inline CSS and SVG, no scripts, no
// external assets — with the verdict, every violation and its replay command, guest time error
// against true time around migrations with the guest's claimed bounds, the error distributions per
// policy and per estimator, the blackout histogram, and what faults were injected.

import { CHECKS, INVARIANT_TITLES } from "../checker.js";
import type { CampaignResult } from "../campaign.js";
import type { MigrationPlot } from "../run-outcome.js";
import { buildJsonReport, type GroupStats, type ReportContext } from "./json.js";
import { fmtNs, type Histogram } from "./stats.js";
import { xmlEscape as esc } from "./junit.js";

const C = { ok: "#1a7f37", bad: "#cf222e", band: "#54aeff", line: "#0550ae", gray: "#8c959f", grid: "#d0d7de", warn: "#bf8700", text: "#24292f" };

/** 1, 2 or 5 × 10^k, at least `raw`: axis ticks a reader can add up. */
function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(Math.max(raw, 1e-9)));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function num(x: number): string {
  return Number.isFinite(x) ? x.toFixed(1) : "0";
}

/** Guest realtime error (guest − true) around one migration; the band is the guest's claim [earliest, latest] − true, which must straddle 0 while synchronized. */
function migrationSvg(p: MigrationPlot): string {
  const W = 550;
  const H = 230;
  const m = { l: 62, r: 12, t: 8, b: 30 };
  const pts = p.points;
  const xs = pts.map((q) => q.tNs / 1e6);
  const x0 = Math.min(-p.blackoutNs / 1e6 - 100, ...xs, -200);
  const x1 = Math.max(...xs, 500);
  let yMax = Math.abs(p.tscErrorNs) + p.errorBoundNs;
  for (const q of pts) {
    if (q.status === "synchronized") yMax = Math.max(yMax, Math.abs(q.errorNs) + q.halfNs);
    else yMax = Math.max(yMax, Math.min(Math.abs(q.errorNs), 4 * yMax || Math.abs(q.errorNs)));
  }
  yMax = Math.max(yMax * 1.15, 1000);
  const X = (ms: number) => m.l + ((ms - x0) / (x1 - x0)) * (W - m.l - m.r);
  const Y = (ns: number) => m.t + ((yMax - Math.max(-yMax, Math.min(yMax, ns))) / (2 * yMax)) * (H - m.t - m.b);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img">`);
  out.push(`<rect x="${m.l}" y="${m.t}" width="${W - m.l - m.r}" height="${H - m.t - m.b}" fill="#fff" stroke="${C.grid}"/>`);
  // pause → resume (the blackout)
  out.push(`<rect x="${num(X(-p.blackoutNs / 1e6))}" y="${m.t}" width="${num(Math.max(1, X(0) - X(-p.blackoutNs / 1e6)))}" height="${H - m.t - m.b}" fill="#fff8c5"/>`);
  for (const f of [-1, -0.5, 0, 0.5, 1]) {
    const y = Y(f * yMax);
    out.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${num(y)}" y2="${num(y)}" stroke="${f === 0 ? C.text : C.grid}" stroke-width="${f === 0 ? 1 : 0.5}"/>`);
    out.push(`<text x="${m.l - 4}" y="${num(y + 3)}" font-size="10" text-anchor="end">${esc(fmtNs(f * yMax))}</text>`);
  }
  const step = niceStep((x1 - x0) / 6);
  for (let t = Math.ceil(x0 / step) * step; t <= x1; t += step) {
    out.push(`<line x1="${num(X(t))}" x2="${num(X(t))}" y1="${m.t}" y2="${H - m.b}" stroke="${C.grid}" stroke-width="0.5"/>`);
    out.push(`<text x="${num(X(t))}" y="${H - m.b + 12}" font-size="10" text-anchor="middle">${t} ms</text>`);
  }
  out.push(`<text x="${(m.l + W - m.r) / 2}" y="${H - 3}" font-size="10" text-anchor="middle">true time relative to resume</text>`);
  // Synchronized stretches: the claimed interval as a band, the error as a line.
  const segs: (typeof pts)[] = [];
  let cur: typeof pts = [];
  for (const q of pts) {
    if (q.status === "synchronized" && (cur.length === 0 || (cur[cur.length - 1] as (typeof pts)[number]).daemon === q.daemon)) cur.push(q);
    else {
      if (cur.length) segs.push(cur);
      cur = q.status === "synchronized" ? [q] : [];
    }
  }
  if (cur.length) segs.push(cur);
  for (const s of segs) {
    const up = s.map((q) => `${num(X(q.tNs / 1e6))},${num(Y(q.errorNs + q.halfNs))}`);
    const down = [...s].reverse().map((q) => `${num(X(q.tNs / 1e6))},${num(Y(q.errorNs - q.halfNs))}`);
    out.push(`<polygon points="${[...up, ...down].join(" ")}" fill="${C.band}" fill-opacity="0.25" stroke="none"/>`);
    out.push(`<polyline points="${s.map((q) => `${num(X(q.tNs / 1e6))},${num(Y(q.errorNs))}`).join(" ")}" fill="none" stroke="${C.line}" stroke-width="1.2"/>`);
  }
  for (const q of pts) {
    const bad = q.status === "synchronized" && Math.abs(q.errorNs) > q.halfNs;
    const fill = bad ? C.bad : q.status === "synchronized" ? C.line : C.gray;
    out.push(`<circle cx="${num(X(q.tNs / 1e6))}" cy="${num(Y(q.errorNs))}" r="${bad ? 3 : 1.8}" fill="${fill}"><title>${esc(`${q.daemon} ${q.status} t=${(q.tNs / 1e6).toFixed(1)} ms error ${fmtNs(q.errorNs)} ±${fmtNs(q.halfNs)}`)}</title></circle>`);
  }
  // The migration's own claim: TSC error at resume ± the reported bound.
  const xr = X(0);
  const over = Math.abs(p.tscErrorNs) > p.errorBoundNs;
  out.push(`<line x1="${num(xr)}" x2="${num(xr)}" y1="${num(Y(p.tscErrorNs - p.errorBoundNs))}" y2="${num(Y(p.tscErrorNs + p.errorBoundNs))}" stroke="${C.warn}" stroke-width="3" stroke-opacity="0.7"/>`);
  out.push(`<rect x="${num(xr - 4)}" y="${num(Y(p.tscErrorNs) - 4)}" width="8" height="8" fill="${over ? C.bad : C.warn}"><title>${esc(`TSC error at resume ${fmtNs(p.tscErrorNs)}, reported bound ±${fmtNs(p.errorBoundNs)}`)}</title></rect>`);
  out.push(`</svg>`);
  return out.join("");
}

/** |error| per group on a log axis: a bar from p50 to p99, a tick at max. */
function rangeChart(groups: Record<string, GroupStats>, pick: (g: GroupStats) => { p50: number; p99: number; max: number }, unit: "ns" | "ratio"): string {
  const names = Object.keys(groups);
  if (names.length === 0) return `<p class="muted">no committed migrations</p>`;
  const W = 550;
  const row = 26;
  const m = { l: 205, r: 24, t: 20, b: 24 };
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
    if (k % every === 0) out.push(`<text x="${num(X(d))}" y="${H - m.b + 14}" font-size="10" text-anchor="middle">${esc(unit === "ns" ? fmtNs(d) : String(Number(d.toPrecision(1))))}</text>`);
  }
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
  out.push(`<text x="${m.l}" y="12" font-size="10" fill="${C.gray}">bar: p50→p99, tick: max (log scale)</text>`);
  out.push(`</svg>`);
  return out.join("");
}

function fmt(v: number, unit: "ns" | "ratio"): string {
  return unit === "ns" ? fmtNs(v) : v.toPrecision(3);
}

function histogramSvg(h: Histogram): string {
  const W = 720;
  const H = 200;
  const m = { l: 40, r: 10, t: 10, b: 30 };
  const n = h.counts.length;
  const maxC = Math.max(1, ...h.counts);
  const bw = (W - m.l - m.r) / n;
  const out: string[] = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img">`];
  h.counts.forEach((c, i) => {
    const bh = (c / maxC) * (H - m.t - m.b);
    const lo = h.edges[i] as number;
    const hi = h.edges[i + 1] as number;
    out.push(`<rect x="${num(m.l + i * bw + 1)}" y="${num(H - m.b - bh)}" width="${num(bw - 2)}" height="${num(bh)}" fill="${C.band}"><title>${esc(`${fmtNs(lo)} – ${fmtNs(hi)}: ${c}`)}</title></rect>`);
    if (i % Math.max(1, Math.floor(n / 6)) === 0) out.push(`<text x="${num(m.l + i * bw)}" y="${H - m.b + 14}" font-size="10">${esc(fmtNs(lo))}</text>`);
  });
  out.push(`<text x="${m.l - 4}" y="${m.t + 8}" font-size="10" text-anchor="end">${maxC}</text>`);
  out.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${H - m.b}" y2="${H - m.b}" stroke="${C.text}"/>`);
  out.push(`</svg>`);
  return out.join("");
}

function table(head: string[], rows: string[][]): string {
  return `<table><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join("")}</tr></thead><tbody>${rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("")}</tbody></table>`;
}

export function buildHtml(r: CampaignResult, ctx: ReportContext): string {
  const j = buildJsonReport(r, ctx);
  const pass = r.violationCount === 0;
  const c = j.checked;
  const parts: string[] = [];
  parts.push(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>tscmig chaos ${esc(r.mode)} seed ${r.seed}: ${pass ? "pass" : "FAIL"}</title>`);
  parts.push(`<style>
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;color:${C.text};margin:24px auto;max-width:1180px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid ${C.grid};padding-bottom:4px}
.verdict{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-weight:600;background:${pass ? C.ok : C.bad}}
.muted{color:${C.gray}} code,pre{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;background:#f6f8fa;border-radius:4px}
code{padding:1px 4px;word-break:break-all} pre{padding:8px;overflow:auto}
table{border-collapse:collapse;font-size:12px;margin:6px 0} th,td{border:1px solid ${C.grid};padding:3px 6px;text-align:left;vertical-align:top} th{background:#f6f8fa}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(570px,1fr));gap:14px}
.card{border:1px solid ${C.grid};border-radius:6px;padding:8px} .card h3{font-size:13px;margin:0 0 4px}
.kv{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:6px}
.kv div{background:#f6f8fa;border-radius:6px;padding:6px 8px} .kv b{display:block;font-size:18px}
</style></head><body>`);
  parts.push(`<h1>tscmig chaos — ${esc(r.mode)} campaign, seed ${r.seed}</h1>`);
  parts.push(`<p><span class="verdict">${pass ? "PASS" : "FAIL"}</span> ${r.violationCount} violation(s) in ${r.failingRuns.length} of ${c.runs} runs; ${r.hostFaultCount} host-clock fault(s) reported apart. ${esc(Object.entries(ctx.options).map(([k, v]) => `${k}=${v}`).join(" "))}</p>`);
  parts.push(`<div class="kv">${[
    ["runs", c.runs],
    ["migrations started", c.migrationsStarted],
    ["migrations checked (I3)", c.migrations],
    ["guest samples", c.samples],
    ["vCPU readings", c.vcpuReadings],
    ["faults injected", c.faults],
    ["handled migrations", c.handled],
    ["determinism reruns", j.determinism.checked],
    ...(j.timing ? [["runs / s", j.timing.runsPerSecond], ["migrations / s", j.timing.migrationsPerSecond]] : []),
  ]
    .map(([k, v]) => `<div><b>${esc(String(v))}</b>${esc(String(k))}</div>`)
    .join("")}</div>`);

  parts.push(`<h2>Invariants</h2>`);
  parts.push(
    table(
      ["", "invariant", "violations"],
      CHECKS.map((i) => {
        const n = j.violationsByInvariant[i] ?? 0;
        return [`<span style="color:${n ? C.bad : C.ok}">${n ? "✗" : "✓"}</span>`, `${i} ${esc(INVARIANT_TITLES[i as keyof typeof INVARIANT_TITLES])}`, String(n)];
      }),
    ),
  );

  if (r.failingRuns.length > 0) {
    const replay = (f: (typeof r.failingRuns)[number]) => `# run ${f.run}: ${f.invariants.join(", ")}\n${esc(ctx.replay(f.seed))}`;
    parts.push(`<h2>Failing runs — replay each alone</h2>`);
    parts.push(`<pre>${r.failingRuns.slice(0, 8).map(replay).join("\n")}</pre>`);
    if (r.failingRuns.length > 8) parts.push(`<details><summary>${r.failingRuns.length - 8} more failing runs</summary><pre>${r.failingRuns.slice(8, 500).map(replay).join("\n")}</pre></details>`);
    parts.push(`<h2>Violations</h2><p class="muted">${r.violationCount} in all (each run lists at most 20 per invariant; the JSON report has the listed ones with every value).</p>`);
    parts.push(
      `<details open><summary>first ${Math.min(60, r.violations.length)}</summary>` +
      table(
        ["inv", "run", "seed", "VM", "vCPU", "daemon", "true ns", "what", "values"],
        r.violations.slice(0, 60).map((v) => [
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
      ) +
      `</details>`,
    );
  }
  if (r.hostFaults.length > 0) {
    parts.push(`<h2>Host clock faults (not bugs)</h2><p class="muted">A host whose real realtime skew exceeded the maxerror it claimed ("lying clock"), or whose realtime stepped between probe and resume ("stepped clock"): estimators that trust those clocks cannot keep their bound, and guests that widened their bound by such a figure inherit the fault. Reported apart from bugs: ${esc(Object.entries(r.hostFaultsByClass).map(([k, n]) => `${k} ×${n}`).join(", "))}.</p>`);
    parts.push(
      `<details><summary>first ${Math.min(60, r.hostFaults.length)} of ${r.hostFaultCount}</summary>` +
        table(
          ["inv", "class", "run", "seed", "what"],
          r.hostFaults.slice(0, 60).map((v) => [esc(v.invariant), esc(v.faultClass ?? ""), String(v.run ?? ""), String(v.seed ?? ""), esc(v.message)]),
        ) +
        `</details>`,
    );
  }

  parts.push(`<h2>Guest time around migrations</h2><p class="muted">Guest realtime minus true realtime (line), the guest's claimed interval [earliest, latest] minus truth (blue band: it must straddle 0 while the guest says <i>synchronized</i>; red points break I4), gray points while disrupted or free-running, the blackout shaded yellow, and at resume the TSC error with its reported bound (orange).</p>`);
  parts.push(`<div class="grid">`);
  for (const p of r.plots)
    parts.push(
      `<div class="card"><h3>run ${p.run} (seed ${p.seed}) — ${esc(p.vmId)} ${esc(p.source)}→${esc(p.destination)}, ${esc(p.policy)}/${esc(p.estimator)}${p.flagged ? ` <span style="color:${C.bad}">violation in window</span>` : ""}</h3>` +
        `<div class="muted">blackout ${esc(fmtNs(p.blackoutNs))}, TSC error at resume ${esc(fmtNs(p.tscErrorNs))}, bound ±${esc(fmtNs(p.errorBoundNs))}${p.hostFault ? `, ${esc(p.hostFault)}` : ""}</div>${migrationSvg(p)}</div>`,
    );
  if (r.plots.length === 0) parts.push(`<p class="muted">no committed migration to plot</p>`);
  parts.push(`</div>`);

  const d = j.distributions;
  parts.push(`<h2>Migration error per policy</h2><p class="muted">Per committed migration its source reported: |guest TSC at resume − what the source would read|, and that over the bound the restore reported. (n +k): k migrations whose bound a lying or stepped host clock broke are left out (see host clock faults).</p>`);
  parts.push(`<div class="grid"><div class="card"><h3>|TSC error at resume|</h3>${rangeChart(d.byPolicy, (g) => g.absErrorNs, "ns")}</div><div class="card"><h3>error / reported bound (must stay ≤ 1)</h3>${rangeChart(d.byPolicy, (g) => g.errorOverBound, "ratio")}</div></div>`);
  parts.push(`<h2>Migration error per estimator</h2>`);
  parts.push(`<div class="grid"><div class="card"><h3>|TSC error at resume|</h3>${rangeChart(d.byEstimator, (g) => g.absErrorNs, "ns")}</div><div class="card"><h3>error / reported bound (must stay ≤ 1)</h3>${rangeChart(d.byEstimator, (g) => g.errorOverBound, "ratio")}</div></div>`);
  parts.push(
    table(
      ["policy / estimator", "migrations", "|error| p50", "p99", "max", "error/bound p50", "p99", "max", "blackout p50", "p99", "host faults"],
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
  parts.push(`<h2>Blackout</h2><p class="muted">True time from the source's pause to the destination's resume: p50 ${esc(fmtNs(d.blackoutNs.p50))}, p99 ${esc(fmtNs(d.blackoutNs.p99))}, max ${esc(fmtNs(d.blackoutNs.max))} over ${d.blackoutNs.count} committed migrations.</p>${histogramSvg(d.blackoutNs.histogram)}`);

  parts.push(`<h2>Faults injected</h2>`);
  parts.push(
    `<div class="grid"><div>${table(["fault site", "times"], Object.entries(r.faultSites).sort((a, b) => b[1] - a[1]).map(([k, n]) => [esc(k), String(n)]))}</div><div>${table(["fault kind", "runs with it active"], Object.entries(r.faultKinds).sort((a, b) => b[1] - a[1]).map(([k, n]) => [esc(k), String(n)]))}${table(["migration outcome", "count"], Object.entries(r.outcomes).map(([k, n]) => [esc(k), String(n)]))}</div></div>`,
  );
  parts.push(`<h2>Determinism</h2><p>${j.determinism.checked} run(s) rerun from their seed; ${j.determinism.mismatches.length} gave a different history hash.</p>`);
  parts.push(`<p class="muted">Generated by tscmig chaos. Replay any run: <code>${esc(ctx.replay(r.seed))}</code></p>`);
  parts.push(`</body></html>`);
  return parts.join("\n");
}
