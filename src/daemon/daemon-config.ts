// The configuration of one daemon (each of the two roles runs the same daemon). Everything a
// deployment varies is here, as a flag and a `TSCMIG_*` variable, so the same binary runs locally,
// in compose and as a Kubernetes DaemonSet with state under `--data` (docs/architecture.md#seams).

import { join } from "node:path";
import { TscmigError } from "../shared/errors.js";
import { LIMITS } from "../shared/limits.js";
import { LOG_LEVELS } from "../shared/log.js";
import { PARENT_PID_ENV, TRUE_EPOCH_ENV } from "../shared/platform/index.js";
import type { FaultSite } from "../shared/faults.js";
import { type Config, type ConfigInput, defineConfig, loadConfig, optional } from "./config.js";
import {
  parseBigInt,
  parseBool,
  parseDurationNs,
  parseEnum,
  parseHostPort,
  parseName,
  parsePath,
  parsePpm,
  parseToken,
} from "./config-parsers.js";
import { parseFaultSites } from "./live-faults.js";
import { type ConfiguredPeer, parsePeers } from "./peers-config.js";

const offsetRange = { min: -LIMITS.offsetNsMax, max: LIMITS.offsetNsMax };

export const DAEMON_CONFIG = defineConfig({
  name: { env: "TSCMIG_NAME", flag: "name", parse: parseName, default: "tscmig", doc: "Daemon name: logs, metrics and the default data directory." },
  http: {
    env: "TSCMIG_HTTP",
    flag: "http",
    parse: parseHostPort,
    default: { host: "127.0.0.1", port: 7070 },
    defaultDoc: "127.0.0.1:7070",
    doc: "Control API address, HOST:PORT (port 0: any free port).",
  },
  grpc: {
    env: "TSCMIG_GRPC",
    flag: "grpc",
    parse: parseHostPort,
    default: { host: "127.0.0.1", port: 7071 },
    defaultDoc: "127.0.0.1:7071",
    doc: "Migration service address (gRPC), HOST:PORT.",
  },
  advertise: {
    env: "TSCMIG_ADVERTISE",
    flag: "advertise",
    parse: optional(parseHostPort),
    default: undefined,
    defaultDoc: "the --grpc address",
    doc: "gRPC HOST:PORT peers use to reach this daemon (set it when --grpc binds 0.0.0.0, e.g. source:7071).",
  },
  data: {
    env: "TSCMIG_DATA",
    flag: "data",
    parse: optional(parsePath),
    default: undefined,
    defaultDoc: "$XDG_STATE_HOME/tscmig/<name>, else ~/.local/state/tscmig/<name>",
    doc: "State directory: the journal lives here.",
  },
  skewOffsetNs: {
    env: "TSCMIG_SKEW_OFFSET_NS",
    flag: "skew-offset-ns",
    parse: (raw: string) => parseDurationNs(raw, offsetRange),
    default: 0n,
    doc: `Offset of this host's realtime from true time at start, e.g. -250ms (|offset| ≤ ${LIMITS.offsetNsMax} ns).`,
  },
  skewDriftPpm: {
    env: "TSCMIG_SKEW_DRIFT_PPM",
    flag: "skew-drift-ppm",
    parse: (raw: string) => parsePpm(raw),
    default: 0,
    doc: `Drift of this host's realtime, ppm (±${LIMITS.driftPpmMax}).`,
  },
  tscKhz: {
    env: "TSCMIG_TSC_KHZ",
    flag: "tsc-khz",
    parse: (raw: string) => parseBigInt(raw, { min: LIMITS.tscKhzMin, max: LIMITS.tscKhzMax }),
    default: 2_000_000n,
    doc: "Host TSC frequency, kHz.",
  },
  tscDriftPpm: {
    env: "TSCMIG_TSC_DRIFT_PPM",
    flag: "tsc-drift-ppm",
    parse: (raw: string) => parsePpm(raw),
    default: 0,
    doc: `Drift of the host TSC crystal from its nominal frequency, ppm (±${LIMITS.driftPpmMax}).`,
  },
  backend: {
    env: "TSCMIG_BACKEND",
    flag: "backend",
    parse: parseEnum(["emulated", "kvm"]),
    default: "emulated",
    doc: "Hypervisor backend: emulated (VMs modelled in the daemon) or kvm (real KVM VMs on /dev/kvm running the project's own guest; root, Linux). With kvm the host's TSC, rate and vendor are the machine's, not --tsc-khz and --vendor.",
  },
  kvmDevice: { env: "TSCMIG_KVM_DEVICE", flag: "kvm-device", parse: parsePath, default: "/dev/kvm", doc: "The KVM device the kvm backend opens." },
  vendor: {
    env: "TSCMIG_VENDOR",
    flag: "vendor",
    parse: parseEnum(["vmx", "svm"]),
    default: "vmx",
    doc: "CPU vendor the host emulates: vmx (Intel, 48 fractional bits of TSC ratio) or svm (AMD, 32).",
  },
  tscScaling: { env: "TSCMIG_TSC_SCALING", flag: "tsc-scaling", parse: parseBool, default: true, doc: "Whether the host offers TSC scaling." },
  hostMaxerrorNs: {
    env: "TSCMIG_HOST_MAXERROR_NS",
    flag: "host-maxerror-ns",
    parse: (raw: string) => parseDurationNs(raw, { min: 0n, max: LIMITS.offsetNsMax }),
    default: 100_000n,
    doc: "Error bound this host claims for its realtime, e.g. 100us.",
  },
  journalSync: {
    env: "TSCMIG_JOURNAL_SYNC",
    flag: "journal-sync",
    parse: parseEnum(["full", "normal"]),
    default: "full",
    doc: "Journal durability: full (fsync every decision; survives power loss) or normal (WAL, fsync at checkpoints; survives a killed process, not a power cut).",
  },
  token: {
    env: "TSCMIG_TOKEN",
    flag: "token",
    parse: optional(parseToken),
    default: undefined,
    secret: true,
    doc: "Bearer token the control API requires (health, readiness, metrics and the OpenAPI document stay open).",
  },
  peerToken: {
    env: "TSCMIG_PEER_TOKEN",
    flag: "peer-token",
    parse: optional(parseToken),
    default: undefined,
    secret: true,
    doc: "Peer token: every gRPC call between daemons carries it and a call without it is refused. Without TLS it travels in plaintext: for trusted networks only; prefer mutual TLS (--tls-*).",
  },
  peerTokenFile: {
    env: "TSCMIG_PEER_TOKEN_FILE",
    flag: "peer-token-file",
    parse: optional(parsePath),
    default: undefined,
    doc: "File holding the peer token (its first line), e.g. a mounted secret; instead of --peer-token.",
  },
  peerAuth: {
    env: "TSCMIG_PEER_AUTH",
    flag: "peer-auth",
    parse: parseEnum(["auto", "none"]),
    default: "auto",
    doc: "How daemons authenticate each other. auto: mutual TLS when --tls-* is given, and the peer token when one is; with neither, only a loopback --grpc address may start (local processes only). none: accept any peer (an isolated test network only).",
  },
  tlsCert: { env: "TSCMIG_TLS_CERT", flag: "tls-cert", parse: optional(parsePath), default: undefined, doc: "Mutual TLS between daemons: this daemon's certificate (PEM)." },
  tlsKey: { env: "TSCMIG_TLS_KEY", flag: "tls-key", parse: optional(parsePath), default: undefined, doc: "Mutual TLS: this daemon's private key (PEM)." },
  tlsCa: { env: "TSCMIG_TLS_CA", flag: "tls-ca", parse: optional(parsePath), default: undefined, doc: "Mutual TLS: the CA that signs peers' certificates (PEM)." },
  peers: {
    env: "TSCMIG_PEERS",
    flag: "peers",
    parse: parsePeers,
    default: [] as readonly ConfiguredPeer[],
    defaultDoc: "none",
    doc: "Daemons the dashboard offers as migration destinations: comma-separated [NAME=]GRPC_HOST:PORT[@HTTP_HOST:PORT] (the HTTP address links to that daemon's dashboard).",
  },
  logLevel: { env: "TSCMIG_LOG_LEVEL", flag: "log-level", parse: parseEnum(LOG_LEVELS), default: "info", doc: `Log level: ${LOG_LEVELS.join(", ")}.` },
  faults: {
    env: "TSCMIG_FAULTS",
    flag: "faults",
    parse: parseFaultSites,
    default: [] as readonly FaultSite[],
    defaultDoc: "none",
    doc: "TEST ONLY, never in production: comma-separated fault sites (src/shared/faults.ts) that fire; a crash site kills this daemon on the spot like kill -9.",
  },
});

export type DaemonConfig = Omit<Config<typeof DAEMON_CONFIG>, "data"> & { data: string };

const TLS_KEYS = ["tlsCert", "tlsKey", "tlsCa"] as const;

/**
 * Loads the daemon's configuration (flags, then `TSCMIG_*`, then defaults) and checks what spans
 * keys: TLS is all three files or none. `input.env` is the environment the daemon's main got from
 * the platform module's `env()`; it also supplies XDG_STATE_HOME and HOME for the data directory.
 */
export function loadDaemonConfig(input: Pick<ConfigInput, "flags" | "env">): DaemonConfig {
  const config = loadConfig(DAEMON_CONFIG, { ...input, reservedEnv: [TRUE_EPOCH_ENV, PARENT_PID_ENV, "TSCMIG_VECTORS_DIR"] });
  const given = TLS_KEYS.filter((k) => config[k] !== undefined);
  if (given.length > 0 && given.length < TLS_KEYS.length) {
    const missing = TLS_KEYS.filter((k) => config[k] === undefined);
    throw new TscmigError("invalid_argument", `mutual TLS needs ${TLS_KEYS.join(", ")}: ${missing.join(", ")} missing (${given.join(", ")} given)`, {
      field: missing[0],
    });
  }
  if (config.peerToken !== undefined && config.peerTokenFile !== undefined)
    throw new TscmigError("invalid_argument", "give the peer token once: --peer-token or --peer-token-file, not both", { field: "peerTokenFile" });
  return { ...config, data: config.data ?? defaultDataDir(config.name, input.env) };
}

/** `$XDG_STATE_HOME/tscmig/<name>`, else `$HOME/.local/state/tscmig/<name>` (XDG Base Directory). */
export function defaultDataDir(name: string, env: Record<string, string | undefined>): string {
  const xdg = env.XDG_STATE_HOME;
  // The XDG spec says a relative XDG_STATE_HOME is invalid and must be ignored.
  if (xdg !== undefined && xdg.startsWith("/")) return join(xdg, "tscmig", name);
  const home = env.HOME;
  if (home !== undefined && home.startsWith("/")) return join(home, ".local", "state", "tscmig", name);
  throw new TscmigError("invalid_argument", "data: no default (neither XDG_STATE_HOME nor HOME is an absolute path); set --data or TSCMIG_DATA", {
    field: "data",
  });
}
