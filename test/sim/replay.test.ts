// Goal: `tscmig chaos replay` shows exactly the run the campaign ran (tracing the wire changes
// nothing), as steps in true-time order covering messages, faults, clock reads, events and the
// checker's verdicts; a `--history` file replays to the same verdicts; the per-run timeline the
// report embeds stays small and self-consistent; bad input is refused with the flag named.
// Method: seeded simulations in process; the command's own code writes pages into a temp folder.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { checkHistory } from "../../src/chaos/checker.js";
import { canonicalText } from "../../src/chaos/history.js";
import { readHistoryFile, replaySteps } from "../../src/chaos/replay.js";
import { runReplay, type ReplayFlags } from "../../src/chaos/replay-cli.js";
import { runTimeline } from "../../src/chaos/report/timeline.js";
import type { NetTrace } from "../../src/chaos/sim/network.js";
import { runSimulation } from "../../src/chaos/sim/run.js";
import { DEFAULT_SCENARIO, type ScenarioOptions } from "../../src/chaos/sim/scenario.js";

const dir = mkdtempSync(join(tmpdir(), "tscmig-replay-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// The hazard: guests that ignore migrations under skewed hosts, with faults on the wire.
const HAZARD: ScenarioOptions = { ...DEFAULT_SCENARIO, policies: ["kvm-realtime"], estimators: ["wallclock"], handling: false, skewMaxNs: 50_000_000n, faults: ["skew", "partition", "crash", "stall"], vcpusMax: 4 };
const flags = (over: Partial<ReplayFlags>): ReplayFlags => ({
  mode: "sim",
  seed: "6",
  policy: "kvm-realtime",
  estimator: "wallclock",
  guestMigrationHandling: "off",
  skewMax: "50ms",
  faults: "skew,partition,crash,stall",
  vcpusMax: "4",
  sampleInterval: "100ms",
  ntpSource: "reference",
  ...over,
});

describe("chaos replay", () => {
  it("re-simulates the same run whether or not messages are traced", async () => {
    const plain = await runSimulation(6n, HAZARD);
    const traced: NetTrace[] = [];
    const again = await runSimulation(6n, { ...HAZARD, traceMessages: (m) => traced.push(m) });
    expect(again.hash).toBe(plain.hash);
    expect(traced.length).toBeGreaterThan(0);
    expect(traced.map((m) => m.what)).toEqual(expect.arrayContaining(["send", "deliver", "reply"]));
  });

  it("lays every kind of step on one true-time line, violations flagged", async () => {
    const traced: NetTrace[] = [];
    const r = await runSimulation(8n, { ...HAZARD, traceMessages: (m) => traced.push(m) });
    const check = checkHistory(r.history);
    const { steps, cut } = replaySteps(r.history, check, traced);
    expect(cut).toBe(0);
    expect(new Set(steps.map((s) => s[1]))).toEqual(new Set(["message", "fault", "clock", "event", "verdict"]));
    for (let i = 1; i < steps.length; i++) expect((steps[i] as (typeof steps)[number])[0]).toBeGreaterThanOrEqual((steps[i - 1] as (typeof steps)[number])[0]);
    expect(steps.filter((s) => s[6] === 1).length).toBe(check.violations.length);
    expect(steps.filter((s) => s[1] === "clock").length).toBe(r.history.samples.length);
  });

  it("writes a self-contained page and exits 1 for a run that violates an invariant", async () => {
    const html = join(dir, "seed6.html");
    let out = "";
    const code = await runReplay(flags({ html }), (s) => (out += s));
    expect(code).toBe(1);
    expect(out).toMatch(/seed6\.html: \d+ steps \(\d+ messages, \d+ clock reads, \d+ violation\(s\)\)/);
    const page = readFileSync(html, "utf8");
    expect(page).not.toMatch(/<script[^>]*\ssrc=|<link|https?:\/\//);
    const data = JSON.parse(/<script type="application\/json" id="tscmig-replay-data">([\s\S]*?)<\/script>/.exec(page)?.[1] ?? "{}");
    expect(data.seed).toBe("6");
    expect(data.messagesTraced).toBe(true);
    expect(data.command).toBe("tscmig chaos replay --mode sim --seed 6 --policy kvm-realtime --estimator wallclock --guest-migration-handling off --skew-max 50ms --faults skew,partition,crash,stall --vcpus-max 4 --sample-interval 100ms --ntp-source reference");
  });

  it("replays a --history file to the same verdicts as the run itself", async () => {
    const r = await runSimulation(6n, HAZARD);
    const file = join(dir, "run.jsonl");
    writeFileSync(file, canonicalText(r.history));
    const back = readHistoryFile(file);
    expect(canonicalText(back)).toBe(canonicalText(r.history));
    expect(checkHistory(back).counts).toEqual(checkHistory(r.history).counts);
    let out = "";
    expect(await runReplay(flags({ history: file, html: join(dir, "from-file.html") }), (s) => (out += s))).toBe(1);
    expect(out).toMatch(/0 messages/);
  });

  it("refuses what it cannot replay, naming the flag", async () => {
    await expect(runReplay(flags({ runs: "2" }), () => {})).rejects.toThrow(/--runs/);
    await expect(runReplay(flags({ mode: "live" }), () => {})).rejects.toThrow(/--mode live/);
    await expect(runReplay(flags({ history: join(dir, "nope.jsonl") }), () => {})).rejects.toThrow(/--history/);
    const junk = join(dir, "junk.jsonl");
    writeFileSync(junk, '{"meta":{"seed":"1"}}\nnot json\n');
    await expect(runReplay(flags({ history: junk }), () => {})).rejects.toThrow(/line 1: meta\.mode: expected one of "sim", "live"/);
    writeFileSync(junk, '{"meta":{"daemons":[],"epochNs":"0","mode":"sim","ntpSource":"reference","sampleIntervalNs":"1","scenario":{},"seed":"1"}}\nnot json\n');
    await expect(runReplay(flags({ history: junk }), () => {})).rejects.toThrow(/line 2 is not JSON/);
    await expect(runReplay(flags({ policy: "warp" }), () => {})).rejects.toThrow(/--policy/);
  });

  it("keeps a run's report timeline small and consistent: steps stay steps, periods are ordered", async () => {
    const r = await runSimulation(8n, { ...HAZARD, faults: ["skew", "partition", "crash", "stall", "loss", "dup"] });
    const check = checkHistory(r.history);
    const t = runTimeline(r.history, check, 3, 8n);
    const size = JSON.stringify(t).length;
    expect(size).toBeLessThan(12_000);
    expect(t.run).toBe(3);
    for (const host of t.hosts) {
      expect(host.tMs.length).toBeLessThanOrEqual(160);
      for (let i = 1; i < host.tMs.length; i++) expect(host.tMs[i]).toBeGreaterThanOrEqual(host.tMs[i - 1] as number);
    }
    for (const f of t.faults) expect(f.toMs).toBeGreaterThanOrEqual(f.fromMs);
    expect(t.faults.length).toBeLessThanOrEqual(160);
    for (const m of t.migrations) if (m.pauseMs !== null && m.resumeMs !== null) expect(m.resumeMs).toBeGreaterThanOrEqual(m.pauseMs);
    expect(t.migrations.length).toBeGreaterThanOrEqual(check.migrations.length);
    expect(t.verdicts.length).toBe(Math.min(12, check.violations.length + check.hostFaults.length));
  });
});
