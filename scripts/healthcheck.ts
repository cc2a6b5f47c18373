// Container healthcheck: GET the daemon's /healthz; exit 0 on 200, 1 on anything else, within a
// bound. The Dockerfile's HEALTHCHECK and docker-compose.yml run it as
// `node dist/scripts/healthcheck.js` (slim images have no curl or wget). HEALTHZ_URL overrides the
// URL when the daemon listens elsewhere: deliberately not a TSCMIG_* name, since the daemon
// refuses unknown keys of its own prefix. What it prints lands in `docker inspect`'s health log.

import { request } from "node:http";
import { pathToFileURL } from "node:url";

export const DEFAULT_HEALTHZ_URL = "http://127.0.0.1:7070/healthz";

/** Whole-exchange bound: under the healthcheck's own timeout (3 s in the compose file and Dockerfile). */
export const HEALTHZ_TIMEOUT_MS = 2_000;

/** One GET of `url` on a fresh connection: ok on HTTP 200 only; never throws, never outlives `timeoutMs`. */
export function probeHealthz(url: string, timeoutMs = HEALTHZ_TIMEOUT_MS): Promise<{ ok: boolean; detail: string }> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      req.destroy();
      resolve({ ok: false, detail: `GET ${url}: no answer within ${timeoutMs} ms` });
    }, timeoutMs);
    const finish = (r: { ok: boolean; detail: string }) => {
      clearTimeout(timer);
      resolve(r);
    };
    const req = request(url, { method: "GET", agent: false }, (res) => {
      res.resume();
      const status = res.statusCode ?? 0;
      finish({ ok: status === 200, detail: `GET ${url}: HTTP ${status}` });
    });
    req.on("error", (e) => finish({ ok: false, detail: `GET ${url}: ${e.message}` }));
    req.end();
  });
}

const invokedDirectly = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (invokedDirectly) {
  const url = process.env.HEALTHZ_URL || DEFAULT_HEALTHZ_URL;
  void probeHealthz(url).then((r) => {
    (r.ok ? console.log : console.error)(r.detail);
    process.exit(r.ok ? 0 : 1);
  });
}
