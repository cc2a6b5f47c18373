// A transport of the peer protocol with no network at all: a call reaches the peer's protocol core
// (peer-protocol.ts) after a fixed simulated delay and its answer comes back after another, unary
// calls and Handover exchanges alike. For the bench's protocol-only simulator figure and for scene
// tests that want the real bytes-to-bytes path without the chaos network's faults. A test may drop
// chosen messages (`intercept`): the caller then waits out its deadline, as over a lost packet.

import { TscmigError } from "../errors.js";
import type { PeerDialer, PeerHandler } from "../migration/messages.js";
import { sleep, type Scheduler } from "../time/clock.js";
import { decodeHandoverStep } from "./codec.js";
import { type ByteExchange, type HandoverSession, type PeerMethod, PeerServer, peerClient } from "./peer-protocol.js";

/** A message about to be delivered: its unary method, or for a Handover message its step (Open, Probe, Transfer, Commit). */
export type Intercept = (from: string, to: string, method: string) => "deliver" | "drop";

export interface DirectOptions {
  /** One-way delays; the forward one may depend on the message (its `intercept` name). */
  outNs: bigint | ((method: string) => bigint);
  backNs: bigint;
  /** Whether peers offer the Handover exchange (default true). */
  exchange?: boolean;
  /** How long a dropped message's caller waits before failing with `deadline_exceeded`. */
  deadlineNs?: bigint;
  /** Times the Transfer's encoding (default: no clock, 0). */
  monotonicNs?: () => bigint;
}

interface Peer {
  server: PeerServer;
  rawNs: () => bigint;
}

export class DirectNetwork {
  private readonly peers = new Map<string, Peer>();
  /** Sees every message before delivery (default: deliver all). */
  intercept: Intercept = () => "deliver";

  constructor(
    private readonly sched: Scheduler,
    private readonly o: DirectOptions,
  ) {}

  /** Serves `handler` at `address`; `rawNs` is the serving daemon's raw clock (it dates arrivals). */
  attach(address: string, handler: PeerHandler, rawNs: () => bigint): void {
    this.peers.set(address, { server: new PeerServer(handler, rawNs), rawNs });
  }

  detach(address: string): void {
    this.peers.delete(address);
  }

  /** The dialer of daemon `from`; any name is an address here. */
  dialer(from = "?"): PeerDialer {
    return {
      checkAddress: () => {},
      dial: (to) =>
        peerClient(
          {
            call: (method, bytes) => this.deliver(from, to, method, bytes, (p) => p.server.call(method, bytes, p.rawNs())),
            ...(this.o.exchange === false ? {} : { openExchange: () => this.exchange(from, to) }),
          },
          this.o.monotonicNs ?? (() => 0n),
        ),
    };
  }

  private async deliver(from: string, to: string, method: string, bytes: Uint8Array, serve: (p: Peer) => Uint8Array): Promise<Uint8Array> {
    await sleep(this.sched, typeof this.o.outNs === "function" ? this.o.outNs(method) : this.o.outNs);
    if (this.intercept(from, to, method) === "drop") {
      await sleep(this.sched, this.o.deadlineNs ?? 5_000_000_000n);
      throw new TscmigError("deadline_exceeded", `${method} to ${to}: lost`);
    }
    const p = this.peers.get(to);
    if (!p) throw new TscmigError("unavailable", `${method} to ${to}: no daemon there`);
    const answer = serve(p);
    await sleep(this.sched, this.o.backNs);
    return answer;
  }

  private exchange(from: string, to: string): ByteExchange {
    let session: HandoverSession | null = null;
    let failed: TscmigError | null = null;
    let closed = false;
    let chain: Promise<unknown> = Promise.resolve();
    const x: ByteExchange = {
      send: (bytes) => {
        const step = stepName(bytes);
        const next = chain.then(async () => {
          if (failed) throw failed;
          try {
            return await this.deliver(from, to, step, bytes, (p) => (session ??= p.server.handover()).step(bytes, p.rawNs()));
          } catch (e) {
            failed = e instanceof TscmigError ? e : new TscmigError("internal", String(e));
            throw failed;
          }
        });
        chain = next.catch(() => {});
        return next;
      },
      close: () => {
        closed = true;
      },
      get live() {
        return failed === null && !closed;
      },
    };
    return x;
  }
}

/** The unary method a Handover message stands for, as `intercept` sees it. */
function stepName(bytes: Uint8Array): PeerMethod | "Open" | "Handover" {
  try {
    const c = decodeHandoverStep(bytes).case;
    return c === "open" ? "Open" : ((c.charAt(0).toUpperCase() + c.slice(1)) as PeerMethod);
  } catch {
    return "Handover";
  }
}
