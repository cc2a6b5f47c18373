// Goal: the bench's same-run baselines are real round trips to servers in their own processes — the
// raw TCP echo and the bare grpc-js unary echo answer every call, and the echo method
// returns the bytes it was sent. Method: start both servers from dist/ exactly as `tscmig bench`
// does, time a few sequential calls, check the counts and that each sample is a positive duration;
// then call the bare echo with grpc-js directly and compare the bytes. No timing is asserted.

import * as grpc from "@grpc/grpc-js";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import { ROOT } from "../helpers/daemons.js";

type Baseline = typeof import("../../src/bench/baseline.js");
type Echo = typeof import("../../src/bench/grpc-echo.js");
type Platform = typeof import("../../src/shared/platform/index.js");

// The servers are started from dist/ (as the bench runs them): import the built modules.
const load = async <T>(rel: string): Promise<T> => (await import(pathToFileURL(join(ROOT, "dist", rel)).href)) as T;

describe("bench baselines", () => {
  it("times a bare grpc-js echo and a TCP echo, each served by its own process", async () => {
    const b = await load<Baseline>("src/bench/baseline.js");
    const { RealClock } = await load<Platform>("src/shared/platform/index.js");
    const clock = new RealClock();
    const grpcEcho = await b.startGrpcEchoServer();
    const tcp = await b.startEchoServer();
    try {
      expect(grpcEcho.pid).not.toBe(process.pid);
      expect(grpcEcho.pid).not.toBe(tcp.pid);
      const bare = await b.grpcBareRtts(clock, grpcEcho.port, 20, 5);
      const raw = await b.tcpEchoRtts(clock, tcp.port, 20, 5);
      expect(bare).toHaveLength(20);
      expect(raw).toHaveLength(20);
      for (const x of [...bare, ...raw]) expect(x).toBeGreaterThan(0n);
    } finally {
      grpcEcho.stop();
      tcp.stop();
    }
  });

  it("the bare echo answers with the request's own bytes", async () => {
    const b = await load<Baseline>("src/bench/baseline.js");
    const { ECHO_PATH } = await load<Echo>("src/bench/grpc-echo.js");
    const server = await b.startGrpcEchoServer();
    const client = new grpc.Client(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
    try {
      const sent = Buffer.from("tscmig bench: bare grpc-js echo");
      const got = await new Promise<Buffer>((ok, fail) =>
        client.makeUnaryRequest(ECHO_PATH, (x: Buffer) => x, (x: Buffer) => x, sent, (err, res) => (err || !res ? fail(err ?? new Error("no response")) : ok(res))),
      );
      expect(got.equals(sent)).toBe(true);
    } finally {
      client.close();
      server.stop();
    }
  });
});
