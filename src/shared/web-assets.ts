// Where the built browser assets live (scripts/build-web.mjs writes them to dist/web): the daemon
// serves the dashboard from there and the chaos report inlines its viewer and chart library from
// there. Found from this module's own location, so it works from src (tests) and dist alike.

import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { TscmigError } from "./errors.js";

/** The package root: the nearest folder above this module whose package.json is ours. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const p = join(dir, "package.json");
    if (existsSync(p) && (JSON.parse(readFileSync(p, "utf8")) as { name?: string }).name === "tscmig") return dir;
    dir = dirname(dir);
  }
  return dirname(fileURLToPath(import.meta.url));
}

export function webAssetsDir(): string {
  return join(packageRoot(), "dist", "web");
}

/** One built asset's text; a clear error when the build has not run. */
export function readWebAsset(name: string): string {
  const p = join(webAssetsDir(), name);
  if (!existsSync(p)) throw new TscmigError("failed_precondition", `${p} is missing: build the browser assets first (npm run build)`);
  return readFileSync(p, "utf8");
}
