// The `hostile` fault kind: one actor on the simulated network that is not a daemon ("x0"). It sees
// what goes by (the network's tap: migration ids, VM ids, generations, snapshots — none of them
// secret) but holds no per-migration secret, and it attacks in two guises:
//
//   outsider     no credentials: every call must die at the transport (`unauthenticated`), and it
//                tries the worst there is — migrating in an old snapshot of a VM that runs elsewhere
//   compromised  a peer's credentials (a stolen token, a confused peer): foreign Abort and Commit
//                for migrations it saw, a Transfer of an old snapshot racing the real one, replays
//                of old messages, and a flood of Prepares at one daemon (256+ in-flight slots)
//
// What today's daemons do about it shows in the checker: a VM lost to a foreign Abort (I7), run
// twice after a foreign Commit (I6), run from an old snapshot (I1/I2), and destinations that refuse
// every migration after a flood (the liveness check after healing, run by the harness).

import type { Snapshot } from "../../shared/migration/snapshot.js";
import type { PeerClient, PeerDialer, PrepareReq } from "../../shared/migration/messages.js";
import type { Scheduler } from "../../shared/time/clock.js";
import type { Random } from "../../shared/time/random.js";
import { type Fence, PEER_CREDENTIAL, type SimNetwork, type Tapped } from "./network.js";
import type { HostilePlan } from "./scenario.js";

export const HOSTILE_ADDRESS = "x0";
const MS = 1_000_000n;
/** Old messages kept for replay. */
const RECORDED_MAX = 64;

export interface HostileContext {
  plan: HostilePlan;
  net: SimNetwork;
  sched: Scheduler;
  rand: Random;
  /** Records what it did in the history (site `hostile.*`). */
  fault: (site: string, detail: string) => void;
  /** Where each VM runs now (metadata any peer can learn) and at which generation. */
  owners: () => { vmId: string; daemon: string; generation: bigint }[];
  daemons: readonly string[];
  /** A guest TSC kHz `daemon` accepts (for flood Prepares that pass its capability check). */
  tscKhzOf: (daemon: string) => bigint;
}

/** Two hex digits per byte value: a forged key per flood Prepare, hundreds a flood. */
const HEX_BYTE = Array.from({ length: 256 }, (_v, b) => b.toString(16).padStart(2, "0"));

/** `u.toString(16).padStart(8, "0")` for an unsigned 32-bit `u`, from the table. */
export function hex32(u: number): string {
  return (HEX_BYTE[u >>> 24] as string) + (HEX_BYTE[(u >>> 16) & 0xff] as string) + (HEX_BYTE[(u >>> 8) & 0xff] as string) + (HEX_BYTE[u & 0xff] as string);
}

export class HostileActor {
  /** Down once faults stop: it sends nothing more and hears nothing back. */
  readonly fence: Fence = { alive: true };
  private readonly trusted: PeerDialer;
  private readonly outsider: PeerDialer;
  private readonly snapshots = new Map<string, Snapshot>();
  private readonly recorded: Tapped[] = [];
  private calls = 0;

  constructor(private readonly ctx: HostileContext) {
    this.trusted = ctx.net.dialer(HOSTILE_ADDRESS, this.fence, PEER_CREDENTIAL);
    this.outsider = ctx.net.dialer(HOSTILE_ADDRESS, this.fence, null);
    ctx.net.tap = { wants: (from) => from !== HOSTILE_ADDRESS && this.fence.alive, see: (m) => this.observe(m) };
  }

  stop(): void {
    this.fence.alive = false;
    this.ctx.net.tap = null;
  }

  /** A client to `to`, as an outsider with the plan's chance, else with a peer's credentials. */
  private client(to: string, outsider = this.ctx.rand.chance(this.ctx.plan.unauthenticatedP)): { c: PeerClient; who: string } {
    return outsider ? { c: this.outsider.dial(to), who: "without credentials" } : { c: this.trusted.dial(to), who: "with a peer's credentials" };
  }

  /**
   * Who the actor claims to be about another source's migration: that source's name (it shows on the
   * wire) and a key of its own making — the per-migration secret never leaves the source.
   */
  private forged(sourceName: string): { sourceName: string; sourceKey: string } {
    let sourceKey = "";
    for (let i = 0; i < 4; i++) sourceKey += hex32(this.ctx.rand.u32());
    return { sourceName, sourceKey };
  }

  private later(maxNs: bigint, fn: () => void): void {
    this.ctx.sched.after(this.ctx.rand.bigint(0n, maxNs), () => {
      if (this.fence.alive) fn();
    });
  }

  /** Sends one call and records what it did and what it was told. */
  private send(site: string, detail: string, call: () => Promise<unknown>): void {
    const n = ++this.calls;
    this.ctx.fault(site, `#${n} ${detail}`);
    call().then(
      () => this.ctx.fault("hostile.answer", `#${n} accepted`),
      (e: unknown) => this.ctx.fault("hostile.answer", `#${n} refused: ${e instanceof Error ? e.message : String(e)}`),
    );
  }

  private observe(m: Tapped): void {
    if (m.from === HOSTILE_ADDRESS || !this.fence.alive) return;
    this.recorded.push(m);
    if (this.recorded.length > RECORDED_MAX) this.recorded.shift();
    const p = this.ctx.plan;
    const r = this.ctx.rand;
    if (m.method === "Prepare" && p.transferP > 0 && r.chance(p.transferP)) this.later(MS, () => this.raceTransfer(m.to, m.req));
    if (m.method !== "Transfer") return;
    const s = m.req.snapshot;
    this.snapshots.set(s.vmId, s);
    const ids = { migrationId: s.migrationId, vmId: s.vmId, generation: s.generation, ...this.forged(m.req.sourceName) };
    if (p.abortP > 0 && r.chance(p.abortP))
      this.later(3n * MS, () => {
        const { c, who } = this.client(m.to);
        this.send("hostile.abort", `foreign Abort of ${s.migrationId} (${s.vmId}@${s.generation}) to ${m.to}, ${who}`, () => c.abort({ ...ids, reason: "hostile" }));
      });
    if (p.commitP > 0 && r.chance(p.commitP))
      this.later(3n * MS, () => {
        const { c, who } = this.client(m.to);
        this.send("hostile.commit", `foreign Commit of ${s.migrationId} (${s.vmId}@${s.generation}) to ${m.to}, ${who}`, () => c.commit({ ...ids, transferRttNs: r.bigint(0n, MS) }));
      });
  }

  /** An old snapshot of the VM, patched to a migration it did not come from. */
  private patched(vmId: string, migrationId: string, generation: bigint): Snapshot | null {
    const old = this.snapshots.get(vmId);
    return old ? { ...structuredClone(old), migrationId, generation } : null;
  }

  /** A Transfer of an old snapshot for a migration just prepared, racing the source's own. */
  private raceTransfer(to: string, req: PrepareReq): void {
    const snap = this.patched(req.vmId, req.migrationId, req.generation);
    if (!snap) return;
    const { c, who } = this.client(to);
    this.send("hostile.transfer", `Transfer of an old snapshot of ${req.vmId} into ${req.migrationId} at ${to}, ${who}`, () =>
      c.transfer({ snapshot: snap, sourceAnchorsToSendNs: [], ...this.forged(req.sourceName) }),
    );
  }

  /** Re-sends one recorded message to where it went. */
  replay(): void {
    if (this.recorded.length === 0) return;
    const m = this.ctx.rand.pick(this.recorded);
    const { c, who } = this.client(m.to);
    const what = `replay of ${m.from}'s ${m.method} to ${m.to}, ${who}`;
    if (m.method === "Prepare") this.send("hostile.replay", what, () => c.prepare(m.req));
    else if (m.method === "Transfer") this.send("hostile.replay", what, () => c.transfer(m.req));
    else if (m.method === "Commit") this.send("hostile.replay", what, () => c.commit(m.req));
    else this.send("hostile.replay", what, () => c.abort(m.req));
  }

  /** Prepare, Transfer and Commit of an old snapshot of a VM that runs elsewhere, onto another daemon (an outsider's attack). */
  migrateIn(k: number): void {
    const known = this.ctx.owners().filter((o) => this.snapshots.has(o.vmId));
    if (known.length === 0) return;
    const o = this.ctx.rand.pick(known);
    const to = this.ctx.rand.pick(this.ctx.daemons.filter((d) => d !== o.daemon));
    const migrationId = `x0-in-${k}`;
    const snap = this.patched(o.vmId, migrationId, o.generation + 1n) as Snapshot;
    const { c, who } = this.client(to, true);
    const prepare: PrepareReq = {
      migrationId,
      vmId: o.vmId,
      generation: snap.generation,
      vcpuCount: snap.vcpuCount,
      guestTscKhz: snap.guestTscKhz,
      sourceFracBits: snap.fracBits,
      policy: "advance",
      estimator: "one-sided",
      doorbell: false,
      advanceCapNs: 0n,
      ...this.forged(HOSTILE_ADDRESS),
      sourceGrpc: HOSTILE_ADDRESS,
    };
    const ref = { sourceName: prepare.sourceName, sourceKey: prepare.sourceKey };
    this.send("hostile.migrate-in", `migrate ${o.vmId}@${snap.generation} (running on ${o.daemon}) into ${to} from an old snapshot, ${who}`, async () => {
      await c.prepare(prepare);
      await c.transfer({ snapshot: snap, sourceAnchorsToSendNs: [], ...ref });
      return c.commit({ migrationId, vmId: o.vmId, generation: snap.generation, transferRttNs: MS, ...ref });
    });
  }

  /** `count` Prepares at `to` that are never followed up, a few hundred µs apart. */
  flood(to: string, count: number): void {
    this.ctx.fault("hostile.flood", `${count} Prepares at ${to}, never followed up, with a peer's credentials`);
    const khz = this.ctx.tscKhzOf(to);
    let at = 0n;
    for (let k = 0; k < count; k++) {
      at += this.ctx.rand.bigint(0n, 200_000n);
      this.ctx.sched.after(at, () => {
        if (!this.fence.alive) return;
        const req: PrepareReq = {
          migrationId: `x0-flood-${k}`,
          vmId: `x0-flood-vm${k}`,
          generation: 1n,
          vcpuCount: 1,
          guestTscKhz: khz,
          sourceFracBits: 48,
          policy: "advance",
          estimator: "one-sided",
          doorbell: false,
          advanceCapNs: 0n,
          ...this.forged(HOSTILE_ADDRESS),
          sourceGrpc: HOSTILE_ADDRESS,
        };
        this.trusted.dial(to).prepare(req).catch(() => {});
      });
    }
  }
}
