// JUnit XML for CI (`--junit FILE`): one test case per run, failing with every violation of that run
// and the command that replays it; host clock faults are reported as system-out, not failures.

import { INVARIANT_TITLES } from "../checker.js";
import type { CampaignResult } from "../campaign.js";
import type { ReportContext } from "./json.js";

export function xmlEscape(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[<>&"']/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&apos;" })[c] as string).replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, "");
}

export function buildJunit(r: CampaignResult, ctx: ReportContext, runSeeds: readonly { run: number; seed: bigint }[]): string {
  const byRun = new Map<number, typeof r.violations>();
  for (const v of r.violations) {
    const k = v.run ?? -1;
    let l = byRun.get(k);
    if (!l) byRun.set(k, (l = []));
    l.push(v);
  }
  const hostByRun = new Map<number, number>();
  for (const v of r.hostFaults) hostByRun.set(v.run ?? -1, (hostByRun.get(v.run ?? -1) ?? 0) + 1);
  const failures = runSeeds.filter((x) => byRun.has(x.run)).length;
  const time = ctx.elapsedNs !== undefined ? (Number(ctx.elapsedNs) / 1e9).toFixed(3) : "0";
  const lines: string[] = [];
  lines.push(`<?xml version="1.0" encoding="UTF-8"?>`);
  lines.push(`<testsuites name="tscmig chaos" tests="${runSeeds.length}" failures="${failures}" errors="0" time="${time}">`);
  lines.push(`  <testsuite name="tscmig.chaos.${r.mode}" tests="${runSeeds.length}" failures="${failures}" errors="0" skipped="0" time="${time}">`);
  lines.push(`    <properties>`);
  for (const [k, v] of Object.entries(ctx.options)) lines.push(`      <property name="${xmlEscape(k)}" value="${xmlEscape(String(v))}"/>`);
  lines.push(`    </properties>`);
  for (const { run, seed } of runSeeds) {
    const vs = byRun.get(run);
    const name = `run ${run} seed ${seed}`;
    if (!vs) {
      const hf = hostByRun.get(run);
      if (hf) lines.push(`    <testcase classname="tscmig.chaos.${r.mode}" name="${name}" time="0"><system-out>${hf} violation(s) explained by host clock faults (lying or stepped clocks), not bugs</system-out></testcase>`);
      else lines.push(`    <testcase classname="tscmig.chaos.${r.mode}" name="${name}" time="0"/>`);
      continue;
    }
    const invs = [...new Set(vs.map((v) => v.invariant))].sort();
    const msg = `${invs.map((i) => `${i} ${INVARIANT_TITLES[i]}`).join(", ")} violated; replay: ${ctx.replay(seed)}`;
    const body = [`replay: ${ctx.replay(seed)}`, ...vs.map((v) => `${v.invariant}: ${v.message}\n    ${JSON.stringify(v.values)}`)].join("\n");
    lines.push(`    <testcase classname="tscmig.chaos.${r.mode}" name="${name}" time="0">`);
    lines.push(`      <failure type="${invs.join(",")}" message="${xmlEscape(msg)}">${xmlEscape(body)}</failure>`);
    lines.push(`    </testcase>`);
  }
  lines.push(`  </testsuite>`);
  lines.push(`</testsuites>`);
  return `${lines.join("\n")}\n`;
}
