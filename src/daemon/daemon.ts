// The composition root of one daemon (STYLE 12): build({clock, scheduler, random, log, config, ...})
// wires the emulated host, the journal, the node, the gRPC data plane and the HTTP control API.
// It listens only when `listen()` is called (or, for a daemon reached only in process, takes work
// on `start()` without any port); `main.ts` alone touches process, signals and ports.
//
// Start order (listen): recover from the journal, bind the control API, bind gRPC last. Until all
// of it succeeded nothing takes work: the gRPC port is not open, the control API refuses every
// route but health (503 `starting`). A step that fails undoes the ones before it (ports closed,
// journal lock released) and throws one typed error that says which port or file and what to do.

import { readFileSync } from "node:fs";
import { TscmigError } from "../shared/errors.js";
import type { Readiness } from "../shared/http/health.js";
import type { FastifyInstance } from "fastify";
import { buildHttpApp } from "../shared/http/app.js";
import { createMetrics, type Metrics } from "../shared/http/metrics.js";
import { RingHistory } from "../shared/history.js";
import type { HypervisorBackend } from "../shared/hypervisor/backend.js";
import type { TruthProbe } from "../shared/hypervisor/truth.js";
import { EmulatedHost } from "../shared/hypervisor/host.js";
import { LIMITS } from "../shared/limits.js";
import { logListening, type PinoLogger } from "../shared/log.js";
import type { Faults } from "../shared/faults.js";
import { createRpcServer, type RpcServer } from "../shared/rpc/index.js";
import type { Clock, Scheduler } from "../shared/time/clock.js";
import type { Random } from "../shared/time/random.js";
import { sum } from "../shared/time/offset-model.js";
import { formatHostPort } from "./config-parsers.js";
import type { DaemonConfig } from "./daemon-config.js";
import { GrpcDialer, migrationService } from "./grpc-peer.js";
import { controlRoutes } from "./http-routes.js";
import { uiRoutes } from "./ui-routes.js";
import { Journal } from "./journal.js";
import { type PeerAuth, resolvePeerAuth } from "./peer-auth.js";
import { defaultNodeConfig, type NodeConfig, TscmigNode } from "./node.js";
import type { JournalStore } from "../shared/migration/journal.js";
import type { PeerDialer } from "../shared/migration/messages.js";

export interface DaemonDeps {
  clock: Clock;
  scheduler: Scheduler;
  random: Random;
  log: PinoLogger;
  config: DaemonConfig;
  /** Wall-clock instant of true time zero, shared by every daemon of a deployment. */
  trueEpochNs: bigint;
  faults?: Faults;
  /** Node tuning beyond the flags (tests, chaos). */
  tune?: (cfg: NodeConfig) => void;
  /** The hypervisor the daemon's VMs run on, over its host (default: emulated VMs). */
  backend?: (host: EmulatedHost) => HypervisorBackend;
  /** Test seam (fault injection at the journal, e.g. a full disk): wraps the journal the node writes through. Never set in production. */
  wrapJournal?: (journal: JournalStore) => JournalStore;
  /** The journal itself, for a daemon that lives in process only (a MemoryJournal). Default: SQLite under `config.data`, locked. */
  journal?: JournalStore;
  /** How the node reaches its peers. Default: gRPC. In process: rpc/direct-transport.ts's dialer, with no port at all. */
  dialer?: PeerDialer;
  version?: string;
}

export interface Daemon {
  node: TscmigNode;
  http: FastifyInstance;
  rpc: RpcServer;
  metrics: Metrics;
  history: RingHistory;
  /** Binds both listeners; returns the addresses actually bound (port 0 resolved). */
  listen(): Promise<{ http: string; grpc: string }>;
  /**
   * Recovers from the journal and takes work without binding a port: for a daemon reached only in
   * process, its control API through `http.inject()` and its peers through `deps.dialer`.
   */
  start(): Promise<void>;
  /** Graceful, bounded: stop taking work, finish in-flight calls for up to `graceMs`, close the journal. */
  close(graceMs?: number): Promise<void>;
}

export async function buildDaemon(deps: DaemonDeps): Promise<Daemon> {
  const c = deps.config;
  const host = new EmulatedHost({
    name: c.name,
    clock: deps.clock,
    epochNs: deps.trueEpochNs,
    tscKhz: c.tscKhz,
    vendor: c.vendor as "vmx" | "svm",
    tscScaling: c.tscScaling,
    crystal: c.tscDriftPpm !== 0 ? { kind: "drift", ppm: c.tscDriftPpm, fromNs: 0n } : { kind: "constant", offsetNs: 0n },
    skew: sum({ kind: "constant", offsetNs: c.skewOffsetNs }, c.skewDriftPpm !== 0 ? { kind: "drift", ppm: c.skewDriftPpm, fromNs: deps.clock.monotonicNs() } : { kind: "constant", offsetNs: 0n }),
    maxerrorNs: c.hostMaxerrorNs,
    jitterSeed: deps.random.fork("jitter").seed,
  });
  const tls = c.tlsCert && c.tlsKey && c.tlsCa
    ? { certPem: readTlsFile(c.tlsCert, "--tls-cert"), keyPem: readTlsFile(c.tlsKey, "--tls-key"), caPem: readTlsFile(c.tlsCa, "--tls-ca") }
    : undefined;
  const peerAuth = resolvePeerAuth({ peerAuth: c.peerAuth, peerToken: c.peerToken, peerTokenFile: c.peerTokenFile, tls: tls !== undefined, grpcHost: c.grpc.host });
  const hypervisor = await openHypervisor(deps, host);
  let journal: JournalStore;
  try {
    journal = deps.journal ?? Journal.open(c.data, { synchronous: c.journalSync as "full" | "normal", owner: c.name });
  } catch (e) {
    await hypervisor?.backend.close?.();
    throw e;
  }
  try {
    return await assemble(deps, host, journal, tls, peerAuth, hypervisor);
  } catch (e) {
    journal.close();
    await hypervisor?.backend.close?.();
    throw e;
  }
}

type Hypervisor = { backend: HypervisorBackend; truth?: TruthProbe };

/** The backend the flags chose (or the one the deps give): `--backend kvm` opens /dev/kvm now, or says why it cannot. */
async function openHypervisor(deps: DaemonDeps, host: EmulatedHost): Promise<Hypervisor | undefined> {
  if (deps.backend) return { backend: deps.backend(host) };
  if (deps.config.backend !== "kvm") return undefined;
  try {
    // Imported here: the emulated daemon never loads the FFI.
    const { KvmBackend, kvmTruth } = await import("../shared/hypervisor/kvm/kvm-backend.js");
    const kvm = await KvmBackend.open({ host, devicePath: deps.config.kvmDevice });
    return { backend: kvm, truth: kvmTruth(kvm) };
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    const reason = e instanceof TscmigError && e.reason !== undefined ? e.reason : "kvm_unavailable";
    throw new TscmigError("failed_precondition", `--backend kvm: cannot use KVM: ${why}`, { field: "backend", reason });
  }
}

type TlsFiles = { certPem: Buffer; keyPem: Buffer; caPem: Buffer };

async function assemble(deps: DaemonDeps, host: EmulatedHost, journal: JournalStore, tls: TlsFiles | undefined, peerAuth: PeerAuth, hypervisor: Hypervisor | undefined): Promise<Daemon> {
  const c = deps.config;
  const log = deps.log;
  const history = new RingHistory(LIMITS.historySamplesMax);
  const grpcDialer = deps.dialer ? null : new GrpcDialer({ clock: deps.clock, headers: peerAuth.headers, ...(tls ? { tls } : {}) });
  const dialer: PeerDialer = deps.dialer ?? (grpcDialer as GrpcDialer);
  const grpcAddress = formatHostPort(c.grpc);
  const nodeCfg = defaultNodeConfig(c.name, c.advertise ? formatHostPort(c.advertise) : grpcAddress);
  nodeCfg.sampleIntervalNs = 100_000_000n;
  nodeCfg.sampleVcpusMax = 64;
  // 10 Hz per VM up to 100 VMs, then spread: sampling's cost (CPU, garbage) would otherwise grow
  // with the VM count, and a thousand VMs would overwrite the history ring within a second.
  nodeCfg.samplesPerSecondMax = 1000;
  deps.tune?.(nodeCfg);
  const node = new TscmigNode(nodeCfg, {
    clock: deps.clock,
    scheduler: deps.scheduler,
    random: deps.random,
    log,
    host,
    journal: deps.wrapJournal ? deps.wrapJournal(journal) : journal,
    dialer,
    history,
    ...(deps.faults ? { faults: deps.faults } : {}),
    ...(hypervisor ? { backend: hypervisor.backend } : {}),
    ...(hypervisor?.truth ? { truth: hypervisor.truth } : {}),
  });
  const metrics = createMetrics();
  const state: { phase: Phase } = { phase: "starting" };
  const http = await controlApi(deps, node, metrics, history, state);
  const rpc = createRpcServer({
    services: [migrationService(node.peer, () => host.rawNs(), peerAuth.authorize)],
    ...(tls ? { tls: { ...tls, requireClientCert: true } } : {}),
    monotonicNs: () => host.rawNs(), // this host's own clock: decode time is part of a destination's hold
    scheduler: deps.scheduler,
    log: (obj, msg) => log.error(obj, msg),
  });
  const parts = { c, log, node, http, rpc, metrics, journal, grpcDialer, peerAuth, grpcAddress, state };
  if (hypervisor) log.info({ event: "hypervisor", backend: hypervisor.backend.name, ...(hypervisor.backend.describe?.() ?? {}) }, "hypervisor backend");
  return { node, http, rpc, metrics, history, ...lifecycle(parts) };
}

type Phase = "starting" | "ready" | "closing";

/** The HTTP control API over `node`: nothing but health while the daemon is `starting`. */
async function controlApi(deps: DaemonDeps, node: TscmigNode, metrics: Metrics, history: RingHistory, state: { phase: Phase }): Promise<FastifyInstance> {
  const c = deps.config;
  const http = await buildHttpApp({
    log: deps.log,
    title: "tscmig control API",
    version: deps.version ?? "0.1.0",
    metrics,
    ready: () => readiness(state.phase, node),
    ...(c.token !== undefined ? { token: c.token } : {}),
  });
  // Nothing but health before the daemon is whole (the journal recovered, both ports bound).
  http.addHook("onRequest", async (req) => {
    if (state.phase === "starting" && req.routeOptions.config.public !== true)
      throw new TscmigError("unavailable", "the daemon is starting: not taking work yet", { reason: "starting" });
  });
  controlRoutes(http, { node, metrics, history });
  uiRoutes(http, { node, history, clock: deps.clock, scheduler: deps.scheduler, log: deps.log, peers: c.peers, streamId: deps.random.fork("events").u32().toString(36), ...(c.token !== undefined ? { token: c.token } : {}) });
  // Gauges are read at scrape time: VMs arrive by migration too, not only through this API.
  http.addHook("onRequest", async (req) => {
    if (req.url === "/metrics") {
      metrics.vms.set(node.listVms().length);
      metrics.vcpus.set(node.vcpuTotal());
    }
  });
  return http;
}

interface Parts {
  c: DaemonConfig;
  log: PinoLogger;
  node: TscmigNode;
  http: FastifyInstance;
  rpc: RpcServer;
  metrics: Metrics;
  journal: JournalStore;
  /** The dialer this daemon made (none when one was given): closed with it. */
  grpcDialer: GrpcDialer | null;
  peerAuth: PeerAuth;
  grpcAddress: string;
  state: { phase: Phase };
}

/** listen, start and close over the assembled parts; a start that fails undoes all of it. */
function lifecycle(p: Parts): Pick<Daemon, "listen" | "start" | "close"> {
  const { c, log, node, http, rpc, metrics } = p;
  const takeWork = () => {
    p.state.phase = "ready";
    metrics.vms.set(node.listVms().length);
    metrics.vcpus.set(node.vcpuTotal());
  };
  const release = async (graceMs: number) => {
    p.state.phase = "closing";
    node.stop();
    await Promise.allSettled([http.close(), rpc.shutdown(graceMs)]);
    p.grpcDialer?.close();
    p.journal.close();
    await node.backend.close?.(); // real VMs: threads stopped, memory unmapped, fds closed
  };
  return {
    async listen() {
      try {
        node.start(); // recovery first: a damaged journal stops here, before any port is open
        await bindHttp(http, c.http);
        const grpcPort = await bindGrpc(rpc, p.grpcAddress);
        const grpcBound = formatHostPort({ host: c.grpc.host, port: grpcPort });
        if (c.grpc.port === 0 && !c.advertise) (node.cfg as { grpcAdvertise: string }).grpcAdvertise = grpcBound;
        const a = http.server.address();
        const httpPort = typeof a === "object" && a !== null ? a.port : c.http.port;
        takeWork();
        const out = { http: formatHostPort({ host: c.http.host, port: httpPort }), grpc: grpcBound };
        logListening(log, { ...out, data: c.data, peerAuth: p.peerAuth.mode });
        if (p.peerAuth.mode === "none" || p.peerAuth.mode === "none (loopback)")
          log.warn({ event: "peer_auth_off", mode: p.peerAuth.mode }, "peers are not authenticated: any process that reaches the gRPC port can drive migrations");
        return out;
      } catch (e) {
        await release(0);
        throw e;
      }
    },
    async start() {
      try {
        node.start();
        await http.ready();
      } catch (e) {
        await release(0);
        throw e;
      }
      takeWork();
    },
    close: (graceMs = 2000) => release(graceMs),
  };
}

function readiness(phase: Phase, node: TscmigNode): Readiness {
  if (phase === "starting") return { ready: false, reason: "starting", message: "recovering the journal and binding ports" };
  if (phase === "closing") return { ready: false, reason: "shutting_down", message: "shutting down" };
  const j = node.durable.health();
  if (!j.writable)
    return {
      ready: false,
      reason: "journal_unwritable",
      ...(j.reason !== undefined ? { cause: j.reason } : {}),
      message: `the journal cannot be written (${j.detail ?? "unknown"}); changes are refused until it can`,
    };
  return { ready: true };
}

function readTlsFile(path: string, flag: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    const code = (e as { code?: string }).code ?? "error";
    throw new TscmigError("failed_precondition", `${flag} ${path}: cannot read it (${code})`, { field: flag.slice(2), reason: "tls_file_unreadable" });
  }
}

/** A bind that failed, said with the flag that chooses the address. */
function bindError(what: string, flag: string, address: string, e: unknown): TscmigError {
  const text = e instanceof Error ? e.message : String(e);
  const code = /EADDRINUSE|EACCES|EADDRNOTAVAIL/.exec(text)?.[0];
  const advice =
    code === "EADDRINUSE"
      ? `the port is in use by another process: stop it or choose another address with ${flag}`
      : code === "EACCES"
        ? `not permitted to bind it (a port below 1024 needs privileges): choose another with ${flag}`
        : code === "EADDRNOTAVAIL"
          ? `no interface of this machine has that address: fix ${flag}`
          : `${text} (${flag})`;
  return new TscmigError("unavailable", `cannot listen for ${what} on ${address}: ${advice}`, {
    field: flag.slice(2),
    reason: code === "EADDRINUSE" ? "port_in_use" : "listen_failed",
  });
}

async function bindHttp(http: FastifyInstance, at: { host: string; port: number }): Promise<void> {
  try {
    await http.listen({ host: at.host, port: at.port });
  } catch (e) {
    throw bindError("the control API", "--http", formatHostPort(at), e);
  }
}

async function bindGrpc(rpc: RpcServer, address: string): Promise<number> {
  try {
    return (await rpc.listen(address)).port;
  } catch (e) {
    throw bindError("gRPC (peers)", "--grpc", address, e);
  }
}
