// Same-run baselines (issue 5 §1): a bare grpc-js unary round trip (the daemons' empty
// tscmig.v1.MigrationService/Ping, through the same adapter every migration call goes through) and
// a raw TCP echo against a separate process. Each is a sequence of one-at-a-time round trips timed
// on the real monotonic clock, after a warm-up the statistics ignore. The gRPC one is also taken
// paced (idle time before each call): on this VM an idle process wakes slowly, and a migration's
// calls are paced, not back to back, so that figure is the honest floor of one migration hop.

import { spawn, type ChildProcess } from "node:child_process";
import { connect, type Socket } from "node:net";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { GrpcDialer } from "../daemon/grpc-peer.js";
import { TscmigError } from "../shared/errors.js";
import { type Clock, type Scheduler, sleep } from "../shared/time/clock.js";

export interface EchoServer {
  port: number;
  pid: number;
  stop(): void;
}

/** Starts the echo server as a child process and waits for its port. */
export async function startEchoServer(): Promise<EchoServer> {
  const script = join(dirname(fileURLToPath(import.meta.url)), "echo-server.js");
  const child: ChildProcess = spawn(process.execPath, [script], { stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise<number>((ok, fail) => {
    child.once("exit", (code) => fail(new TscmigError("unavailable", `echo server exited (${code}) before listening`)));
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
  const out: bigint[] = [];
  try {
    for (let i = 0; i < warmup + n; i++) {
      const t0 = clock.monotonicNs();
      await once();
      if (i >= warmup) out.push(clock.monotonicNs() - t0);
    }
  } finally {
    socket.destroy();
  }
  return out;
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
  const out: bigint[] = [];
  for (let i = 0; i < warmup + n; i++) {
    if (paced) await sleep(paced.scheduler, paced.gapNs);
    const t0 = clock.monotonicNs();
    await peer.ping();
    if (i >= warmup) out.push(clock.monotonicNs() - t0);
  }
  return out;
}
