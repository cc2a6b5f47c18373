// Goal: a person with a browser can use the dashboard: the page loads with no console errors, a VM
// created through the page appears with a plot that gains points, a skew injected through the page
// shows in that plot, and a migration started from the page appears on the other daemon's page with
// its blackout and phases. Screenshots are kept as CI artifacts (printed path).
// Method: two real daemons on loopback, Debian's Chromium driven by playwright-core; waits are
// bounded waits on what the page shows, never sleeps. Skips, saying why, where no browser starts.
import { join } from "node:path";
import type { Page } from "playwright-core";
import { afterAll, describe, expect, it } from "vitest";
import { artifactsDir, type Browser, launchBrowser } from "../helpers/browser.js";
import { stopAllDaemons, TestDaemon } from "../helpers/daemons.js";

afterAll(stopAllDaemons);

/** Console errors and uncaught exceptions of a page. */
function watchErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  return errors;
}

const POLL = { timeout: 30_000, interval: 100 };
const num = async (page: Page, selector: string, attr: string) => Number(await page.getAttribute(selector, attr));

describe("dashboard in a real browser", () => {
  it("creates a VM, shows its plot grow and a skew change, migrates it, and the other page shows blackout and phases", async (ctx) => {
    const launched = await launchBrowser();
    if ("skip" in launched) {
      console.log(`SKIP dashboard browser test: ${launched.skip}`);
      ctx.skip();
      return;
    }
    const browser: Browser = launched;
    try {
      const b = await TestDaemon.start({ name: "browser-b" });
      const a = await TestDaemon.start({ name: "browser-a", args: ["--peers", `browser-b=${b.grpc}@${b.http.replace("http://", "")}`] });
      const shots = artifactsDir();
      console.log(`browser screenshots: ${shots}`);

      const pa = await browser.context.newPage();
      const errorsA = watchErrors(pa);
      await pa.goto(`${a.http}/`);
      await pa.waitForSelector("#conn[data-status=live]");
      await pa.waitForSelector("#daemon-name:text('browser-a')");
      await pa.waitForSelector("[data-peer] >> text=browser-b");

      // Create a VM through the page.
      await pa.fill("#create-vm-form input[name=id]", "web-vm");
      await pa.click("#create-vm-form button[type=submit]");
      const chart = "[data-role=vm-chart][data-vm=web-vm]";
      await pa.waitForSelector(`${chart}[data-points]`);
      await expect.poll(() => num(pa, chart, "data-points"), POLL).toBeGreaterThanOrEqual(3);
      const before = await num(pa, chart, "data-points");
      await expect.poll(() => num(pa, chart, "data-points"), POLL).toBeGreaterThan(before);
      expect(await pa.locator(`${chart} canvas`).count()).toBeGreaterThan(0);
      await pa.screenshot({ path: join(shots, "1-source-vm-created.png"), fullPage: true });

      // Inject skew through the page: the host card and the VM's plot both show it.
      await pa.fill("#skew-form input[name=offset]", "4ms");
      await pa.click("#skew-form button[type=submit]");
      await pa.waitForSelector("[data-role=host-skew][data-skew-ns='4000000']");
      await pa.waitForSelector(`${chart}[data-host-skew-ns='4000000']`);
      await pa.screenshot({ path: join(shots, "2-source-skew-injected.png"), fullPage: true });

      // Migrate from the page, to the peer it offers.
      const vmCard = pa.locator(".vm[data-vm=web-vm]");
      await vmCard.locator("select[name=destination]").selectOption(b.grpc);
      await vmCard.locator("select[name=policy]").selectOption("kvm-realtime");
      await vmCard.locator("select[name=estimator]").selectOption("wallclock");
      await vmCard.locator("button[type=submit]").click();
      await pa.waitForSelector("tr[data-direction=out] .pill[data-status=committed]");
      await pa.waitForSelector(`${chart}[data-blackouts='1']`);
      await pa.waitForSelector("tr[data-direction=out] [data-role=error-vs-bound]");
      await pa.screenshot({ path: join(shots, "3-source-after-migration.png"), fullPage: true });

      // The destination's page shows the VM arriving: the blackout on its plot, the signals marked,
      // and the migration's phases.
      const pb = await browser.context.newPage();
      const errorsB = watchErrors(pb);
      await pb.goto(`${b.http}/ui/`);
      await pb.waitForSelector("#conn[data-status=live]");
      await pb.waitForSelector("tr[data-direction=in] .pill[data-status=committed]");
      const phases = await pb.getAttribute("tr[data-direction=in] [data-role=phases]", "data-phases");
      expect(phases).toContain("decode");
      expect(phases).toContain("restore");
      expect(phases).toContain("blackout (estimated)");
      expect(await pb.textContent("tr[data-direction=in]")).toContain("kvm-realtime / wallclock");
      const chartB = "[data-role=vm-chart][data-vm=web-vm]";
      await pb.waitForSelector(`${chartB}[data-blackouts='1']`);
      await expect.poll(() => num(pb, chartB, "data-points"), POLL).toBeGreaterThanOrEqual(3);
      expect(await num(pb, chartB, "data-marks")).toBeGreaterThanOrEqual(2); // vmclock marker, stopped flag / guest reaction
      await pb.screenshot({ path: join(shots, "4-destination-after-migration.png"), fullPage: true });

      expect(errorsA).toEqual([]);
      expect(errorsB).toEqual([]);
    } finally {
      await browser.close();
    }
  });

  it("behind a token: asks for it, takes it once from the URL fragment, and streams through the cookie", async (ctx) => {
    const launched = await launchBrowser();
    if ("skip" in launched) {
      console.log(`SKIP dashboard browser token test: ${launched.skip}`);
      ctx.skip();
      return;
    }
    const token = "browser-test-token-5f0c2a";
    try {
      const d = await TestDaemon.start({ name: "browser-token", token });
      const page = await launched.context.newPage();
      const errors = watchErrors(page);
      await page.goto(`${d.http}/ui/`);
      await page.waitForSelector("#token-form:visible");
      await page.fill("#token-input", token);
      await page.click("#token-form button[type=submit]");
      await page.waitForSelector("#conn[data-status=live]");
      await page.fill("#create-vm-form input[name=id]", "tok-vm");
      await page.click("#create-vm-form button[type=submit]");
      await page.waitForSelector("[data-role=vm-chart][data-vm=tok-vm][data-points]");

      const second = await launched.context.newPage();
      await second.goto(`${d.http}/ui/#token=${token}`);
      await second.waitForSelector("#conn[data-status=live]");
      expect(second.url()).not.toContain(token); // the fragment is dropped once read
      await second.waitForSelector("[data-role=vm-chart][data-vm=tok-vm]");
      await second.screenshot({ path: join(artifactsDir(), "5-token-page.png"), fullPage: true });
      // The 401 of the first, tokenless attempt is the browser's own resource error line; nothing else.
      expect(errors.filter((e) => !/401 \(Unauthorized\)/.test(e))).toEqual([]);
      expect(d.logs.join("\n")).not.toContain(token);
    } finally {
      await launched.close();
    }
  });
});
