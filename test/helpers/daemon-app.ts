// Whole daemons (buildDaemon) in this process for inject() tests of their control API, on
// simulated clocks and schedulers (timers run only when a test steps them):
// - startAppDaemon: one daemon with a temporary --data (SQLite) and both listeners on loopback port 0;
// - InProcessDaemons: daemons with no port at all, journals in memory, peers wired in process.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { buildDaemon, type Daemon, type DaemonDeps } from "../../src/daemon/daemon.js";
import { loadDaemonConfig } from "../../src/daemon/daemon-config.js";
import type { InjectOptions, LightMyRequestResponse } from "fastify";
import { createLogger, type PinoLogger } from "../../src/shared/log.js";
import { MemoryJournal } from "../../src/shared/migration/journal.js";
import { DirectNetwork } from "../../src/shared/rpc/direct-transport.js";
import { SeededRandom } from "../../src/shared/time/random.js";
import { flushMicrotasks, SimClock, SimScheduler } from "../../src/shared/time/sim.js";
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

/**
 * Whole daemons (buildDaemon) in this process with no port at all: one simulated clock and
 * scheduler, a MemoryJournal each (kept by the test across restarts), peers reached through the
 * peer protocol's in-process transport (rpc/direct-transport.ts) at `<name>.test:7001`, and the
 * control API through `inject()` while simulated time runs until the answer is in.
 */
export class InProcessDaemons {
  readonly clock = new SimClock(0n, EPOCH_NS);
  readonly sched = new SimScheduler(this.clock);
  /** 200 µs out, 300 µs back, no faults unless a test drops a message (`net.intercept`). */
  readonly net: DirectNetwork;
  private readonly open = new Set<Daemon>();

  /** `exchange: false`: peers offer no Handover exchange, so migrations take the unary calls. */
  constructor(o: { exchange?: boolean } = {}) {
    this.net = new DirectNetwork(this.sched, { outNs: 200_000n, backNs: 300_000n, deadlineNs: 5_000_000_000n, ...(o.exchange === false ? { exchange: false } : {}) });
  }

  static address(name: string): string {
    return `${name}.test:7001`;
  }

  /** A daemon named `name` over `journal`; unless `start: false`, recovered and taking work. */
  async daemon(name: string, o: { flags?: Record<string, string>; journal?: MemoryJournal; seed?: bigint; log?: PinoLogger; start?: boolean } = {}): Promise<Daemon> {
    const address = InProcessDaemons.address(name);
    const config = loadDaemonConfig({
      flags: { name, http: "127.0.0.1:0", grpc: "127.0.0.1:0", advertise: address, data: join(tmpdir(), "tscmig-in-process-unused", name), ...o.flags },
      env: {},
    });
    const daemon = await buildDaemon({
      clock: this.clock,
      scheduler: this.sched,
      random: new SeededRandom(o.seed ?? 11n),
      log: o.log ?? SILENT_LOG,
      config,
      trueEpochNs: EPOCH_NS,
      journal: o.journal ?? new MemoryJournal(),
      dialer: this.net.dialer(address),
    });
    this.open.add(daemon);
    if (o.start !== false) await daemon.start();
    this.net.attach(address, daemon.node.peer, () => daemon.node.host.rawNs());
    return daemon;
  }

  /** `d`'s answer to a request; simulated time runs (every timer due) until it is in. */
  async inject(d: Daemon, req: InjectOptions): Promise<LightMyRequestResponse> {
    return this.settle(d.http.inject(req));
  }

  /**
   * Sends a request and lets `d` take it up (up to its first wait on simulated time) without
   * moving time; `answer` settles once a test runs time on (`settle`).
   */
  async send(d: Daemon, req: InjectOptions): Promise<{ answer: Promise<LightMyRequestResponse> }> {
    const answer = d.http.inject(req);
    answer.catch(() => {}); // the test awaits it later
    for (let k = 0; k < QUIET_TURNS; k++) await flushMicrotasks();
    return { answer };
  }

  /** Runs simulated time, event by event, until `p` settles. */
  async settle<T>(p: Promise<T>): Promise<T> {
    let done = false;
    void p.then(
      () => (done = true),
      () => (done = true),
    );
    for (let n = 0; n < 1_000_000 && !done; n++) {
      for (let k = 0; k < QUIET_TURNS; k++) await flushMicrotasks();
      if (done || !this.sched.step()) break;
    }
    await flushMicrotasks();
    if (!done) throw new Error("simulated time ran dry before the answer came");
    return p;
  }

  /** Moves simulated time on by `ns`, running every timer due. */
  async advance(ns: bigint): Promise<void> {
    this.sched.runUntil(this.clock.monotonicNs() + ns);
    await flushMicrotasks();
  }

  /** Stops `d` (its process, not its journal): peers no longer reach it. */
  async stop(d: Daemon): Promise<void> {
    this.net.detach(d.node.cfg.grpcAdvertise);
    this.open.delete(d);
    await d.close(0);
  }

  async close(): Promise<void> {
    await Promise.all([...this.open].map((d) => this.stop(d)));
  }
}

/**
 * Event-loop turns fastify takes to route, parse and answer a request with nothing to wait for;
 * simulated time moves only after them, so a request starts at the instant it is sent.
 */
const QUIET_TURNS = 4;

const SILENT_LOG = createLogger({ level: "fatal", name: "in-process", destination: new Writable({ write: (_c, _e, done) => done() }) });
