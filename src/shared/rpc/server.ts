// A grpc-js server for protobuf-es services, with what a stock client expects of a gRPC endpoint:
// the standard health service (grpc.health.v1.Health, served by grpc-health-check) and server
// reflection (@grpc/reflection), so `buf curl`, grpcurl or a Python client can list and call it.
//
// Reflection is fed the serialized FileDescriptorProtos embedded in the generated code, each file
// after its dependencies. (Going through proto-loader instead drops imports, and external clients
// then fail with "failed to find service".)
//
// Lifecycle: build → listen(address) → … → shutdown(graceMs). Shutdown first marks every service
// NOT_SERVING (health watchers and load balancers see it), then lets calls finish for at most
// graceMs, then cuts the rest. The grace timer, and each exchange call's deadline for its first
// message (LIMITS.exchangeFirstMessageNs), run on the injected Scheduler (STYLE 2).

import * as grpc from "@grpc/grpc-js";
import { toBinary } from "@bufbuild/protobuf";
import type { DescFile, DescService } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation } from "grpc-health-check";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { assert, TscmigError } from "../errors.js";
import { LIMITS } from "../limits.js";
import { RealScheduler } from "../platform/index.js";
import type { Scheduler } from "../time/clock.js";
import { asBuffer, toBuffer, toGrpcImplementation, toGrpcServiceDefinition } from "./adapter.js";
import type { RpcLog, ServiceRegistration } from "./adapter.js";

export interface RpcServerTls {
  /** This server's certificate chain, PEM. */
  certPem: Buffer | string;
  keyPem: Buffer | string;
  /** CA that client certificates must chain to. */
  caPem: Buffer | string;
  /** Refuse clients without a certificate from `caPem` (mutual TLS). Default true. */
  requireClientCert?: boolean;
}

export interface RpcServerOptions {
  services: ServiceRegistration[];
  /** Insecure (plaintext HTTP/2) when absent. */
  tls?: RpcServerTls;
  /** Largest message received or sent; default `LIMITS.messageBytesMax`. */
  maxMessageBytes?: number;
  /** Handler failures and unencodable responses are reported here. Default: dropped. */
  log?: RpcLog;
  /** Runs the shutdown grace timer and the exchange calls' first-message deadlines. Default: the real scheduler. */
  scheduler?: Scheduler;
  /** Clock for the per-request decode time reported to handlers (`ctx.decodeNs`); none: 0. */
  monotonicNs?: () => bigint;
}

export interface RpcServer {
  /** Binds `host:port` (port 0 picks a free one) and resolves with the bound port. */
  listen(address: string): Promise<{ port: number }>;
  /**
   * Sets what grpc.health.v1.Health answers for `serviceName` (a full name such as
   * `tscmig.v1.MigrationService`, or "" for the server as a whole). Every registered service and ""
   * start SERVING.
   */
  setServing(serviceName: string, serving: boolean): void;
  /** NOT_SERVING everywhere, then graceful shutdown bounded by `graceMs`, then forced. */
  shutdown(graceMs: number): Promise<void>;
}

export function createRpcServer(opts: RpcServerOptions): RpcServer {
  const maxMessageBytes = opts.maxMessageBytes ?? LIMITS.messageBytesMax;
  assert(Number.isSafeInteger(maxMessageBytes) && maxMessageBytes > 0, "maxMessageBytes is a positive integer");
  const log: RpcLog = opts.log ?? (() => {});
  const scheduler = opts.scheduler ?? new RealScheduler();

  const server = new grpc.Server({
    "grpc.max_receive_message_length": maxMessageBytes,
    "grpc.max_send_message_length": maxMessageBytes,
    // Ping idle clients every 60 s so half-open connections (a peer that vanished) get noticed.
    "grpc.keepalive_time_ms": 60_000,
    "grpc.keepalive_timeout_ms": 20_000,
  });

  const names = new Set<string>();
  for (const registration of opts.services) {
    const name = registration.service.typeName;
    assert(!names.has(name), `service ${name} registered twice`);
    names.add(name);
    server.addService(toGrpcServiceDefinition(registration.service, opts.monotonicNs, registration.raw), toGrpcImplementation(registration, log, opts.monotonicNs, scheduler));
  }

  // Every name health has answered for; shutdown turns them all NOT_SERVING.
  const statusNames = new Set(["", ...names]);
  const health = new HealthImplementation(Object.fromEntries([...statusNames].map((n) => [n, "SERVING" as const])));
  health.addToServer(server);

  new ReflectionService(reflectionPackage([...opts.services.map((r) => r.service), Health])).addToServer(server);

  const credentials = opts.tls === undefined ? grpc.ServerCredentials.createInsecure() : serverCredentials(opts.tls);

  return {
    listen(address) {
      return new Promise((resolve, reject) => {
        server.bindAsync(address, credentials, (err, port) => {
          if (err) reject(new TscmigError("unavailable", `cannot listen on ${address}: ${err.message}`, { field: "address" }));
          else resolve({ port });
        });
      });
    },
    setServing(serviceName, serving) {
      statusNames.add(serviceName);
      health.setStatus(serviceName, serving ? "SERVING" : "NOT_SERVING");
    },
    shutdown(graceMs) {
      assert(Number.isFinite(graceMs) && graceMs >= 0, "graceMs is a finite, non-negative number");
      for (const name of statusNames) health.setStatus(name, "NOT_SERVING");
      return new Promise((resolve) => {
        let done = false;
        const graceNs = BigInt(Math.ceil(graceMs)) * 1_000_000n;
        const timer = scheduler.after(graceNs, () => {
          if (done) return;
          done = true;
          server.forceShutdown();
          resolve();
        });
        server.tryShutdown(() => {
          if (done) return;
          done = true;
          timer.cancel();
          resolve();
        });
      });
    },
  };
}

function serverCredentials(tls: RpcServerTls): grpc.ServerCredentials {
  return grpc.ServerCredentials.createSsl(
    toBuffer(tls.caPem),
    [{ cert_chain: toBuffer(tls.certPem), private_key: toBuffer(tls.keyPem) }],
    tls.requireClientCert ?? true,
  );
}

/** The files declaring `services`, each after the files it imports, without repeats. */
export function descriptorFilesOf(services: DescService[]): DescFile[] {
  const ordered: DescFile[] = [];
  const seen = new Set<string>();
  const visit = (file: DescFile): void => {
    if (seen.has(file.name)) return;
    seen.add(file.name);
    for (const dep of file.dependencies) visit(dep);
    ordered.push(file);
  };
  for (const service of services) visit(service.file);
  return ordered;
}

type ReflectionPackage = ConstructorParameters<typeof ReflectionService>[0];

/**
 * What `ReflectionService` reads of a proto-loader package definition: for each entry, the
 * serialized FileDescriptorProtos (it indexes symbols and dependencies from those alone). One
 * entry per service, all sharing the full dependency-ordered list.
 */
function reflectionPackage(services: DescService[]): ReflectionPackage {
  const fileDescriptorProtos = descriptorFilesOf(services).map((file) => asBuffer(toBinary(FileDescriptorProtoSchema, file.proto)));
  const pkg: Record<string, { format: string; type: object; fileDescriptorProtos: Buffer[] }> = {};
  for (const service of services) {
    pkg[service.typeName] = { format: "Protocol Buffer 3 FileDescriptorProto", type: {}, fileDescriptorProtos };
  }
  // Only `fileDescriptorProtos` is read; the proto-loader definition types demand more.
  return pkg as unknown as ReflectionPackage;
}
