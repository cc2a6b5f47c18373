// Checks that refuse a migration for what it is, before anything is journaled or sent, so that the
// refusal names the real problem: a VM sent to the daemon it runs on, a generation that cannot go
// up any more. Without them the first would surface as "migration id already used" (the source's
// own journal entry, read back by its destination half) and the second as a range error on a
// `generation` field the request does not have.

import { TscmigError } from "../errors.js";
import type { PrepareReq } from "./messages.js";
import { type HostPort, parseHostPort } from "../host-port.js";

const U64_MAX = (1n << 64n) - 1n;

/** The source's checks of `POST /v1/vms/:id/migrate`, before Prepare. */
export function checkMigrationTarget(o: { vmId: string; generation: bigint; destination: string; selfName: string; selfGrpc: string }): void {
  if (o.generation >= U64_MAX)
    throw new TscmigError(
      "failed_precondition",
      `VM ${o.vmId} is at generation ${o.generation}, the largest a u64 holds: each migration takes the next generation, so it cannot migrate again`,
      { reason: "generation_exhausted" },
    );
  if (isSelfAddress(o.destination, o.selfGrpc))
    throw new TscmigError("failed_precondition", `destination ${o.destination} is this daemon (${o.selfName}, gRPC ${o.selfGrpc}): VM ${o.vmId} already runs here`, {
      field: "destination",
      reason: "self_migration",
    });
}

/** The destination's check of a Prepare: one from a daemon of its own name is itself (or a twin). */
export function checkInboundSource(req: PrepareReq, selfName: string): void {
  if (req.sourceName === selfName)
    throw new TscmigError(
      "failed_precondition",
      `Prepare of VM ${req.vmId} comes from a daemon named ${selfName}, this daemon's own name: a VM cannot migrate to the daemon it runs on (or two daemons share that name)`,
      { field: "sourceName", reason: "self_migration" },
    );
}

/**
 * Does `destination` name the endpoint at `self`? The same host and port, or a loopback or
 * unspecified host on both sides with the same port (127.0.0.1:7001 reaches a daemon advertising
 * 0.0.0.0:7001 or localhost:7001). Anything else may be another daemon: the destination's own
 * check (`checkInboundSource`) catches the rest.
 */
export function isSelfAddress(destination: string, self: string): boolean {
  const d = hostPortOf(destination);
  const s = hostPortOf(self);
  if (d === null || s === null || d.port !== s.port) return false;
  const dh = d.host.toLowerCase();
  const sh = s.host.toLowerCase();
  return dh === sh || (isLocal(dh) && isLocal(sh));
}

function hostPortOf(text: string): HostPort | null {
  try {
    return parseHostPort(text);
  } catch {
    return null;
  }
}

function isLocal(host: string): boolean {
  return host === "localhost" || host.startsWith("127.") || host === "::1" || host === "0.0.0.0" || host === "::" || host === "0:0:0:0:0:0:0:1";
}
