// Goal: `tscmig chaos` reports what it checked and how to replay what failed. Method: run the
// command's code with report files in a temporary directory — a passing campaign and a failing
// one (the hazard) — and read the JSON, JUnit and HTML back; replay a failing seed alone; which runs
// get a timeline with and without a report that holds them.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { type CampaignOptions, defaultCampaign, runCampaign } from "../../src/chaos/campaign.js";
import { type ChaosFlags, parseChaosFlags, runChaos } from "../../src/chaos/cli.js";
import { DEFAULT_SCENARIO } from "../../src/chaos/sim/scenario.js";
import { restoreFreezeAdvancingTsc } from "../helpers/broken-restores.js";

const dir = mkdtempSync(join(tmpdir(), "tscmig-chaos-reports-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const flags = (over: Partial<ChaosFlags>): ChaosFlags => ({
  mode: "sim",
  seed: "5",
  runs: "20",
  policy: "advance",
  estimator: "one-sided",
  guestMigrationHandling: "on",
  skewMax: "262s",
  faults: "all",
  vcpusMax: "4",
  sampleInterval: "100ms",
  ntpSource: "reference",
  determinismCheck: "0.1",
  jobs: "1",
  quiet: false,
  ...over,
});

function reportData(html: string): { rows: (string | number)[][]; timelines: Record<string, string> } {
  const m = /<script type="application\/json" id="tscmig-report-data">([\s\S]*?)<\/script>/.exec(html);
  expect(m).not.toBeNull();
  return JSON.parse((m as RegExpExecArray)[1] as string);
}

async function run(over: Partial<ChaosFlags>, extra: Partial<CampaignOptions> = {}): Promise<{ code: number; text: string }> {
  let text = "";
  const code = await runChaos(flags(over), (s) => (text += s), extra);
  return { code, text };
}

describe("tscmig chaos reports", () => {
  it("a passing campaign: exit 0, JSON with what was checked and the distributions, JUnit, self-contained HTML", async () => {
    const json = join(dir, "pass.json");
    const junit = join(dir, "pass.xml");
    const html = join(dir, "pass.html");
    const { code, text } = await run({ json, junit, html });
    expect(code).toBe(0);
    expect(text).toMatch(/PASS: I1–I9 held in every run/);
    const j = JSON.parse(readFileSync(json, "utf8"));
    expect(j.seed).toBe("5");
    expect(j.runs).toBe(20);
    expect(j.violations).toEqual([]);
    expect(j.checked.samples).toBeGreaterThan(0);
    expect(j.checked.migrations).toBeGreaterThan(0);
    expect(j.checked.faults).toBeGreaterThan(0);
    expect(j.checked.restores).toBeGreaterThan(0);
    expect(j.violationsByInvariant.I9).toBe(0);
    expect(j.distributions.byPolicy.advance.absErrorNs.p50).toBeGreaterThanOrEqual(0);
    expect(j.distributions.byPolicy.advance.errorOverBound.max).toBeLessThanOrEqual(1);
    expect(j.distributions.byEstimator["one-sided"].migrations).toBe(j.checked.migrations);
    expect(j.distributions.blackoutNs.p99).toBeGreaterThan(0);
    expect(j.determinism.checked).toBeGreaterThan(0);
    const x = readFileSync(junit, "utf8");
    expect(x).toMatch(/^<\?xml/);
    expect(x).toMatch(/<testsuite name="tscmig.chaos.sim" tests="20" failures="0"/);
    const h = readFileSync(html, "utf8");
    expect(h).toMatch(/<svg/);
    expect(h).toMatch(/PASS/);
    // Self-contained: the viewer and chart library are inline; nothing is loaded from anywhere.
    expect(h).not.toMatch(/<script[^>]*\ssrc=|<link|<img|@import|url\(|https?:\/\/(?!www\.w3\.org\/2000\/svg)/);
    expect(h).toContain("<script>");
    const data = reportData(h);
    expect(data.rows.length).toBe(20); // every run is listed…
    expect(Object.keys(data.timelines).length).toBe(20); // …and has its timeline
    const t = JSON.parse(data.timelines["3"] as string);
    expect(t.run).toBe(3);
    expect(t.hosts.length).toBeGreaterThan(1);
    expect(t.vms.length).toBeGreaterThan(0);
    for (const m of t.migrations) if (m.pauseMs !== null && m.resumeMs !== null) expect(m.pauseMs).toBeLessThanOrEqual(m.resumeMs);
    // The counts say what they count, and the outcome table says why it may differ.
    expect(h).toContain("new VM generations that ran");
    expect(h).toMatch(/What each source(&apos;|&#39;|')s migrate call returned/);
    // Round decade ticks with units on the log axes, never exponent notation.
    expect(h.replace(/<script[\s\S]*?<\/script>/g, "")).not.toMatch(/\de[+-]\d/);
    expect(h).toMatch(/I9 policy conformance/);
  });

  it("a failing campaign: exit 1, each failing run with its replay command, which replays it alone", async () => {
    const json = join(dir, "fail.json");
    const junit = join(dir, "fail.xml");
    const html = join(dir, "fail.html");
    const over = { guestMigrationHandling: "off", policy: "kvm-realtime", estimator: "wallclock", skewMax: "50ms", faults: "skew", json, junit };
    const { code, text } = await run({ ...over, html });
    expect(code).toBe(1);
    // The page: violations first (before the counts, the runs and any raw data), each with its plot
    // and its replay command whole.
    const h = readFileSync(html, "utf8");
    const at = (needle: string) => h.indexOf(needle);
    expect(at('id="violations"')).toBeGreaterThan(0);
    expect(at('id="violations"')).toBeLessThan(at("What was checked"));
    expect(at('id="violations"')).toBeLessThan(at('id="runs"'));
    expect(at('id="violations"')).toBeLessThan(at('id="raw"'));
    const cards = h.match(/<div class="card violation"[\s\S]*?<\/pre><\/div><\/div>/g) ?? [];
    expect(cards.length).toBeGreaterThan(0);
    for (const c of cards) {
      expect(c).toMatch(/<div class="plot" data-run="\d+" data-vm="[^"]+">/);
      expect(c).toMatch(/<pre>tscmig chaos --mode sim --seed \d+ --runs 1 [^<]*--ntp-source reference<\/pre>/);
      expect(c).toMatch(/<pre>tscmig chaos replay --mode sim --seed \d+ [^<]*<\/pre>/);
    }
    const data = reportData(h);
    expect(data.rows.length).toBe(20);
    const failing = data.rows.filter((r) => (r[6] as number) > 0).map((r) => String(r[0]));
    for (const run of failing) expect(data.timelines[run], `run ${run}`).toBeTypeOf("string");
    const m = /replay: (tscmig chaos --mode sim --seed (\d+) --runs 1 .*)/.exec(text);
    expect(m, text).not.toBeNull();
    const j = JSON.parse(readFileSync(json, "utf8"));
    expect(j.passed).toBe(false);
    const v = j.violations[0];
    expect(v.invariant).toBe("I4");
    expect(v.run).toBeTypeOf("number");
    expect(v.seed).toMatch(/^\d+$/);
    expect(v.values.errorNs).toMatch(/^-?\d+$/);
    expect(v.replay).toMatch(/--runs 1/);
    expect(readFileSync(junit, "utf8")).toMatch(/<failure type="I4"/);
    // The printed command, run as printed, fails the same way.
    const seed = (m as RegExpExecArray)[2] as string;
    const again = await run({ ...over, seed, runs: "1", json: join(dir, "replay.json"), junit: undefined });
    expect(again.code).toBe(1);
    const r = JSON.parse(readFileSync(join(dir, "replay.json"), "utf8"));
    expect(r.violations[0].seed).toBe(seed);
    expect(r.violationsByInvariant.I4).toBeGreaterThan(0);
  });

  it("a restore that breaks its policy: I9 in the summary, the JSON, the JUnit failure and the HTML table", async () => {
    const json = join(dir, "i9.json");
    const junit = join(dir, "i9.xml");
    const html = join(dir, "i9.html");
    const { code, text } = await run({ policy: "freeze", faults: "none", runs: "6", json, junit, html }, { restoreHook: restoreFreezeAdvancingTsc });
    expect(code).toBe(1);
    expect(text).toMatch(/I9 policy conformance ×\d+/);
    const j = JSON.parse(readFileSync(json, "utf8"));
    expect(j.violationsByInvariant.I9).toBeGreaterThan(0);
    const v = j.violations.find((x: { invariant: string }) => x.invariant === "I9");
    expect(v.title).toBe("policy conformance");
    expect(v.values.policy).toBe("freeze");
    expect(readFileSync(junit, "utf8")).toMatch(/<failure type="I9" message="I9 policy conformance violated/);
    expect(readFileSync(html, "utf8")).toMatch(/I9 policy conformance<\/td><td[^>]*>[1-9]/);
  });

  it("passing runs' timelines are built only for a report that holds them (HTML, a shard's JSON); failing runs always get theirs", async () => {
    expect(parseChaosFlags(flags({})).campaign.timelineRuns).toBe(0);
    expect(parseChaosFlags(flags({ json: "x.json" })).campaign.timelineRuns).toBe(0);
    expect(parseChaosFlags(flags({ html: "x.html" })).campaign.timelineRuns).toBeUndefined();
    expect(parseChaosFlags(flags({ json: "x.json", shard: "0/2" })).campaign.timelineRuns).toBeUndefined();
    const scenario = { ...DEFAULT_SCENARIO, handling: false, policies: ["kvm-realtime" as const], estimators: ["wallclock" as const], skewMaxNs: 50_000_000n, faults: ["skew" as const] };
    const r = await runCampaign(defaultCampaign({ seed: 5n, runs: 12, scenario, determinismCheck: 0, plotRuns: 0, timelineRuns: 0 }));
    expect(r.failingRuns.length).toBeGreaterThan(0);
    expect(r.failingRuns.length).toBeLessThan(12);
    expect([...r.timelines.keys()]).toEqual(r.failingRuns.map((f) => f.run));
    const all = await runCampaign(defaultCampaign({ seed: 5n, runs: 12, scenario, determinismCheck: 0, plotRuns: 0 }));
    expect(all.timelines.size).toBe(12);
    for (const [run, text] of r.timelines) expect(text).toBe(all.timelines.get(run));
  });

  it("bad flags are refused with the flag named", async () => {
    await expect(run({ policy: "warp" })).rejects.toThrow(/--policy: unknown "warp"/);
    await expect(run({ faults: "meteor" })).rejects.toThrow(/--faults/);
    await expect(run({ seed: "-1" })).rejects.toThrow(/--seed/);
  });
});
