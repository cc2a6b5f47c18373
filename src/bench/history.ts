// Bench section `history`: what a migration costs must not grow with the migrations a daemon has
// already run. Two destinations of the same build in the same run: one with an empty journal, one
// whose journal holds N decided migrations before it starts (written as a long-lived daemon's would
// be: received ones and its own outbound ones). One source bounces a 1-vCPU VM to each in turn and
// back, interleaved, so a burst of noise hits both alike. Measured: each bounce's wall time (the two
// control-API migrate calls, to the destination and back), and the blackout of each leg. The target
// is the long history's bounce p50 within 1.2× the empty one's, measured in the same run.
// Real time is read only through the platform module (STYLE 2).

import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Journal } from "../daemon/journal.js";
import type { Clock } from "../shared/time/clock.js";
import { createVm, migrate, type Side, startSide, stopSides } from "./live.js";
import { fmtNs, ratio, summarize, type Summary, table } from "./stats.js";

export interface HistoryPlan {
  /** Decided migrations in the long history's journal. */
  migrations: number;
  /** Bounces to each destination (after `warmup` each). */
  bounces: number;
  warmup: number;
}

export function historyPlan(quick: boolean): HistoryPlan {
  return quick ? { migrations: 10_000, bounces: 30, warmup: 3 } : { migrations: 30_000, bounces: 100, warmup: 5 };
}

export interface HistoryDestinationFigures {
  /** Decided migrations in its journal at start. */
  history: number;
  /** Wall time of a bounce: migrate there, then back (two control-API calls). */
  bounce: Summary;
  /** Blackout of the migration into it, and of the one back out of it. */
  blackoutIn: Summary;
  blackoutOut: Summary;
}

export interface HistoryResult {
  empty: HistoryDestinationFigures;
  long: HistoryDestinationFigures;
  /** Long history over empty: bounce p50, and the blackout p50 into it and out of it. */
  ratioBounceP50: number;
  ratioBlackoutInP50: number;
  ratioBlackoutOutP50: number;
}

/** A journal for the daemon `name` under `data` holding `n` decided migrations: half received from an earlier source, half its own. */
export function writeHistory(data: string, name: string, n: number): void {
  const j = Journal.open(data, { owner: name });
  try {
    j.transaction(() => {
      for (let i = 0; i < n; i++) {
        const received = i % 2 === 0;
        j.putMigration({
          migrationId: `earlier-${i}`,
          source: received ? "earlier" : "",
          sourceKey: received ? "5e".repeat(32) : "",
          vmId: `gone-${i}`,
          role: received ? "destination" : "source",
          phase: received ? "running" : "committed",
          decision: "committed",
          generation: BigInt(i + 1),
          peer: "earlier.invalid:7001",
          updatedNs: BigInt(i) * 1_000_000n,
        });
      }
    });
  } finally {
    j.close();
  }
}

export async function historySection(o: { plan: HistoryPlan; clock: Clock; daemonArgs: string[]; say: (line: string) => void }): Promise<HistoryResult> {
  const { plan, clock, say } = o;
  const sides: Side[] = [];
  try {
    const longData = join(mkdtempSync(join(tmpdir(), "tscmig-history-")), "hist-long");
    say(`history: writing ${plan.migrations} decided migrations into a destination's journal`);
    writeHistory(longData, "hist-long", plan.migrations);
    const [src, empty, long] = await Promise.all([
      startSide("hist-src", { daemonArgs: o.daemonArgs }),
      startSide("hist-empty", { daemonArgs: o.daemonArgs }),
      startSide("hist-long", { daemonArgs: o.daemonArgs }, longData),
    ]);
    sides.push(src, empty, long);
    await createVm(src, "hist-vm", 1);
    say(`history: ${plan.bounces} bounces of a 1-vCPU VM to each destination, interleaved (plus ${plan.warmup} warm-up each)`);
    const figures = [empty, long].map(() => ({ bounce: [] as bigint[], into: [] as bigint[], out: [] as bigint[] }));
    for (let k = 0; k < plan.warmup + plan.bounces; k++) {
      for (const [i, dst] of [empty, long].entries()) {
        const t0 = clock.monotonicNs();
        const there = await migrate(src, dst, "hist-vm");
        const back = await migrate(dst, src, "hist-vm");
        const wallNs = clock.monotonicNs() - t0;
        if (there.outcome !== "committed" || back.outcome !== "committed") throw new Error(`history bounce via ${dst.name}: ${there.outcome}/${back.outcome} ${there.error ?? back.error ?? ""}`);
        if (k < plan.warmup) continue;
        const f = figures[i] as (typeof figures)[number];
        f.bounce.push(wallNs);
        f.into.push(there.trueBlackoutNs);
        f.out.push(back.trueBlackoutNs);
      }
    }
    const [e, l] = figures.map((f, i) => ({ history: i === 0 ? 0 : plan.migrations, bounce: summarize(f.bounce), blackoutIn: summarize(f.into), blackoutOut: summarize(f.out) })) as [HistoryDestinationFigures, HistoryDestinationFigures];
    return {
      empty: e,
      long: l,
      ratioBounceP50: ratio(l.bounce.p50Ns, e.bounce.p50Ns),
      ratioBlackoutInP50: ratio(l.blackoutIn.p50Ns, e.blackoutIn.p50Ns),
      ratioBlackoutOutP50: ratio(l.blackoutOut.p50Ns, e.blackoutOut.p50Ns),
    };
  } finally {
    await stopSides(sides);
  }
}

export function historyTargets(r: HistoryResult): { name: string; value: string; limit: string; holds: boolean; basis: string }[] {
  return [
    {
      name: `migration with ${r.long.history} migrations in the journal ≤ 1.2 × with none (bounce p50)`,
      value: `${r.ratioBounceP50.toFixed(2)}×`,
      limit: "1.2×",
      holds: r.ratioBounceP50 <= 1.2,
      basis: `${r.long.bounce.count} bounces each, interleaved, same run`,
    },
  ];
}

export function renderHistory(r: HistoryResult): string {
  const row = (name: string, x: HistoryDestinationFigures) => [name, fmtNs(x.bounce.p50Ns), fmtNs(x.bounce.p99Ns), fmtNs(x.blackoutIn.p50Ns), fmtNs(x.blackoutOut.p50Ns), String(x.bounce.count)];
  return (
    `\nHistory (a 1-vCPU VM bounced to a destination and back; its journal empty, or holding ${r.long.history} decided migrations)\n` +
    table([["destination", "bounce p50", "bounce p99", "blackout in p50", "blackout out p50", "bounces"], row("empty journal", r.empty), row(`${r.long.history} migrations`, r.long)]) +
    `Long history over empty: bounce p50 ${r.ratioBounceP50.toFixed(2)}×, blackout in ${r.ratioBlackoutInP50.toFixed(2)}×, out ${r.ratioBlackoutOutP50.toFixed(2)}×.\n`
  );
}
