// Goal: log lines are JSON whose 64-bit values survive a JSON parser (bigints written as strings),
// and toJsonSafe converts exactly the bigints. Method: a logger writing into memory.
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { toJsonSafe } from "../../src/shared/json-safe.js";
import { child, createLogger, grpcJsLogger, listeningOf, logListening } from "../../src/shared/log.js";

function captureLog(level: "debug" | "warn" | "silent" = "debug"): { lines: string[]; log: ReturnType<typeof createLogger> } {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  return { lines, log: createLogger({ level, name: "test", destination }) };
}

describe("logger", () => {
  it("writes bigints as strings in lines and in child bindings", () => {
    const { lines, log } = captureLog();
    child(log, { vmId: "vm-1", generation: (1n << 64n) - 1n }).info({ tscNs: 9_007_199_254_740_993n, per: [{ ns: 1n }] }, "restored");
    expect(JSON.parse(lines[0] as string)).toMatchObject({
      name: "test",
      vmId: "vm-1",
      generation: "18446744073709551615",
      tscNs: "9007199254740993",
      per: [{ ns: "1" }],
      msg: "restored",
    });
  });

  it("keeps errors serialised by pino and honours the level", () => {
    const { lines, log } = captureLog();
    log.trace("dropped");
    log.error({ err: new Error("boom"), n: 1n }, "failed");
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0] as string)).toMatchObject({ level: 50, n: "1", err: { type: "Error", message: "boom" }, msg: "failed" });
  });
});

describe("toJsonSafe", () => {
  it("converts bigints at any depth and leaves everything else alone", () => {
    const err = new Error("kept");
    const plain = { a: 1, b: ["x", { c: null }] };
    expect(toJsonSafe({ a: 1n, b: [2n, { c: -3n }], err, plain })).toEqual({ a: "1", b: ["2", { c: "-3" }], err, plain });
    expect(toJsonSafe(plain)).toBe(plain); // no copy without bigints
    const cyclic: Record<string, unknown> = { n: 1n };
    cyclic.self = cyclic;
    expect((toJsonSafe(cyclic) as Record<string, unknown>).n).toBe("1");
  });

});

describe("the listening line and grpc-js diagnostics", () => {
  it("logs where the daemon listens whatever its level, and tools read it back", () => {
    for (const level of ["debug", "warn", "silent"] as const) {
      const { lines, log } = captureLog(level);
      logListening(log, { http: "127.0.0.1:7070", grpc: "[::1]:7071", data: "/var/lib/tscmig" });
      expect(lines, level).toHaveLength(1);
      expect(JSON.parse(lines[0] as string)).toMatchObject({ level: 30, name: "test", event: "listening", msg: "daemon listening" });
      expect(listeningOf((lines[0] as string).trim())).toEqual({ http: "127.0.0.1:7070", grpc: "[::1]:7071" });
    }
    expect(listeningOf('{"level":30,"msg":"listening soon"}')).toBeUndefined();
    expect(listeningOf('{"event":"listening","http":1}')).toBeUndefined();
    expect(listeningOf("listening on 7070")).toBeUndefined();
    expect(listeningOf('{"event":"listening",')).toBeUndefined();
  });

  it("turns grpc-js diagnostics into JSON log lines", () => {
    const { lines, log } = captureLog();
    const g = grpcJsLogger(log);
    g.error("E No connection established", new Error("connect ECONNREFUSED"));
    g.info("I subchannel", { state: "READY" });
    expect(lines.map((l) => JSON.parse(l) as Record<string, unknown>)).toMatchObject([
      { level: 50, component: "grpc-js", msg: "E No connection established connect ECONNREFUSED" },
      { level: 30, component: "grpc-js", msg: 'I subchannel {"state":"READY"}' },
    ]);
  });
});
