// Goal: a campaign split into shards and merged is the unsharded campaign — same seeds, counts,
// violations, distributions, plots, determinism sample — down to the bytes of its JSON, JUnit and
// HTML reports, save the wall clock; and a merge refuses shards that are not one whole campaign,
// naming the file and the field. Method: run the same campaigns (a passing one with every fault
// kind, a failing one with violations and host clock faults) unsharded and as N shards for several
// N; send each shard's fold through the JSON text of a report and back; compare the merged result
// and the three writers' output (given the same wall-clock context) with the unsharded ones; then
// drive the CLI code (`--shard`, `merge`) with report files and compare the files, ignoring only
// `timing` and JUnit's `time`.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { type CampaignResult, runCampaign, runCampaignFold, runSeed } from "../../src/chaos/campaign.js";
import { type ChaosFlags, parseChaosFlags, replayCommand, runChaos, runMerge } from "../../src/chaos/cli.js";
import { buildHtml } from "../../src/chaos/report/html.js";
import { buildJsonReport, type ReportContext } from "../../src/chaos/report/json.js";
import { buildJunit } from "../../src/chaos/report/junit.js";
import { decodeFold, encodeFold, MERGED_KEYS, mergeFolds, parseShard, shardRange } from "../../src/chaos/shard.js";

const dir = mkdtempSync(join(tmpdir(), "tscmig-shards-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const flags = (over: Partial<ChaosFlags>): ChaosFlags => ({
  mode: "sim",
  seed: "21",
  runs: "23",
  policy: "all",
  estimator: "all",
  guestMigrationHandling: "on",
  skewMax: "262s",
  faults: "all",
  vcpusMax: "4",
  sampleInterval: "100ms",
  ntpSource: "reference",
  determinismCheck: "0.2",
  jobs: "1",
  quiet: true,
  ...over,
});
/** Violations (I4) and host clock faults in most runs. */
const FAILING: Partial<ChaosFlags> = { seed: "5", runs: "17", guestMigrationHandling: "off", policy: "kvm-realtime", estimator: "wallclock", skewMax: "50ms", faults: "skew" };

/** What a shard's fold becomes after the trip through its report's JSON text. */
const viaReport = (fold: CampaignResult, where: string) => decodeFold(JSON.parse(JSON.stringify(encodeFold(fold))), where);

async function shardedAndMerged(f: ChaosFlags, count: number): Promise<CampaignResult> {
  const { campaign } = parseChaosFlags(f);
  const folds: CampaignResult[] = [];
  for (let index = 0; index < count; index++) {
    const fold = await runCampaignFold({ ...campaign, range: shardRange({ index, count }, campaign.runs) });
    folds.push(viaReport(fold, `shard-${index}.json`));
  }
  return mergeFolds(folds, { mode: campaign.mode, seed: campaign.seed, runs: campaign.runs });
}

function reports(r: CampaignResult, f: ChaosFlags): { json: string; junit: string; html: string } {
  const { campaign, flags: scenario } = parseChaosFlags(f);
  const ctx: ReportContext = {
    replay: (seed) => replayCommand(scenario, seed),
    options: { ...scenario, seed: campaign.seed.toString(), runs: campaign.runs, "determinism-check": campaign.determinismCheck },
    elapsedNs: 1_234_000_000n, // the same wall clock for both: everything else must follow from the runs
    jobs: 2,
    recoveryBoundNs: 30_000_000_000n,
  };
  const seeds = Array.from({ length: campaign.runs }, (_v, run) => ({ run, seed: runSeed(campaign.seed, run) }));
  return { json: JSON.stringify(buildJsonReport(r, ctx)), junit: buildJunit(r, ctx, seeds), html: buildHtml(r, ctx) };
}

describe("sharded campaigns", () => {
  for (const [name, over] of [["passing, every fault kind", {}], ["failing, with host clock faults", FAILING]] as const) {
    it(`${name}: sharded and merged equals unsharded, field by field and in every report`, async () => {
      const f = flags(over);
      const whole = await runCampaign(parseChaosFlags(f).campaign);
      if (over === FAILING) {
        expect(whole.violationCount).toBeGreaterThan(0);
        expect(whole.hostFaultCount).toBeGreaterThan(0);
      } else expect(whole.totals.faults).toBeGreaterThan(0);
      expect(whole.determinism.checked).toBeGreaterThan(1);
      const want = reports(whole, f);
      for (const count of [1, 2, 3, 7, whole.runs]) {
        const merged = await shardedAndMerged(f, count);
        expect(merged, `${count} shards`).toStrictEqual(whole);
        const got = reports(merged, f);
        expect(got.json, `${count} shards: JSON`).toBe(want.json);
        expect(got.junit, `${count} shards: JUnit`).toBe(want.junit);
        expect(got.html, `${count} shards: HTML`).toBe(want.html);
      }
    });
  }

  it("a campaign result has no field the merge does not know (teach shard.ts mergeFolds and decodeFold a new one)", async () => {
    const r = await runCampaign(parseChaosFlags(flags({ runs: "2" })).campaign);
    expect(Object.keys(r)).toEqual([...MERGED_KEYS]);
  });

  it("assigns every run to exactly one shard, in contiguous blocks whose sizes differ by at most one", () => {
    for (const [runs, count] of [[1, 1], [10, 3], [1_000_000, 100], [1_000_000, 7], [23, 23]] as const) {
      let next = 0;
      const sizes: number[] = [];
      for (let index = 0; index < count; index++) {
        const { first, end } = shardRange({ index, count }, runs);
        expect(first).toBe(next);
        sizes.push(end - first);
        next = end;
      }
      expect(next).toBe(runs);
      expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
    }
  });

  it("refuses a malformed --shard", () => {
    for (const bad of ["", "1", "a/b", "3/3", "0/0", "-1/3", "1/3/4", "0/100001"]) expect(() => parseShard(bad, 1_000_000), bad).toThrow(/shard/);
    expect(() => parseShard("0/30", 20)).toThrow(/exceeds --runs/);
    expect(parseShard("2/3", 10)).toEqual({ index: 2, count: 3 });
  });
});

describe("tscmig chaos --shard and merge", () => {
  const path = (name: string) => join(dir, name);
  const run = async (f: ChaosFlags) => runChaos(f, () => {});
  const normalizeJunit = (x: string) => x.replace(/ time="[0-9.]+"/g, ' time="T"');
  const withoutTiming = (file: string) => {
    const j = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
    delete j.timing;
    return j;
  };

  it("the merged files are the unsharded run's, but for wall-clock time", async () => {
    const over = { ...FAILING, jobs: "1" }; // worker threads need dist/ (campaign.ts workerUrl); jobs do not change results
    expect(await run(flags({ ...over, json: path("whole.json"), junit: path("whole.xml"), html: path("whole.html") }))).toBe(1);
    for (let i = 0; i < 3; i++) expect(await run(flags({ ...over, shard: `${i}/3`, json: path(`s${i}.json`), junit: path(`s${i}.xml`) }))).toBe(1);
    const shard1 = JSON.parse(readFileSync(path("s1.json"), "utf8"));
    expect(shard1.options.shard).toBe("1/3");
    expect(shard1.shard).toMatchObject({ index: 1, count: 3, firstRun: 5, endRun: 11 });
    expect(readFileSync(path("s1.xml"), "utf8")).toMatch(/tests="6"/);
    expect(runMerge([path("s2.json"), path("s0.json"), path("s1.json")], { json: path("m.json"), junit: path("m.xml"), html: path("m.html"), quiet: true }, () => {})).toBe(1);
    expect(withoutTiming(path("m.json"))).toStrictEqual(withoutTiming(path("whole.json")));
    expect(normalizeJunit(readFileSync(path("m.xml"), "utf8"))).toBe(normalizeJunit(readFileSync(path("whole.xml"), "utf8")));
    const timing = JSON.parse(readFileSync(path("m.json"), "utf8")).timing;
    expect(timing.jobs).toBe(3);
    expect(timing.shards.map((s: { index: number }) => s.index)).toEqual([0, 1, 2]);
    expect(readFileSync(path("m.html"), "utf8")).toMatch(/FAIL/);
  });

  it("refuses shards that are not one whole campaign, naming the file and the field", async () => {
    const base = flags({ runs: "6", jobs: "1" });
    for (let i = 0; i < 2; i++) await run({ ...base, shard: `${i}/2`, json: path(`ok${i}.json`) });
    await run({ ...base, seed: "99", shard: "1/2", json: path("other.json") });
    await run({ ...base, shard: "1/3", json: path("third.json") });
    await run({ ...base, json: path("plain.json") });
    const merge = (files: string[]) => () => runMerge(files.map(path), { quiet: true }, () => {});
    expect(merge(["ok0.json"])).toThrow(/missing shard\(s\) 1 of 2/);
    expect(merge(["ok0.json", "ok0.json"])).toThrow(/ok0\.json: shard 0\/2 again/);
    expect(merge(["ok0.json", "other.json"])).toThrow(/other\.json: a different campaign/);
    expect(merge(["ok0.json", "third.json"])).toThrow(/third\.json: shard of 3/);
    expect(merge(["plain.json"])).toThrow(/plain\.json: not a shard report/);
    expect(merge(["nothing-here.json"])).toThrow(/nothing-here\.json: cannot read/);
    writeFileSync(path("junk.json"), "{ not json");
    expect(merge(["junk.json"])).toThrow(/junk\.json: not JSON/);
    // A tampered fold: the error names the file and the field's path.
    const j = JSON.parse(readFileSync(path("ok1.json"), "utf8"));
    j.shard.fold.stats[0][3] = "fast";
    writeFileSync(path("bad1.json"), JSON.stringify(j));
    expect(merge(["ok0.json", "bad1.json"])).toThrow(/shard\.fold\.stats\[0\]\[3\]: .*bad1\.json: expected a number/);
    j.shard.fold.stats[0][3] = 1;
    j.shard.fold.totals.runs = 1;
    writeFileSync(path("bad2.json"), JSON.stringify(j));
    expect(merge(["ok0.json", "bad2.json"])).toThrow(/bad2\.json: 1 runs, but shard 1\/2 has 3/);
    j.shard.fold.totals.runs = 3;
    j.shard.firstRun = 0;
    writeFileSync(path("bad3.json"), JSON.stringify(j));
    expect(merge(["ok0.json", "bad3.json"])).toThrow(/shard\.firstRun: .*bad3\.json/);
  });
});
