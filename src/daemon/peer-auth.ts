// How daemons authenticate each other on the data plane (docs/operations.md#security-tls-peer-tokens-the-control-api-token). Any client that reaches a gRPC
// port must not be able to feed, commit or abort migrations, nor migrate in a VM that runs
// elsewhere: peers prove who they are by mutual TLS (the server requires a client certificate from
// the deployment's CA), or, where TLS is off, by a peer token every call carries in its metadata —
// fit only for trusted networks, since it then travels in plaintext. The health and reflection
// services stay open (stock tools and load balancers use them).
//
// With neither configured, only a loopback gRPC address may start (local processes are the only
// peers); anything else refuses to start, saying what to set, unless `--peer-auth none` says the
// network is isolated on purpose.

import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { TscmigError } from "../shared/errors.js";
import type { HandlerContext } from "../shared/rpc/index.js";
import { parseToken } from "./config-parsers.js";

/** Metadata key of the peer token (`authorization: Bearer <token>`, as HTTP has it). */
export const PEER_TOKEN_HEADER = "authorization";

export type PeerAuthMode = "mutual-tls" | "token" | "mutual-tls+token" | "none (loopback)" | "none";

export interface PeerAuth {
  mode: PeerAuthMode;
  /** Sent on every call this daemon makes to a peer. */
  headers: Record<string, string>;
  /** Checks a call this daemon serves; throws `unauthenticated`. Undefined: every caller passes. */
  authorize?: (ctx: HandlerContext) => void;
}

export interface PeerAuthConfig {
  peerAuth: string;
  peerToken?: string | undefined;
  peerTokenFile?: string | undefined;
  tls: boolean;
  grpcHost: string;
}

export function isLoopbackHost(host: string): boolean {
  return host === "localhost" || host === "::1" || host === "[::1]" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** A peer token file larger than this is no token file. */
const PEER_TOKEN_FILE_BYTES_MAX = 64 * 1024;

/** The peer token from the flag or its file (first line), validated like the flag. */
function peerToken(c: PeerAuthConfig): string | undefined {
  if (c.peerToken !== undefined) return c.peerToken;
  if (c.peerTokenFile === undefined) return undefined;
  let text: string;
  try {
    // A regular file (a mounted secret): /dev/zero was read without end and the daemon never started.
    const st = statSync(c.peerTokenFile);
    if (!st.isFile()) throw new TscmigError("invalid_argument", `peer token file ${c.peerTokenFile}: not a regular file`, { field: "peerTokenFile" });
    if (st.size > PEER_TOKEN_FILE_BYTES_MAX)
      throw new TscmigError("invalid_argument", `peer token file ${c.peerTokenFile}: ${st.size} bytes, more than a token file holds (${PEER_TOKEN_FILE_BYTES_MAX})`, { field: "peerTokenFile" });
    text = readFileSync(c.peerTokenFile, "utf8");
  } catch (e) {
    if (e instanceof TscmigError) throw e;
    throw new TscmigError("invalid_argument", `peer token file ${c.peerTokenFile}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { field: "peerTokenFile" });
  }
  const line = text.split(/\r?\n/, 1)[0]?.trim() ?? "";
  try {
    return parseToken(line);
  } catch (e) {
    throw new TscmigError("invalid_argument", `peer token file ${c.peerTokenFile}: ${e instanceof Error ? e.message : String(e)}`, { field: "peerTokenFile" });
  }
}

/** Decides the data plane's authentication at start; refuses an open data plane off loopback. */
export function resolvePeerAuth(c: PeerAuthConfig): PeerAuth {
  const token = peerToken(c);
  if (token !== undefined) {
    const want = createHash("sha256").update(`Bearer ${token}`).digest();
    const authorize = (ctx: HandlerContext) => {
      const got = ctx.metadata.get(PEER_TOKEN_HEADER)[0];
      const digest = createHash("sha256").update(typeof got === "string" ? got : "").digest();
      if (!timingSafeEqual(digest, want))
        throw new TscmigError("unauthenticated", `${ctx.path}: this daemon accepts only peers that present its peer token`, { reason: "peer_unauthenticated" });
    };
    return { mode: c.tls ? "mutual-tls+token" : "token", headers: { [PEER_TOKEN_HEADER]: `Bearer ${token}` }, authorize };
  }
  if (c.tls) return { mode: "mutual-tls", headers: {} };
  if (c.peerAuth === "none") return { mode: "none", headers: {} };
  if (isLoopbackHost(c.grpcHost)) return { mode: "none (loopback)", headers: {} };
  throw new TscmigError(
    "failed_precondition",
    `the migration service on ${c.grpcHost} would accept any client: give peers a way to authenticate (--tls-cert/--tls-key/--tls-ca for mutual TLS, or --peer-token / --peer-token-file on a trusted network), or say --peer-auth none for an isolated test network`,
    { field: "peerAuth", reason: "peer_auth_required" },
  );
}
