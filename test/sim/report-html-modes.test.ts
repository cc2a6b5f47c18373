// Goal: the HTML campaign report shows what the JSON and the CLI summary show per switchover mode —
// migrations started and committed, and every outcome the sources reported — so a reader of the
// page alone sees that both modes were drawn and how each ended.
// Method: a small simulated campaign drawing both modes; the page's text against the campaign's own
// per-mode counts.
import { describe, expect, it } from "vitest";
import { runCampaign } from "../../src/chaos/campaign.js";
import { parseChaosFlags, replayCommand } from "../../src/chaos/cli.js";
import { buildHtml } from "../../src/chaos/report/html.js";

describe("the HTML campaign report", () => {
  it("counts migrations per switchover mode, started, committed and each reported outcome", async () => {
    const { campaign, flags } = parseChaosFlags({ mode: "sim", seed: "31", runs: "8", policy: "all", estimator: "all", guestMigrationHandling: "on", skewMax: "262s", faults: "all", vcpusMax: "4", sampleInterval: "100ms", ntpSource: "reference", determinismCheck: "0", jobs: "1", quiet: true });
    const r = await runCampaign(campaign);
    const modes = r.migrationsBySwitchover;
    expect(modes["two-phase:started"] ?? 0).toBeGreaterThan(0);
    expect(modes["on-receipt:started"] ?? 0).toBeGreaterThan(0);
    const html = buildHtml(r, { replay: (seed) => replayCommand(flags, seed), options: {}, elapsedNs: 1n, jobs: 1, recoveryBoundNs: 30_000_000_000n });
    for (const m of ["two-phase", "on-receipt"]) {
      expect(html).toContain(`<b>${modes[`${m}:committed`] ?? 0} / ${modes[`${m}:started`] ?? 0}</b>${m}: committed / started`);
      const outcomes = Object.keys(modes).filter((k) => k.startsWith(`${m}:`));
      const row = html.match(new RegExp(`<tr><td>${m}</td>((?:<td>\\d+</td>)+)</tr>`));
      expect(row, `a table row for ${m}`).not.toBeNull();
      const cells = [...(row?.[1] ?? "").matchAll(/<td>(\d+)<\/td>/g)].map((x) => Number(x[1]));
      expect(cells.reduce((a, n) => a + n, 0)).toBe(outcomes.reduce((a, k) => a + (modes[k] ?? 0), 0));
    }
    expect(html).toContain("<th>switchover</th><th>started</th>");
  });
});
