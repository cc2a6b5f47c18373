// A peer's address as "HOST:PORT": the daemons' configuration, the control API and the migration
// roles all parse it the same way.

import { isIPv4, isIPv6 } from "node:net";
import { TscmigError } from "./errors.js";

export interface HostPort {
  /** Host name, IPv4 address, or IPv6 address without brackets. */
  host: string;
  port: number;
}

function expected(what: string): TscmigError {
  return new TscmigError("invalid_argument", `expected ${what}`);
}

/** "HOST:PORT", with an IPv6 host in brackets ("[::1]:7070"); port 0..65535 (0: any free port). */
export function parseHostPort(raw: string): HostPort {
  const what = "HOST:PORT (an IPv6 host in brackets, port 0..65535)";
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):([0-9]{1,5})$/.exec(raw);
  if (!m) throw expected(what);
  const [, v6, name, portText] = m;
  const port = Number(portText);
  if (port > 65_535) throw expected(what);
  if (v6 !== undefined) {
    if (!isIPv6(v6)) throw expected(`${what}; ${v6} is not an IPv6 address`);
    return { host: v6, port };
  }
  const host = name as string;
  if (!isIPv4(host) && !/^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$/.test(host))
    throw expected(`${what}; ${host} is not a host name or IPv4 address`);
  return { host, port };
}

/** The inverse of parseHostPort, as gRPC targets and URLs want it. */
export function formatHostPort({ host, port }: HostPort): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}
