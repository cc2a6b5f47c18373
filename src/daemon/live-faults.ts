// The live fault hook (test-only): lets an integration test kill a real daemon at an exact protocol
// phase instead of racing a `kill -9` against the network. The simulator fires the named sites of
// shared/faults.ts by seeded chance and catches a CrashSignal; a live daemon has nobody to catch it,
// so here a listed crash site ends the process the way `kill -9` would — no cleanup, no reply, no
// journal write after the site — and the test restarts it on the same `--data` without the list.
//
// Sites not listed are inert (NO_FAULTS behaviour). A listed non-crash site (`doorbell.lose`) fires
// every time it is reached. Production never sets the list; the config key says so.

import { invalid } from "../shared/errors.js";
import { FAULT_SITES, type FaultSite, type Faults } from "../shared/faults.js";

/** Parses `TSCMIG_FAULTS`: comma-separated names from FAULT_SITES; empty means none. */
export function parseFaultSites(raw: string): readonly FaultSite[] {
  const names = raw
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  const known = FAULT_SITES as readonly string[];
  for (const n of names) if (!known.includes(n)) throw invalid("faults", `unknown fault site ${JSON.stringify(n)} (one of ${FAULT_SITES.join(", ")})`);
  return [...new Set(names)] as FaultSite[];
}

export function isCrashSite(site: FaultSite): boolean {
  return site.startsWith("crash.");
}

/**
 * A Faults whose listed sites fire. `crash(site)` must not return (main.ts passes a function that
 * sends SIGKILL to its own process); it is injected so this module never touches `process`.
 */
export function liveFaults(sites: readonly FaultSite[], crash: (site: FaultSite) => never): Faults {
  const on = new Set(sites);
  return {
    fire(site) {
      if (!on.has(site)) return false;
      if (isCrashSite(site)) crash(site);
      return true;
    },
    delayNs: () => 0n,
  };
}
