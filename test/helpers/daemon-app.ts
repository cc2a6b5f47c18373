// A whole daemon (buildDaemon) in this process for inject() tests of its control API: simulated
// clock and scheduler (its timers run only when a test steps them), a temporary --data, both
// listeners on loopback port 0 (the daemon takes work only once it is whole), requests through
// `http.inject()`.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { buildDaemon, type Daemon, type DaemonDeps } from "../../src/daemon/daemon.js";
import { loadDaemonConfig } from "../../src/daemon/daemon-config.js";
import { createLogger } from "../../src/shared/log.js";
import { SeededRandom } from "../../src/shared/time/random.js";
import { SimClock, SimScheduler } from "../../src/shared/time/sim.js";
import { EPOCH_NS } from "./sim-migration.js";

export interface AppDaemon {
  daemon: Daemon;
  sched: SimScheduler;
  data: string;
  close(): Promise<void>;
}

export async function startAppDaemon(
  o: { name?: string; flags?: Record<string, string>; wrapJournal?: DaemonDeps["wrapJournal"]; backend?: DaemonDeps["backend"] } = {},
): Promise<AppDaemon> {
  const root = mkdtempSync(join(tmpdir(), "tscmig-app-"));
  const data = join(root, "data");
  const config = loadDaemonConfig({ flags: { name: o.name ?? "app", http: "127.0.0.1:0", grpc: "127.0.0.1:0", data, ...o.flags }, env: {} });
  const clock = new SimClock(0n, EPOCH_NS);
  const sched = new SimScheduler(clock);
  const log = createLogger({ level: "fatal", name: "app", destination: new Writable({ write: (_c, _e, done) => done() }) });
  const daemon = await buildDaemon({
    clock,
    scheduler: sched,
    random: new SeededRandom(11n),
    log,
    config,
    trueEpochNs: EPOCH_NS,
    ...(o.wrapJournal ? { wrapJournal: o.wrapJournal } : {}),
    ...(o.backend ? { backend: o.backend } : {}),
  });
  await daemon.listen();
  return {
    daemon,
    sched,
    data,
    close: async () => {
      await daemon.close(0);
      rmSync(root, { recursive: true, force: true });
    },
  };
}
