// Goal: in a real browser, the chaos report of a failing campaign shows the violations with their
// plots on the first screen, every run is reachable through the run browser (also past the first
// page) with its timeline drawn, and the step-through page of one run walks to its violations —
// all without a console error and without loading anything. Screenshots are kept as artifacts.
// Method: the chaos command's own code writes the pages (file://), Debian's Chromium opens them via
// playwright-core; skips, saying why, where no browser starts.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { afterAll, describe, expect, it } from "vitest";
import { runChaos } from "../../src/chaos/cli.js";
import { runReplay } from "../../src/chaos/replay-cli.js";
import { artifactsDir, launchBrowser } from "../helpers/browser.js";

const dir = mkdtempSync(join(tmpdir(), "tscmig-report-browser-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const scenario = { policy: "kvm-realtime", estimator: "wallclock", guestMigrationHandling: "off", skewMax: "50ms", faults: "skew,partition,crash,stall", vcpusMax: "4", sampleInterval: "100ms", ntpSource: "reference" };

function watch(page: Page): { errors: string[]; requests: string[] } {
  const errors: string[] = [];
  const requests: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("request", (r) => {
    if (!r.url().startsWith("file://")) requests.push(r.url());
  });
  return { errors, requests };
}

describe("chaos report and replay page in a real browser", () => {
  it("shows violations with plots first, reaches every run, and steps through one", async (ctx) => {
    const launched = await launchBrowser();
    if ("skip" in launched) {
      console.log(`SKIP report browser test: ${launched.skip}`);
      ctx.skip();
      return;
    }
    try {
      const html = join(dir, "campaign.html");
      const code = await runChaos({ mode: "sim", seed: "5", runs: "60", determinismCheck: "0", jobs: "1", quiet: true, html, ...scenario }, () => {});
      expect(code).toBe(1);
      const shots = artifactsDir();
      const page = await launched.context.newPage();
      const seen = watch(page);
      await page.goto(`file://${html}`);
      const firstPlot = page.locator(".card.violation .plot canvas").first();
      await firstPlot.waitFor();
      const box = await firstPlot.boundingBox();
      expect(box).not.toBeNull();
      expect((box as { y: number }).y).toBeLessThan(page.viewportSize()?.height ?? 1000); // on the first screen
      await expect.poll(() => page.locator(".card.violation pre").first().textContent()).toMatch(/^tscmig chaos --mode sim --seed \d+ --runs 1 .*--ntp-source reference$/);
      await page.screenshot({ path: join(shots, "6-report-first-screen.png") });

      // Every run: 60 runs on two pages; the last one opens with its timeline.
      await page.locator("#run-browser").scrollIntoViewIfNeeded();
      await expect.poll(() => page.locator("#run-browser table.runs tbody tr").count()).toBe(50);
      await page.locator("#run-browser button", { hasText: "next" }).click();
      await expect.poll(() => page.locator("#run-browser table.runs tbody tr").count()).toBe(10);
      await page.locator('#run-browser tr[data-run="59"]').click();
      await page.locator('#run-panel[data-run="59"] [data-role=host-timeline] canvas').waitFor();
      expect(Number(await page.getAttribute('#run-panel[data-run="59"] [data-role=host-timeline]', "data-points"))).toBeGreaterThan(1);
      await page.locator("#run-panel").screenshot({ path: join(shots, "7-report-run-59.png") });
      // Filtering narrows to the failing runs.
      await page.selectOption("#run-filter", "failing");
      const failing = await page.locator("#run-browser table.runs tbody tr").count();
      expect(failing).toBeGreaterThan(0);
      expect(failing).toBeLessThan(50);
      expect(seen.errors).toEqual([]);
      expect(seen.requests).toEqual([]);

      // The step-through page of a failing run.
      const seed = (await page.locator("#run-browser table.runs tbody tr td:nth-child(2)").first().textContent()) as string;
      const replay = join(dir, "replay.html");
      await runReplay({ mode: "sim", seed, html: replay, ...scenario }, () => {});
      const rp = await launched.context.newPage();
      const rs = watch(rp);
      await rp.goto(`file://${replay}`);
      await rp.locator("li.step.current").waitFor();
      await rp.click("#first");
      expect(await rp.getAttribute("li.step.current", "data-step")).toBe("0");
      await rp.click("#next");
      expect(await rp.getAttribute("li.step.current", "data-step")).toBe("1");
      await rp.click("#next-violation");
      await expect.poll(() => rp.locator("li.step.current.violation").count()).toBe(1);
      await expect.poll(() => rp.locator(".state .current-step.violation").count()).toBe(1);
      for (const kind of ["message", "clock", "event", "verdict"]) expect(await rp.locator(`li.step.${kind}`).count(), kind).toBeGreaterThan(0);
      await rp.screenshot({ path: join(shots, "8-replay-step-through.png") });
      expect(rs.errors).toEqual([]);
      expect(rs.requests).toEqual([]);
    } finally {
      await launched.close();
    }
  });
});
