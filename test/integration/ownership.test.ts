// Goal: real daemons never lose or duplicate a VM when sources collide on migration ids (racing, and
// with a crash right after a source's decision), when peers are not who they say, or when the data
// plane would be open to anyone. Method: three daemon processes on loopback (port 0, temporary
// --data); migrations through the control API with caller-given ids; crashes through the test-only
// fault hook (SIGKILL at a named site) and plain SIGKILL; a stock gRPC client for unauthenticated
// calls; bounded polling until every VM runs on exactly one daemon. TSCMIG_TEST_BIN runs this file
// against another build (how it was shown to fail on the code before the fix).
import { afterAll, describe, expect, it } from "vitest";
import { HealthCheckResponse_ServingStatus, Health } from "../../src/gen/grpc/health/v1/health_pb.js";
import { MigrationService } from "../../src/gen/tscmig/v1/migration_pb.js";
import { isTscmigError } from "../../src/shared/errors.js";
import { createRpcClient } from "../../src/shared/rpc/index.js";
import { SeededRandom } from "../../src/shared/time/random.js";
import { startDaemons, stopAllDaemons, type TestDaemon, TestDaemon as Daemon, waitFor } from "../helpers/daemons.js";

afterAll(async () => {
  await stopAllDaemons();
});

/** Where each VM runs now: the daemons that list it running. */
async function runningOn(ds: TestDaemon[], id: string): Promise<string[]> {
  const seen = await Promise.all(ds.map(async (d) => ((await d.api.vmOrNull(id))?.running ? d.name : null)));
  return seen.filter((x): x is string => x !== null);
}

/** Polls until every VM runs on exactly one daemon; fails naming the ones that do not. */
async function eachOnExactlyOne(ds: TestDaemon[], ids: string[], timeoutMs = 30_000): Promise<void> {
  let last = "";
  await waitFor(
    "every VM to run on exactly one daemon",
    async () => {
      const where = await Promise.all(ids.map(async (id) => [id, await runningOn(ds, id)] as const));
      const bad = where.filter(([, on]) => on.length !== 1);
      last = bad.map(([id, on]) => `${id} on [${on.join(",")}]`).join("; ");
      return bad.length === 0;
    },
    timeoutMs,
  ).catch((e: unknown) => {
    throw new Error(`${String(e)}\nstill wrong: ${last}\n${ds.map((d) => d.tail(15)).join("\n")}`);
  });
}

describe("colliding migration ids", () => {
  it("a source that crashed right after deciding still hands its VM over, though another source then used its migration id", async () => {
    const [a, b, c] = await startDaemons({ name: "col-a" }, { name: "col-b" }, { name: "col-c" });
    await a.api.createVm({ id: "col-vm-a", vcpus: 2 });
    await b.api.createVm({ id: "col-vm-b", vcpus: 2 });
    await a.stop();
    await a.restart({ TSCMIG_FAULTS: "crash.source.afterCommitJournal" });
    // A decides to commit and dies before its Commit leaves: C holds the snapshot, staged.
    await a.api.migrate("col-vm-a", { destination: c.grpc, migrationId: "col-shared" }).catch(() => undefined);
    expect((await a.exited).signal).toBe("SIGKILL");
    // B picks the same id for its own VM. Before the fix C refused it and B's Abort aborted A's.
    const rb = await b.api.migrate("col-vm-b", { destination: c.grpc, migrationId: "col-shared" });
    expect(rb.status, rb.text).toBe(200);
    await a.restart();
    await eachOnExactlyOne([a, b, c], ["col-vm-a", "col-vm-b"]);
    expect(await runningOn([a, b, c], "col-vm-a")).toEqual(["col-c"]);
    // Settled: nothing left in doubt on either side.
    await waitFor("A's in-doubt list to empty", async () => ((await a.api.ok<{ inDoubt?: unknown[] }>("GET", "/v1/migrations")).inDoubt ?? [1]).length === 0);
  });

  it("three daemons racing migrations with colliding ids, kills included: no VM lost or duplicated", async () => {
    const ds = await startDaemons({ name: "race-0" }, { name: "race-1" }, { name: "race-2" });
    const rand = new SeededRandom(20261203n);
    const vms: string[] = [];
    for (let i = 0; i < 6; i++) {
      const id = `race-vm-${i}`;
      await ds[i % 3]!.api.createVm({ id, vcpus: 1 });
      vms.push(id);
    }
    const home = async (id: string): Promise<TestDaemon | undefined> => {
      const on = await runningOn(ds, id);
      return on.length === 1 ? ds.find((d) => d.name === on[0]) : undefined;
    };
    for (let round = 0; round < 12; round++) {
      // Two VMs on two different daemons, both sent to the third with one migration id.
      const placed = await Promise.all(vms.map(async (id) => [id, await home(id)] as const));
      const pairs = placed.filter(([, d]) => d !== undefined) as [string, TestDaemon][];
      const [id1, s1] = pairs[rand.int(0, pairs.length - 1)]!;
      const others = pairs.filter(([, d]) => d !== s1);
      if (others.length === 0) continue;
      const [id2, s2] = others[rand.int(0, others.length - 1)]!;
      const dst = ds.find((d) => d !== s1 && d !== s2)!;
      const gapMs = rand.int(0, 12);
      const kill = rand.int(0, 4) === 0 ? (rand.int(0, 1) === 0 ? s1 : dst) : null;
      const m1 = s1.api.migrate(id1, { destination: dst.grpc, migrationId: `race-${round}` }).catch(() => undefined);
      await new Promise((r) => setTimeout(r, gapMs));
      const m2 = s2.api.migrate(id2, { destination: dst.grpc, migrationId: `race-${round}` }).catch(() => undefined);
      if (kill) await kill.kill("SIGKILL");
      await Promise.all([m1, m2]);
      if (kill) await kill.restart();
    }
    await eachOnExactlyOne(ds, vms, 30_000);
  }, 110_000);
});

describe("peers authenticate", () => {
  const token = "peer-token-for-tests-0123456789";

  it("with a peer token, unauthenticated calls are refused, health stays open, and token holders migrate", async () => {
    const [a, b] = await startDaemons({ name: "auth-a", args: ["--peer-token", token] }, { name: "auth-b", args: ["--peer-token", token] });
    const stock = createRpcClient(MigrationService, b.grpc);
    const health = createRpcClient(Health, b.grpc);
    try {
      const e = await stock.ping({}).then(
        () => null,
        (x: unknown) => x,
      );
      expect(isTscmigError(e) ? e.code : e).toBe("unauthenticated");
      expect((await health.check({ service: "tscmig.v1.MigrationService" })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    } finally {
      stock.close();
      health.close();
    }
    await a.api.createVm({ id: "auth-vm", vcpus: 1 });
    const r = await a.api.migrate("auth-vm", { destination: b.grpc });
    expect(r.body.outcome, r.text).toBe("committed");
    // A daemon with another token cannot migrate in: refused, and its VM keeps running.
    const [m] = await startDaemons({ name: "auth-mallory", args: ["--peer-token", "not-the-token-0123456789"] });
    await m.api.createVm({ id: "auth-intruder", vcpus: 1 });
    const rm = await m.api.migrate("auth-intruder", { destination: b.grpc });
    expect([rm.body.outcome, rm.body.error?.code]).toEqual(["refused", "unauthenticated"]);
    expect((await m.api.vm("auth-intruder", 0)).running).toBe(true);
    expect(await b.api.vmOrNull("auth-intruder")).toBeNull();
  });

  it("a data plane off loopback without TLS or a peer token refuses to start, saying what to set", async () => {
    const e = await Daemon.start({ name: "auth-open", args: ["--grpc", "0.0.0.0:0"], startTimeoutMs: 10_000 }).then(
      (d) => d,
      (x: unknown) => x as Error,
    );
    expect(e).toBeInstanceOf(Error);
    expect(String(e)).toMatch(/peer-token|tls/);
  });
});
