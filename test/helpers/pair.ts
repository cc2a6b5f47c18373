// Two TscmigNodes in one process on the real clock, joined by real gRPC on loopback.
import { EmulatedHost } from "../../src/shared/hypervisor/host.js";
import { MemoryJournal } from "../../src/shared/migration/journal.js";
import { SILENT_LOGGER } from "../../src/shared/logger.js";
import { RealClock, RealScheduler } from "../../src/shared/platform/index.js";
import { SeededRandom } from "../../src/shared/time/random.js";
import type { OffsetModel } from "../../src/shared/time/offset-model.js";
import { createRpcServer, type RpcServer } from "../../src/shared/rpc/index.js";
import { defaultNodeConfig, TscmigNode, type NodeConfig } from "../../src/daemon/node.js";
import { GrpcDialer, migrationService } from "../../src/daemon/grpc-peer.js";
import { RingHistory } from "../../src/shared/history.js";

export interface PairSide {
  node: TscmigNode;
  server: RpcServer;
  address: string;
  host: EmulatedHost;
  history: RingHistory;
  dialer: GrpcDialer;
}

export interface SideOptions {
  name: string;
  skew?: OffsetModel;
  maxerrorNs?: bigint;
  tscKhz?: bigint;
  crystal?: OffsetModel;
  vendor?: "vmx" | "svm";
  tscScaling?: boolean;
  tune?: (cfg: NodeConfig) => void;
  /** Serve without the Handover method (an older daemon): sources must fall back to unary calls. */
  withoutHandover?: boolean;
}

const clock = new RealClock();

export async function startSide(o: SideOptions, seed = 1n): Promise<PairSide> {
  const host = new EmulatedHost({
    name: o.name,
    clock,
    epochNs: 1_767_225_600_000_000_000n,
    ...(o.tscKhz ? { tscKhz: o.tscKhz } : {}),
    ...(o.vendor ? { vendor: o.vendor } : {}),
    ...(o.tscScaling !== undefined ? { tscScaling: o.tscScaling } : {}),
    ...(o.crystal ? { crystal: o.crystal } : {}),
    ...(o.skew ? { skew: o.skew } : {}),
    maxerrorNs: o.maxerrorNs ?? 100_000n,
  });
  const dialer = new GrpcDialer({ clock });
  const history = new RingHistory(10_000);
  const cfg = defaultNodeConfig(o.name, "");
  o.tune?.(cfg);
  const node = new TscmigNode(cfg, {
    clock,
    scheduler: new RealScheduler(),
    random: new SeededRandom(seed),
    log: SILENT_LOGGER,
    host,
    journal: new MemoryJournal(),
    dialer,
    history,
  });
  const full = migrationService(node.peer, () => host.rawNs());
  const { handover: _omitted, ...unaryOnly } = full.impl;
  const registration = o.withoutHandover ? { ...full, impl: unaryOnly } : full;
  const server = createRpcServer({ services: [registration], monotonicNs: () => clock.monotonicNs() });
  const { port } = await server.listen("127.0.0.1:0");
  const address = `127.0.0.1:${port}`;
  (node.cfg as { grpcAdvertise: string }).grpcAdvertise = address;
  node.start();
  return { node, server, address, host, history, dialer };
}

export async function stopSide(s: PairSide): Promise<void> {
  s.node.stop();
  s.dialer.close();
  await s.server.shutdown(100);
}
