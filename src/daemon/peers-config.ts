// The `--peers` value: daemons this one should offer as migration destinations on its dashboard
// (it also learns peers from the migrations it makes and receives). Each entry is
// `[NAME=]GRPC_HOST:PORT[@HTTP_HOST:PORT]`, entries separated by commas; the optional HTTP address
// is the peer's control API, so the dashboard can link to the peer's own page.

import { TscmigError } from "../shared/errors.js";
import { formatHostPort, parseHostPort } from "./config-parsers.js";

export interface ConfiguredPeer {
  name: string;
  grpc: string;
  http?: string;
}

/** At most this many configured peers: the list is for people to pick from. */
export const PEERS_CONFIGURED_MAX = 64;

export function parsePeers(raw: string): readonly ConfiguredPeer[] {
  const entries = raw.split(",").map((e) => e.trim()).filter((e) => e.length > 0);
  if (entries.length > PEERS_CONFIGURED_MAX) throw new TscmigError("invalid_argument", `expected at most ${PEERS_CONFIGURED_MAX} peers`);
  const seen = new Set<string>();
  return entries.map((entry) => {
    const m = /^(?:([A-Za-z0-9][A-Za-z0-9._-]{0,63})=)?([^@=\s]+)(?:@([^@=\s]+))?$/.exec(entry);
    if (!m) throw new TscmigError("invalid_argument", `expected [NAME=]GRPC_HOST:PORT[@HTTP_HOST:PORT], got ${JSON.stringify(entry.slice(0, 80))}`);
    const grpc = formatHostPort(parseHostPort(m[2] as string));
    if (seen.has(grpc)) throw new TscmigError("invalid_argument", `peer ${grpc} given twice`);
    seen.add(grpc);
    const http = m[3] !== undefined ? `http://${formatHostPort(parseHostPort(m[3]))}` : undefined;
    return { name: m[1] ?? grpc, grpc, ...(http !== undefined ? { http } : {}) };
  });
}
