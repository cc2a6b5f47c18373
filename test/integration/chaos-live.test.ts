// Goal: the chaos scenarios also run against real daemon processes: skew through the control API,
// network faults through the fault-injecting TCP proxy between the daemons, SIGKILL and restart
// with the same --data, and the checker reading each daemon's GET /v1/history. Method: a short live
// campaign (two runs, three migrations each) on loopback, daemons started from the TypeScript
// sources; then the proxy on its own: delay, stall and reset as a gRPC client sees them.
import { fileURLToPath } from "node:url";
import { createServer, type Socket, connect } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { defaultCampaign, runCampaign } from "../../src/chaos/campaign.js";
import { FaultProxy } from "../../src/chaos/live/proxy.js";
import { DEFAULT_SCENARIO } from "../../src/chaos/sim/scenario.js";
import { RealClock, RealScheduler } from "../../src/shared/platform/index.js";
import { sleep } from "../../src/shared/time/clock.js";

const entry = [
  "--import",
  fileURLToPath(new URL("../helpers/ts-register.mjs", import.meta.url)),
  fileURLToPath(new URL("../helpers/tscmig-cli.ts", import.meta.url)),
];

describe("live chaos campaign", () => {
  // A run still going when its test times out is aborted here: its daemons die with the test.
  let ac = new AbortController();
  afterEach(() => {
    ac.abort();
    ac = new AbortController();
  });
  it("two runs against real daemons behind fault proxies: I1–I9 hold, every migration accounted for", async () => {
    const seed = BigInt(process.env.TSCMIG_CHAOS_SEED ?? "3");
    process.stdout.write(`live chaos campaign: seed ${seed}; replay: tscmig chaos --mode live --seed ${seed} --runs 2\n`);
    const r = await runCampaign(
      defaultCampaign({ mode: "live", seed, runs: 2, scenario: { ...DEFAULT_SCENARIO, skewMaxNs: 5_000_000_000n }, determinismCheck: 0, live: { entry, migrations: 3, signal: ac.signal } }),
    );
    const detail = r.violations.map((v) => `${v.invariant} run ${v.run}: ${v.message}`).join("\n");
    expect(r.violationCount, detail).toBe(0);
    expect(r.totals.runs).toBe(2);
    expect(r.totals.samples).toBeGreaterThan(10);
    expect(r.totals.migrationsStarted).toBeGreaterThanOrEqual(4);
    expect(r.totals.migrationsCommitted).toBeGreaterThanOrEqual(1);
    // Every planned migration drew its switchover mode (two-phase or on-receipt), counted per mode.
    const started = Object.entries(r.migrationsBySwitchover).filter(([k]) => k.endsWith(":started"));
    expect(started.map(([k]) => k.split(":")[0]).every((m) => m === "two-phase" || m === "on-receipt"), JSON.stringify(r.migrationsBySwitchover)).toBe(true);
    expect(started.reduce((a, [, n]) => a + n, 0), JSON.stringify(r.migrationsBySwitchover)).toBe(6);
    expect(Object.keys(r.faultSites).length).toBeGreaterThan(0);
  }, 240_000);
});

describe("fault proxy", () => {
  const clock = new RealClock();
  async function echoServer(): Promise<{ port: number; close: () => Promise<void> }> {
    const server = createServer((s) => {
      s.on("error", () => {}); // the proxy resets connections on purpose
      s.pipe(s);
    });
    await new Promise<void>((ok) => server.listen(0, "127.0.0.1", () => ok()));
    const a = server.address();
    return { port: typeof a === "object" && a ? a.port : 0, close: () => new Promise((ok) => server.close(() => ok())) };
  }
  function client(address: string): Promise<Socket> {
    const [host, port] = address.split(":");
    return new Promise((ok, fail) => {
      const s = connect(Number(port), host as string, () => ok(s));
      s.on("error", fail); // after connecting: the resets this test provokes
    });
  }
  const roundTrip = (s: Socket, text: string) =>
    new Promise<string>((ok, fail) => {
      let got = "";
      const onData = (b: Buffer) => {
        got += b.toString();
        if (got.length >= text.length) {
          s.off("data", onData);
          ok(got);
        }
      };
      s.on("data", onData);
      s.once("close", () => fail(new Error("closed")));
      s.write(text);
    });

  it("forwards in order, delays every chunk, and resets connections that a stall cut", { timeout: 20_000 }, async () => {
    const echo = await echoServer();
    const proxy = new FaultProxy(`127.0.0.1:${echo.port}`);
    const addr = await proxy.start();
    const s = await client(addr);
    expect(await roundTrip(s, "hello")).toBe("hello");
    proxy.delayNs = 30_000_000n;
    const t0 = clock.monotonicNs();
    expect(await roundTrip(s, "slow")).toBe("slow");
    expect(clock.monotonicNs() - t0).toBeGreaterThanOrEqual(55_000_000n); // 30 ms each way
    proxy.heal();
    proxy.stall();
    const before = proxy.stats.bytes;
    s.write("lost");
    const closed = new Promise<string>((ok) => s.once("close", () => ok("closed")));
    for (let i = 0; i < 1000 && proxy.stats.bytes === before; i++) await sleep(new RealScheduler(), 1_000_000n);
    proxy.release();
    expect(await closed).toBe("closed");
    expect(proxy.stats.resets).toBe(1);
    const s2 = await client(addr);
    expect(await roundTrip(s2, "again")).toBe("again");
    proxy.reset();
    await new Promise<void>((ok) => (s2.destroyed ? ok() : s2.once("close", () => ok())));
    proxy.refuse = true;
    const s3 = await client(addr).catch(() => null);
    if (s3) await new Promise<void>((ok) => (s3.destroyed ? ok() : s3.once("close", () => ok())));
    expect(proxy.stats.refused).toBe(1);
    await proxy.close();
    await echo.close();
  });
});
