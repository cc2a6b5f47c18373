// Crash recovery while a daemon runs: every interval, the roles say what is still open (a Commit
// to re-deliver, a source to ask), and each step runs on its own back-off, so a peer that is gone
// costs a call every 30 s, not two a second. A peer's steps go out behind one probe: the first finds
// out whether it can be reached, and the others follow only if it could. One that cannot backs off
// as a whole, so a dead source (or a Prepare flood naming one) costs one call per back-off, not one
// per migration it left. What is open is also what `GET /v1/migrations` lists as in doubt, with
// what recovery is doing about it.

import { isTscmigError, TscmigError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import type { JournalStore } from "../shared/migration/journal.js";
import type { RecoveryTask } from "../shared/migration/vm-registry.js";
import type { Clock, Scheduler, Timer } from "../shared/time/clock.js";
import { destinationRecoveryKey } from "../destination/destination.js";
import { sourceRecoveryKey } from "../source/source.js";

/** Recovery back-off: 0.5 s doubling per failed attempt, at most 30 s. */
export function recoveryBackoffNs(attempts: number): bigint {
  const ms = Math.min(30_000, 500 * 2 ** Math.min(attempts, 6));
  return BigInt(ms) * 1_000_000n;
}

interface RetryState {
  attempts: number;
  nextNs: bigint;
  lastError: string;
  /** The last pass that found this step still open. */
  pass: number;
}

export interface RecoveryLoopDeps {
  clock: Clock;
  scheduler: Scheduler;
  log: Logger;
  intervalNs: bigint;
  /** Runs first in every pass (expiring prepared leases). */
  beforePass: () => void;
  /** The steps still open now, from every role. */
  tasks: () => RecoveryTask[];
}

/** A transport failure: the peer was not reached (or did not answer), so its other steps would fail alike. */
function unreachable(e: TscmigError): boolean {
  return e.code === "unavailable" || e.code === "deadline_exceeded";
}

export class RecoveryLoop {
  /** Back-off per open migration (by task key): attempts, next try, last error. */
  private readonly retries = new Map<string, RetryState>();
  /** Back-off per unreachable peer (by address); `probing` while one step is trying it. */
  private readonly peers = new Map<string, RetryState & { probing: boolean }>();
  private timer: Timer | null = null;
  private stopped = false;
  private passes = 0;

  constructor(private readonly deps: RecoveryLoopDeps) {}

  start(): void {
    if (this.stopped) return;
    this.timer = this.deps.scheduler.after(this.deps.intervalNs, () => {
      void this.runOnce().finally(() => this.start());
    });
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
  }

  /** One pass over every open step whose back-off allows it. */
  async runOnce(): Promise<void> {
    this.deps.beforePass();
    const tasks = this.deps.tasks();
    // Steps still backing off are skipped before any promise is made: a flood leaves hundreds open.
    // One lookup per task marks its back-off as still open; the ones not marked are forgotten.
    const pass = ++this.passes;
    const now = this.deps.clock.monotonicNs();
    const local: RecoveryTask[] = [];
    const byPeer = new Map<string, RecoveryTask[]>();
    for (const t of tasks) {
      const r = this.retries.get(t.key);
      if (r !== undefined) r.pass = pass;
      const p = t.peer === undefined ? undefined : this.peers.get(t.peer);
      if (p !== undefined) p.pass = pass;
      if (r !== undefined && r.nextNs > now) continue;
      if (t.peer === undefined) {
        local.push(t);
        continue;
      }
      if (p !== undefined && (p.probing || p.nextNs > now)) continue;
      const due = byPeer.get(t.peer);
      if (due === undefined) byPeer.set(t.peer, [t]);
      else due.push(t);
    }
    for (const [key, r] of this.retries) if (r.pass !== pass) this.retries.delete(key);
    for (const [peer, p] of this.peers) if (p.pass !== pass && !p.probing) this.peers.delete(peer);
    await Promise.all([...local.map((t) => this.attempt(t)), ...[...byPeer].map(([peer, due]) => this.probeThen(peer, due))]);
  }

  /**
   * The first step finds out whether `peer` can be reached; the others follow at once if it could,
   * and wait for its back-off if not. A dead peer costs one call per pass, not one per step it has
   * (a Prepare flood naming a dead source leaves hundreds), even the first time it is found dead.
   */
  private async probeThen(peer: string, due: readonly RecoveryTask[]): Promise<void> {
    const p = this.peers.get(peer);
    if (p !== undefined) p.probing = true;
    await this.attempt(due[0] as RecoveryTask);
    if (this.peers.has(peer)) return; // unreachable: it backs off as a whole
    await Promise.all(due.slice(1).map((t) => this.attempt(t)));
  }

  /** Attempts so far, the next try and the last error of the step under `key` (none while it has not failed). */
  retryOf(key: string): { attempts: number; nextNs: bigint; lastError: string } | undefined {
    const r = this.retries.get(key);
    return r && { attempts: r.attempts, nextNs: r.nextNs, lastError: r.lastError };
  }

  /** The back-off of the peer at `address` while it cannot be reached (undefined once it answers). */
  peerRetryOf(address: string): { attempts: number; nextNs: bigint; lastError: string } | undefined {
    const p = this.peers.get(address);
    return p && { attempts: p.attempts, nextNs: p.nextNs, lastError: p.lastError };
  }

  private async attempt(t: RecoveryTask): Promise<void> {
    const st = this.retries.get(t.key);
    try {
      await t.run();
      this.retries.delete(t.key);
      if (t.peer !== undefined) this.peers.delete(t.peer);
    } catch (e) {
      const attempts = (st?.attempts ?? 0) + 1;
      const err = isTscmigError(e) ? e : new TscmigError("internal", e instanceof Error ? e.message : String(e));
      const now = this.deps.clock.monotonicNs();
      const lastError = `${err.code}: ${err.message}`;
      this.retries.set(t.key, { attempts, nextNs: now + recoveryBackoffNs(attempts), lastError, pass: this.passes });
      if (t.peer !== undefined) this.peerFailed(t.peer, unreachable(err), now, lastError);
      // A peer that is down is expected: debug at first, a warning once it keeps failing.
      this.deps.log[unreachable(err) && attempts < 5 ? "debug" : "warn"](
        { event: "recovery_step_failed", step: t.step, migrationId: t.migrationId, vmId: t.vmId, attempts, err: err.toJSON() },
        "recovery step failed; retrying after a back-off",
      );
    }
  }

  /** After a failed step: an unreachable peer backs off as a whole (once per probe, not per step); one that answered is up. */
  private peerFailed(peer: string, down: boolean, now: bigint, lastError: string): void {
    const p = this.peers.get(peer);
    if (!down) {
      this.peers.delete(peer);
      return;
    }
    if (p !== undefined && !p.probing && p.nextNs > now) return; // a sibling step of this pass already counted it
    const attempts = (p?.attempts ?? 0) + 1;
    this.peers.set(peer, { attempts, nextNs: now + recoveryBackoffNs(attempts), lastError, pass: this.passes, probing: false });
  }
}

/** An undecided or undelivered migration, as `GET /v1/migrations` lists it (`inDoubt`). */
export interface InDoubtMigration {
  migrationId: string;
  role: "source" | "destination";
  /** The source's name (inbound) or this daemon's (outbound). */
  source: string;
  vmId: string;
  generation: bigint;
  phase: string;
  decision: string;
  peer: string;
  /** What recovery is doing about it. */
  state: string;
  attempts: number;
  lastError: string;
}

/** Migrations not settled yet, from the journal (so they show after a restart), newest last. */
export function inDoubtMigrations(
  o: { journal: JournalStore; selfName: string; loop: RecoveryLoop; inFlight: (migrationId: string) => boolean },
  limit = 1000,
): InDoubtMigration[] {
  const out: InDoubtMigration[] = [];
  for (const m of o.journal.listMigrations({ unsettled: true })) {
    const undelivered = m.decision !== "pending";
    const retry = o.loop.retryOf(m.role === "source" ? sourceRecoveryKey(m.migrationId) : destinationRecoveryKey(m.source ?? "", m.migrationId)) ?? o.loop.peerRetryOf(m.peer);
    out.push({
      migrationId: m.migrationId,
      role: m.role,
      source: m.role === "source" ? o.selfName : (m.source ?? ""),
      vmId: m.vmId,
      generation: m.generation,
      phase: m.phase,
      decision: m.decision,
      peer: m.peer,
      state: inDoubtState(m.role, m.phase, undelivered, o.inFlight(m.migrationId)),
      attempts: retry?.attempts ?? 0,
      lastError: retry?.lastError ?? "",
    });
  }
  return out.slice(-limit);
}

function inDoubtState(role: "source" | "destination", phase: string, undelivered: boolean, inFlight: boolean): string {
  if (role === "source" && phase === "handing-off" && !inFlight) return "handed off on receipt; asking the destination what became of the Transfer (Resolve)";
  if (role === "source") return undelivered ? "decided to commit; delivering the Commit" : inFlight ? "in flight" : "undecided";
  return phase === "staged" ? "staged; waiting for the source's decision (Commit or Resolve)" : "prepared; waiting for the Transfer (lease)";
}
