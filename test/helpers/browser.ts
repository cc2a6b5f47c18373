// Debian's Chromium driven by playwright-core for the browser tests. The npm browser download
// cannot work here, so the system executable is launched with the flags this machine needs
// (no sandbox as root, no GPU, no background networking that a closed network refuses) and a
// fresh profile each time. Where no browser starts, `launchBrowser` says why and the test skips.

import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type BrowserContext } from "playwright-core";
import { ROOT } from "./daemons.js";

export const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** Where screenshots go: $TSCMIG_ARTIFACTS_DIR, else artifacts/browser in the repository (ignored by git). */
export function artifactsDir(): string {
  const dir = process.env.TSCMIG_ARTIFACTS_DIR ?? join(ROOT, "artifacts", "browser");
  mkdirSync(dir, { recursive: true });
  return dir;
}

export function chromiumPath(): string | undefined {
  const candidates = [process.env.TSCMIG_CHROMIUM, "/usr/bin/chromium", "/usr/bin/chromium-browser"].filter((p): p is string => p !== undefined && p !== "");
  return candidates.find((p) => existsSync(p));
}

export interface Browser {
  context: BrowserContext;
  close(): Promise<void>;
}

export async function launchBrowser(): Promise<Browser | { skip: string }> {
  const executablePath = chromiumPath();
  if (executablePath === undefined) return { skip: "no Chromium (apt-get install chromium; scripts/ci-deps.sh does it in CI)" };
  const profile = mkdtempSync(join(tmpdir(), "tscmig-chromium-"));
  try {
    const context = await chromium.launchPersistentContext(profile, {
      executablePath,
      headless: true,
      args: CHROMIUM_FLAGS,
      viewport: { width: 1400, height: 1000 },
      timeout: 60_000,
    });
    return {
      context,
      async close() {
        await context.close().catch(() => undefined);
        rmSync(profile, { recursive: true, force: true });
      },
    };
  } catch (e) {
    rmSync(profile, { recursive: true, force: true });
    return { skip: `Chromium at ${executablePath} did not start: ${e instanceof Error ? e.message.split("\n")[0] : String(e)}` };
  }
}
