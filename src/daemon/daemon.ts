// The composition root of one daemon (STYLE 12): build({clock, scheduler, random, log, config, ...})
// wires the emulated host, the journal, the node, the gRPC data plane and the HTTP control API.
// It listens only when `listen()` is called; `main.ts` alone touches process, signals and ports.

import { readFileSync } from "node:fs";
import type { FastifyInstance } from "fastify";
import { buildHttpApp } from "../shared/http/app.js";
import { createMetrics, type Metrics } from "../shared/http/metrics.js";
import { RingHistory } from "../shared/history.js";
import { EmulatedHost } from "../shared/hypervisor/host.js";
import { LIMITS } from "../shared/limits.js";
import { logListening, type Logger } from "../shared/log.js";
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
import { resolvePeerAuth } from "./peer-auth.js";
import { defaultNodeConfig, type NodeConfig, TscmigNode } from "./node.js";

export interface DaemonDeps {
  clock: Clock;
  scheduler: Scheduler;
  random: Random;
  log: Logger;
  config: DaemonConfig;
  /** Wall-clock instant of true time zero, shared by every daemon of a deployment. */
  trueEpochNs: bigint;
  faults?: Faults;
  /** Node tuning beyond the flags (tests, chaos). */
  tune?: (cfg: NodeConfig) => void;
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
  /** Graceful, bounded: stop taking work, finish in-flight calls for up to `graceMs`, close the journal. */
  close(graceMs?: number): Promise<void>;
}

export async function buildDaemon(deps: DaemonDeps): Promise<Daemon> {
  const c = deps.config;
  const log = deps.log;
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
    ? { certPem: readFileSync(c.tlsCert), keyPem: readFileSync(c.tlsKey), caPem: readFileSync(c.tlsCa) }
    : undefined;
  const peerAuth = resolvePeerAuth({ peerAuth: c.peerAuth, peerToken: c.peerToken, peerTokenFile: c.peerTokenFile, tls: tls !== undefined, grpcHost: c.grpc.host });
  const journal = Journal.open(c.data, { synchronous: c.journalSync as "full" | "normal" });
  const history = new RingHistory(LIMITS.historySamplesMax);
  const dialer = new GrpcDialer({ clock: deps.clock, headers: peerAuth.headers, ...(tls ? { tls } : {}) });
  const grpcAddress = formatHostPort(c.grpc);
  const nodeCfg = defaultNodeConfig(c.name, c.advertise ? formatHostPort(c.advertise) : grpcAddress);
  nodeCfg.sampleIntervalNs = 100_000_000n;
  nodeCfg.sampleVcpusMax = 64;
  // 10 Hz per VM up to 100 VMs, then spread: 1000 idle VMs sampled at 10 Hz each took 20% of a core
  // and ~80 MB of RSS in garbage, and overwrote the 4096-sample history ring every 0.4 s.
  nodeCfg.samplesPerSecondMax = 1000;
  deps.tune?.(nodeCfg);
  const node = new TscmigNode(nodeCfg, {
    clock: deps.clock,
    scheduler: deps.scheduler,
    random: deps.random,
    log,
    host,
    journal,
    dialer,
    history,
    ...(deps.faults ? { faults: deps.faults } : {}),
  });
  const metrics = createMetrics();
  let ready = false;
  const http = await buildHttpApp({
    log,
    title: "tscmig control API",
    version: deps.version ?? "0.1.0",
    metrics,
    ready: () => ready,
    ...(c.token !== undefined ? { token: c.token } : {}),
  });
  controlRoutes(http, { node, metrics, history });
  uiRoutes(http, { node, history, clock: deps.clock, scheduler: deps.scheduler, log, peers: c.peers, streamId: deps.random.fork("events").u32().toString(36), ...(c.token !== undefined ? { token: c.token } : {}) });
  // Gauges are read at scrape time: VMs arrive by migration too, not only through this API.
  http.addHook("onRequest", async (req) => {
    if (req.url === "/metrics") {
      metrics.vms.set(node.listVms().length);
      metrics.vcpus.set(node.vcpuTotal());
    }
  });
  const rpc = createRpcServer({
    services: [migrationService(node, peerAuth.authorize)],
    ...(tls ? { tls: { ...tls, requireClientCert: true } } : {}),
    monotonicNs: () => host.rawNs(), // this host's own clock: decode time is part of a destination's hold
    scheduler: deps.scheduler,
    log: (obj, msg) => log.error(obj, msg),
  });

  return {
    node,
    http,
    rpc,
    metrics,
    history,
    async listen() {
      node.start();
      const { port: grpcPort } = await rpc.listen(grpcAddress);
      const grpcBound = formatHostPort({ host: c.grpc.host, port: grpcPort });
      if (c.grpc.port === 0 && !c.advertise) (node.cfg as { grpcAdvertise: string }).grpcAdvertise = grpcBound;
      await http.listen({ host: c.http.host, port: c.http.port });
      const a = http.server.address();
      const httpPort = typeof a === "object" && a !== null ? a.port : c.http.port;
      ready = true;
      metrics.vms.set(node.listVms().length);
      metrics.vcpus.set(node.vcpuTotal());
      const out = { http: formatHostPort({ host: c.http.host, port: httpPort }), grpc: grpcBound };
      logListening(log, { ...out, data: c.data, peerAuth: peerAuth.mode });
      if (peerAuth.mode === "none" || peerAuth.mode === "none (loopback)")
        log.warn({ event: "peer_auth_off", mode: peerAuth.mode }, "peers are not authenticated: any process that reaches the gRPC port can drive migrations");
      return out;
    },
    async close(graceMs = 2000) {
      ready = false;
      node.stop();
      await Promise.allSettled([http.close(), rpc.shutdown(graceMs)]);
      dialer.close();
      journal.close();
    },
  };
}
