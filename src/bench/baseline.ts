// Same-run baselines: the daemons' empty tscmig.v1.MigrationService/Ping
// (through the same adapter every migration call goes through, served by a daemon that also runs
// its HTTP API, sampling and journal), a bare grpc-js unary echo and a raw TCP echo, each of the
// last two served by its own otherwise idle process. Each is a sequence of one-at-a-time round trips timed
// on the real monotonic clock, after a warm-up the statistics ignore. The gRPC one is also taken
// paced (idle time before each call): on this VM an idle process wakes slowly, and a migration's
// calls are paced, not back to back, so that figure is the honest floor of one migration hop.

import * as grpc from "@grpc/grpc-js";
import { spawn, type ChildProcess } from "node:child_process";
import { connect, type Socket } from "node:net";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { GrpcDialer } from "../daemon/grpc-peer.js";
import { TscmigError } from "../shared/errors.js";
import { type Clock, type Scheduler, sleep } from "../shared/time/clock.js";
import { ECHO_PATH } from "./grpc-echo.js";

export interface EchoServer {
  port: number;
  pid: number;
  stop(): void;
}

/** Starts the raw TCP echo server as a child process and waits for its port. */
export function startEchoServer(): Promise<EchoServer> {
  return startServerProcess("echo-server.js");
}

/** Starts the bare grpc-js echo server as a child process and waits for its port. */
export function startGrpcEchoServer(): Promise<EchoServer> {
  return startServerProcess("grpc-echo-server.js");
}

async function startServerProcess(file: string): Promise<EchoServer> {
  const script = join(dirname(fileURLToPath(import.meta.url)), file);
  const child: ChildProcess = spawn(process.execPath, [script], { stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise<number>((ok, fail) => {
    child.once("exit", (code) => fail(new TscmigError("unavailable", `${file} exited (${code}) before listening`)));
    createInterface({ input: child.stdout! }).once("line", (line) => ok((JSON.parse(line) as { port: number }).port));
  });
  return { port, pid: child.pid ?? 0, stop: () => void child.kill("SIGTERM") };
}

/** `n` sequential round trips of a 32-byte message over one TCP connection (Nagle off). */
export async function tcpEchoRtts(clock: Clock, port: number, n: number, warmup: number): Promise<bigint[]> {
  const socket: Socket = await new Promise((ok, fail) => {
    const s = connect({ host: "127.0.0.1", port }, () => ok(s));
    s.once("error", fail);
  });
  socket.setNoDelay(true);
  const msg = Buffer.alloc(32, 0x61);
  let waiting: ((n: number) => void) | null = null;
  socket.on("data", (chunk: Buffer) => waiting?.(chunk.length));
  const once = () =>
    new Promise<void>((ok) => {
      let got = 0;
      waiting = (len) => {
        got += len;
        if (got >= msg.length) {
          waiting = null;
          ok();
        }
      };
      socket.write(msg);
    });
  try {
    return await timedRounds(clock, n, warmup, once);
  } finally {
    socket.destroy();
  }
}

/**
 * `n` sequential empty unary calls (Ping) to a daemon's gRPC endpoint over one channel, back to back,
 * or with `gapNs` of idle time before each when a scheduler is given (a paced caller: both processes
 * are idle between calls, as the two daemons are between a migration's calls).
 */
export async function grpcUnaryRtts(
  clock: Clock,
  dialer: GrpcDialer,
  address: string,
  n: number,
  warmup: number,
  paced?: { scheduler: Scheduler; gapNs: bigint },
): Promise<bigint[]> {
  const peer = dialer.dial(address);
  return timedRounds(clock, n, warmup, () => peer.ping(), paced ? () => sleep(paced.scheduler, paced.gapNs) : undefined);
}

/** `warmup + n` calls of `once`, one after another (each after `before`, untimed); the last `n` durations. */
async function timedRounds(clock: Clock, n: number, warmup: number, once: () => Promise<void>, before?: () => Promise<void>): Promise<bigint[]> {
  const out: bigint[] = [];
  for (let i = 0; i < warmup + n; i++) {
    if (before) await before();
    const t0 = clock.monotonicNs();
    await once();
    if (i >= warmup) out.push(clock.monotonicNs() - t0);
  }
  return out;
}

/**
 * `n` sequential unary calls of the bare echo method (32 bytes each way) over one grpc-js channel
 * with default options, back to back: no adapter, no protobuf, an idle server process.
 */
export async function grpcBareRtts(clock: Clock, port: number, n: number, warmup: number): Promise<bigint[]> {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const msg = Buffer.alloc(32, 0x61);
  const identity = (b: Buffer): Buffer => b;
  const once = () =>
    new Promise<void>((ok, fail) => {
      client.makeUnaryRequest(ECHO_PATH, identity, identity, msg, (err) => (err ? fail(new TscmigError("unavailable", `grpc echo: ${err.message}`)) : ok()));
    });
  try {
    return await timedRounds(clock, n, warmup, once);
  } finally {
    client.close();
  }
}
