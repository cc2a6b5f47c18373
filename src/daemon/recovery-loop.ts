// Crash recovery while a daemon runs: every interval, the roles say what is still open (a Commit
// to re-deliver, a source to ask), and each step runs on its own back-off, so a peer that is gone
// costs a call every 30 s, not two a second. What is open is also what `GET /v1/migrations` lists
// as in doubt, with what recovery is doing about it.

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

export class RecoveryLoop {
  /** Back-off per open migration (by task key): attempts, next try, last error. */
  private readonly retries = new Map<string, RetryState>();
  private timer: Timer | null = null;
  private stopped = false;

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
    const open = new Set(tasks.map((t) => t.key));
    for (const key of this.retries.keys()) if (!open.has(key)) this.retries.delete(key);
    // Steps still backing off are skipped before any promise is made: a flood leaves hundreds open.
    const now = this.deps.clock.monotonicNs();
    const due = tasks.filter((t) => !((this.retries.get(t.key)?.nextNs ?? now) > now));
    await Promise.all(due.map((t) => this.attempt(t)));
  }

  /** Attempts so far and the last error of the step under `key` (none while it has not failed). */
  retryOf(key: string): { attempts: number; lastError: string } | undefined {
    return this.retries.get(key);
  }

  private async attempt(t: RecoveryTask): Promise<void> {
    const st = this.retries.get(t.key);
    try {
      await t.run();
      this.retries.delete(t.key);
    } catch (e) {
      const attempts = (st?.attempts ?? 0) + 1;
      const err = isTscmigError(e) ? e : new TscmigError("internal", e instanceof Error ? e.message : String(e));
      this.retries.set(t.key, { attempts, nextNs: this.deps.clock.monotonicNs() + recoveryBackoffNs(attempts), lastError: `${err.code}: ${err.message}` });
      // A peer that is down is expected: debug at first, a warning once it keeps failing.
      const expected = err.code === "unavailable" || err.code === "deadline_exceeded";
      this.deps.log[expected && attempts < 5 ? "debug" : "warn"](
        { event: "recovery_step_failed", step: t.step, migrationId: t.migrationId, vmId: t.vmId, attempts, err: err.toJSON() },
        "recovery step failed; retrying after a back-off",
      );
    }
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
  for (const m of o.journal.listMigrations()) {
    const undelivered = m.role === "source" && m.decision === "committed" && m.phase !== "committed";
    if (m.decision !== "pending" && !undelivered) continue;
    const retry = o.loop.retryOf(m.role === "source" ? sourceRecoveryKey(m.migrationId) : destinationRecoveryKey(m.source ?? "", m.migrationId));
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
