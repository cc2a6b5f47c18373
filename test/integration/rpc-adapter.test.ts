// Goal: the gRPC transport answers every kind of call the way its contract says. Method: a real
// grpc-js server on 127.0.0.1 (port 0) serving tscmig.v1.MigrationService with a trivial handler
// set, called through createRpcClient (and a bare grpc-js client to read the wire status): success,
// typed errors with their trailers, garbage/truncated/oversized bytes, deadlines, health, and mutual
// TLS with a PKI made by the openssl CLI at test time. No wall-clock sleeps: waits are on events.

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  Health,
  HealthCheckRequestSchema,
  HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
} from "../../src/gen/grpc/health/v1/health_pb.js";
import type { HealthCheckRequest, HealthCheckResponse } from "../../src/gen/grpc/health/v1/health_pb.js";
import { Decision, MigrationService, PrepareRequestSchema } from "../../src/gen/tscmig/v1/migration_pb.js";
import { TscmigError } from "../../src/shared/errors.js";
import { LIMITS } from "../../src/shared/limits.js";
import { createRpcClient, createRpcServer } from "../../src/shared/rpc/index.js";
import type { HandlerContext, RpcServer } from "../../src/shared/rpc/index.js";
import type { Scheduler } from "../../src/shared/time/clock.js";
import { makeTestPki, opensslMissingReason } from "../helpers/certs.js";
import type { TestPki } from "../helpers/certs.js";
import { GENERATION_BIG, testImpl } from "../helpers/migration-test-impl.js";
import type { Observed } from "../helpers/migration-test-impl.js";

const SERVICE = "tscmig.v1.MigrationService";
const MAX_MESSAGE_BYTES = 64 * 1024;
/** A bare grpc-js unary call: the raw status and trailers, with no tscmig code in between. */
function bareCall(address: string, path: string, body: Uint8Array): Promise<grpc.ServiceError> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      path,
      (b: Uint8Array) => Buffer.from(b),
      (b: Buffer) => b,
      body,
      { deadline: Infinity },
      (err) => {
        client.close();
        if (err) resolve(err);
        else reject(new Error(`${path} unexpectedly succeeded`));
      },
    );
  });
}

async function rejection(p: Promise<unknown>): Promise<TscmigError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(TscmigError);
    return e as TscmigError;
  }
  throw new Error("expected the call to fail");
}

describe("rpc adapter over a real server", () => {
  let server: RpcServer;
  let observed: Observed;
  let address = "";

  beforeAll(async () => {
    const built = testImpl();
    observed = built.observed;
    server = createRpcServer({
      services: [built.registration],
      maxMessageBytes: MAX_MESSAGE_BYTES,
      log: (obj, msg) => observed.logs.push({ obj, msg }),
    });
    const { port } = await server.listen("127.0.0.1:0");
    expect(port).toBeGreaterThan(0);
    address = `127.0.0.1:${port}`;
  });

  afterAll(async () => {
    await server?.shutdown(2_000);
  });

  it("answers a unary call and round-trips 64-bit values", async () => {
    const client = createRpcClient(MigrationService, address);
    try {
      expect(await client.ping({})).toBeDefined();
      const res = await client.resolve({ migrationId: "m-1", vmId: "vm-1" });
      expect(res.decision).toBe(Decision.COMMITTED);
      expect(res.generation).toBe(GENERATION_BIG);
      const unknown = await client.resolve({ migrationId: "m-2", vmId: "vm-1" });
      expect(unknown.decision).toBe(Decision.UNKNOWN);
    } finally {
      client.close();
    }
  });

  it("carries a TscmigError across the wire: code, message, field, reason, gRPC status 9", async () => {
    const client = createRpcClient(MigrationService, address);
    try {
      const e = await rejection(client.prepare({ migrationId: "m-1", guestTscKhz: 2_500_000n }));
      expect(e.code).toBe("failed_precondition");
      expect(e.message).toBe("destination host cannot scale the TSC");
      expect(e.field).toBe("guestTscKhz");
      expect(e.reason).toBe("tsc_scaling_missing");
    } finally {
      client.close();
    }
    const wire = await bareCall(address, `/${SERVICE}/Prepare`, new Uint8Array());
    expect(wire.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(wire.code).toBe(9);
    expect(wire.details).toBe("destination host cannot scale the TSC");
    expect(wire.metadata.get("tscmig-code")).toEqual(["failed_precondition"]);
    expect(wire.metadata.get("tscmig-field")).toEqual(["guestTscKhz"]);
    expect(wire.metadata.get("tscmig-reason")).toEqual(["tsc_scaling_missing"]);
  });

  it("refuses garbage and truncated requests with invalid_argument, then keeps serving", async () => {
    const client = createRpcClient(MigrationService, address);
    try {
      // Field 0 is never valid, and wire type 7 does not exist.
      const garbage = Uint8Array.from([0x07, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
      const g = await rejection(client.raw("Prepare", garbage));
      expect(g.code).toBe("invalid_argument");
      expect(g.message).toMatch(/not a valid tscmig\.v1\.PrepareRequest/);

      const valid = toBinary(PrepareRequestSchema, create(PrepareRequestSchema, { migrationId: "migration-0001", vmId: "vm-1" }));
      const truncated = valid.subarray(0, 6); // inside migration_id's 14 bytes
      const t = await rejection(client.raw("Prepare", truncated));
      expect(t.code).toBe("invalid_argument");
      expect(t.message).toMatch(/PrepareRequest/);

      // The same holds for a method whose request has no fields at all (unknown fields are parsed).
      const p = await rejection(client.raw("Ping", Uint8Array.from([0x0a, 0x10, 0x61])));
      expect(p.code).toBe("invalid_argument");

      const wire = await bareCall(address, `/${SERVICE}/Prepare`, garbage);
      expect(wire.code).toBe(grpc.status.INVALID_ARGUMENT);

      expect(await client.ping({})).toBeDefined();
      expect(await client.raw("Ping", new Uint8Array())).toHaveLength(0);
    } finally {
      client.close();
    }
  });

  it("refuses a message larger than maxMessageBytes with resource_exhausted", async () => {
    const client = createRpcClient(MigrationService, address);
    try {
      const fits = await client.transfer({ snapshot: { vcpus: { pvclockRecords: new Uint8Array(32 * 1024) } } });
      expect(fits.destinationHoldNs).toBe(32n * 1024n);
      const e = await rejection(client.transfer({ snapshot: { vcpus: { pvclockRecords: new Uint8Array(MAX_MESSAGE_BYTES + 1) } } }));
      expect(e.code).toBe("resource_exhausted");
      const r = await rejection(client.raw("Transfer", new Uint8Array(MAX_MESSAGE_BYTES * 2)));
      expect(r.code).toBe("resource_exhausted");
      expect(await client.ping({})).toBeDefined();
    } finally {
      client.close();
    }
  });

  it("refuses to send a message larger than the client's own maxMessageBytes", async () => {
    const client = createRpcClient(MigrationService, address, { maxMessageBytes: 1024 });
    try {
      const e = await rejection(client.transfer({ snapshot: { vcpus: { pvclockRecords: new Uint8Array(4096) } } }));
      expect(e.code).toBe("resource_exhausted");
    } finally {
      client.close();
    }
  });

  it("fails with deadline_exceeded when the server does not answer in time, and the handler sees the cancel", async () => {
    const client = createRpcClient(MigrationService, address);
    try {
      const e = await rejection(client.probe({ migrationId: "hang" }, { deadlineNs: 200_000_000n }));
      expect(e.code).toBe("deadline_exceeded");
      await observed.probeCancelled;
    } finally {
      client.close();
    }
  });

  it("answers internal with a generic message when a handler throws something else, and logs it", async () => {
    const client = createRpcClient(MigrationService, address);
    try {
      const e = await rejection(client.resolve({ migrationId: "boom" }));
      expect(e.code).toBe("internal");
      expect(e.message).not.toMatch(/secret/);
      expect(observed.logs.some((l) => l.obj.event === "rpc.handler_failed" && JSON.stringify(l.obj).includes("secret internal detail"))).toBe(true);

      const u = await rejection(client.resolve({ migrationId: "unencodable" }));
      expect(u.code).toBe("internal");
      expect(observed.logs.some((l) => l.obj.event === "rpc.encode_failed")).toBe(true);
      expect(await client.ping({})).toBeDefined();
    } finally {
      client.close();
    }
  });

  it("serves a bidi exchange: one answer per message, in order, with per-call state", async () => {
    const client = createRpcClient(MigrationService, address);
    try {
      const a = client.handover();
      const b = client.handover();
      expect((await a.send({ step: { case: "open", value: { migrationId: "m-1" } } })).step.case).toBe("opened");
      // Sent back to back without waiting: the answers still come one per message, in order.
      const answers = await Promise.all([1, 2, 3].map(() => a.send({ step: { case: "transfer", value: {} } })));
      expect(answers.map((r) => (r.step.case === "transfer" ? r.step.value.destinationHoldNs : -1n))).toEqual([2n, 3n, 4n]);
      const other = await b.send({ step: { case: "transfer", value: {} } });
      expect(other.step.case === "transfer" && other.step.value.destinationHoldNs).toBe(1n); // its own count
      expect(a.live && b.live).toBe(true);
      a.close();
      b.close();
      expect(a.live).toBe(false);
    } finally {
      client.close();
    }
  });

  it("ends an exchange with the refused message's typed error; later sends fail alike, the server serves on", async () => {
    const client = createRpcClient(MigrationService, address);
    try {
      const x = client.handover();
      await x.send({ step: { case: "open", value: { migrationId: "m-1" } } });
      const e = await rejection(x.send({ step: { case: "commit", value: { migrationId: "m-1" } } }));
      expect(e.code).toBe("failed_precondition");
      expect(e.field).toBe("commit");
      expect(e.reason).toBe("test_refusal");
      expect(x.live).toBe(false);
      expect((await rejection(x.send({ step: { case: "transfer", value: {} } }))).code).toBe("failed_precondition");
      // A message that does not decode ends its call with invalid_argument.
      const g = client.handover();
      const bad = await rejection(g.sendRaw(Uint8Array.of(0x0a, 0xff, 0xff, 0xff)));
      expect(bad.code).toBe("invalid_argument");
      expect(await client.ping({})).toBeDefined();
    } finally {
      client.close();
    }
  });

  it("answers unimplemented for a method without a handler", async () => {
    const client = createRpcClient(MigrationService, address);
    try {
      const e = await rejection(client.abort({ migrationId: "m-1" }));
      expect(e.code).toBe("unimplemented");
    } finally {
      client.close();
    }
  });

  it("fails with unavailable when nothing listens", async () => {
    const probe = createRpcServer({ services: [] });
    const { port } = await probe.listen("127.0.0.1:0");
    await probe.shutdown(0);
    const client = createRpcClient(MigrationService, `127.0.0.1:${port}`, { deadlineNs: 5_000_000_000n });
    try {
      const e = await rejection(client.ping({}));
      expect(e.code).toBe("unavailable");
    } finally {
      client.close();
    }
  });

  it("refuses to listen on a port already taken, with a TscmigError", async () => {
    const second = createRpcServer({ services: [] });
    try {
      const e = await rejection(second.listen(address));
      expect(e.code).toBe("unavailable");
      expect(e.message).toContain(address);
    } finally {
      await second.shutdown(0);
    }
  });

  it("reports health through grpc.health.v1.Health and follows setServing", async () => {
    const health = createRpcClient(Health, address);
    try {
      expect((await health.check({ service: SERVICE })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
      expect((await health.check({ service: "" })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
      server.setServing(SERVICE, false);
      expect((await health.check({ service: SERVICE })).status).toBe(HealthCheckResponse_ServingStatus.NOT_SERVING);
      expect((await health.check({ service: "" })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
      server.setServing("", false);
      expect((await health.check({ service: "" })).status).toBe(HealthCheckResponse_ServingStatus.NOT_SERVING);
      const e = await rejection(health.check({ service: "no.such.Service" }));
      expect(e.code).toBe("not_found");
    } finally {
      server.setServing(SERVICE, true);
      server.setServing("", true);
      health.close();
    }
  });
});

/** A grpc.health.v1.Health/Watch stream read with a bare grpc-js client (server streaming). */
function watchHealth(address: string, service: string): { seen: (status: HealthCheckResponse_ServingStatus) => Promise<void>; close: () => void } {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const statuses: HealthCheckResponse_ServingStatus[] = [];
  const waiters: Array<{ status: HealthCheckResponse_ServingStatus; resolve: () => void }> = [];
  const call = client.makeServerStreamRequest(
    "/grpc.health.v1.Health/Watch",
    (req: HealthCheckRequest) => Buffer.from(toBinary(HealthCheckRequestSchema, req)),
    (buf: Buffer) => fromBinary(HealthCheckResponseSchema, buf),
    create(HealthCheckRequestSchema, { service }),
  );
  call.on("data", (res: HealthCheckResponse) => {
    statuses.push(res.status);
    for (const w of waiters.filter((x) => x.status === res.status)) w.resolve();
  });
  call.on("error", () => {}); // cancelled or cut at shutdown: expected
  return {
    seen: (status) => (statuses.includes(status) ? Promise.resolve() : new Promise((resolve) => waiters.push({ status, resolve }))),
    close: () => {
      call.cancel();
      client.close();
    },
  };
}

/** A Handover call opened on a plain grpc-js client, nothing sent; its status when it ends (the deadline only stops a test that would hang). */
function bareHandover(client: grpc.Client): { call: grpc.ClientDuplexStream<Uint8Array, Buffer>; status: Promise<grpc.StatusObject> } {
  const call = client.makeBidiStreamRequest("/tscmig.v1.MigrationService/Handover", (b: Uint8Array) => Buffer.from(b), (b: Buffer) => b, new grpc.Metadata(), { deadline: Date.now() + 20_000 });
  call.on("error", () => {});
  call.on("data", () => {});
  return { call, status: new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve)) };
}

describe("rpc authorize on an exchange", () => {
  it("ends a refused caller's exchange at once, before any message (no stream parked until one comes)", async () => {
    const { registration } = testImpl();
    const authorize = (ctx: HandlerContext) => {
      if (ctx.metadata.get("authorization")[0] !== "Bearer ok") throw new TscmigError("unauthenticated", `${ctx.path}: no token`, { reason: "peer_unauthenticated" });
    };
    const server = createRpcServer({ services: [{ ...registration, authorize }] });
    const { port } = await server.listen("127.0.0.1:0");
    const address = `127.0.0.1:${port}`;
    const bare = new grpc.Client(address, grpc.credentials.createInsecure());
    try {
      // Nothing sent: the status must come by itself.
      const status = await bareHandover(bare).status;
      expect(status.code).toBe(grpc.status.UNAUTHENTICATED);
      expect(status.metadata.get("tscmig-reason")[0]).toBe("peer_unauthenticated");
      // Through the typed client: the first send fails with the refusal; an authorized caller is served.
      const refused = createRpcClient(MigrationService, address);
      const ok = createRpcClient(MigrationService, address, { headers: { authorization: "Bearer ok" } });
      try {
        expect((await rejection(refused.handover().send({ step: { case: "open", value: { migrationId: "m-1" } } }))).code).toBe("unauthenticated");
        expect((await ok.handover().send({ step: { case: "open", value: { migrationId: "m-1" } } })).step.case).toBe("opened");
      } finally {
        refused.close();
        ok.close();
      }
    } finally {
      bare.close();
      await server.shutdown(2_000);
    }
  });
});

describe("rpc open exchange calls", () => {
  it("keeps at most exchangeCallsMax open: one more is refused at once (resource_exhausted), and a slot frees when a call ends, however it ends", async () => {
    const { registration } = testImpl();
    const server = createRpcServer({ services: [{ ...registration, exchangeCallsMax: 2 }] });
    const { port } = await server.listen("127.0.0.1:0");
    const bare = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    const open = () => bareHandover(bare);
    try {
      const first = open();
      const second = open();
      // Silent, so they stay open; a third is refused without a message sent.
      const third = open();
      const refused = await third.status;
      expect(refused.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(refused.metadata.get("tscmig-reason")[0]).toBe("exchange_calls_limit");
      // One ends by half-close, one by cancel: both slots come back.
      first.call.end();
      expect((await first.status).code).toBe(grpc.status.OK);
      second.call.cancel();
      await second.status;
      // The server learns of the cancel a moment after this client does: a refused try is one round
      // trip, after which it has (bounded, no sleeping).
      const typed = createRpcClient(MigrationService, `127.0.0.1:${port}`);
      const OPEN = { step: { case: "open" as const, value: { migrationId: "m-1" } } };
      const held = async () => {
        for (let i = 0; i < 100; i++) {
          const x = typed.handover();
          const r = await x.send(OPEN).catch((e: unknown) => e as TscmigError);
          if (!(r instanceof TscmigError)) return x;
          expect(r.code).toBe("resource_exhausted");
        }
        throw new Error("no slot came back");
      };
      try {
        const again = [await held(), await held()];
        const fourth = await rejection(typed.handover().send(OPEN));
        expect(fourth).toMatchObject({ code: "resource_exhausted", reason: "exchange_calls_limit" });
        for (const x of again) x.close();
      } finally {
        typed.close();
      }
    } finally {
      bare.close();
      await server.shutdown(2_000);
    }
  });
});

/** A scheduler the test fires by hand, which says when a timer of `delayNs` is armed (an event, not a wait). */
function handScheduler(): { scheduler: Scheduler; armed: (delayNs: bigint) => Promise<() => void> } {
  const timers: Array<{ delayNs: bigint; fn: () => void; cancelled: boolean }> = [];
  const waiters: Array<{ delayNs: bigint; resolve: (fire: () => void) => void }> = [];
  const fireOf = (t: { fn: () => void; cancelled: boolean }) => () => {
    if (!t.cancelled) t.fn();
  };
  const scheduler: Scheduler = {
    after: (delayNs, fn) => {
      const t = { delayNs, fn, cancelled: false };
      timers.push(t);
      for (const w of waiters.splice(0)) {
        if (w.delayNs === delayNs) w.resolve(fireOf(t));
        else waiters.push(w);
      }
      return { cancel: () => (t.cancelled = true) };
    },
  };
  const armed = (delayNs: bigint) => {
    const t = timers.find((x) => x.delayNs === delayNs && !x.cancelled);
    return t ? Promise.resolve(fireOf(t)) : new Promise<() => void>((resolve) => waiters.push({ delayNs, resolve }));
  };
  return { scheduler, armed };
}

describe("rpc exchange call deadlines", () => {
  const OPEN = { step: { case: "open" as const, value: { migrationId: "m-1" } } };

  it("ends a call that sent nothing within exchangeFirstMessageNs (deadline_exceeded, exchange_idle) and frees its slot", async () => {
    const { scheduler, armed } = handScheduler();
    const { registration } = testImpl();
    const server = createRpcServer({ services: [{ ...registration, exchangeCallsMax: 1 }], scheduler });
    const { port } = await server.listen("127.0.0.1:0");
    const bare = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    const typed = createRpcClient(MigrationService, `127.0.0.1:${port}`);
    try {
      const silent = bareHandover(bare);
      // The server arms the deadline when the call reaches it; the test moves time past it.
      const fire = await Promise.race([armed(LIMITS.exchangeFirstMessageNs), silent.status.then((s) => Promise.reject(new Error(`call ended unarmed: ${s.code} ${s.details}`)))]);
      fire();
      const status = await silent.status;
      expect(status.code).toBe(grpc.status.DEADLINE_EXCEEDED);
      expect(status.metadata.get("tscmig-code")[0]).toBe("deadline_exceeded");
      expect(status.metadata.get("tscmig-reason")[0]).toBe("exchange_idle");
      // Its one slot is free again: a new call is served at once, not refused with exchange_calls_limit.
      const next = typed.handover();
      expect((await next.send(OPEN)).step.case).toBe("opened");
      next.close();
    } finally {
      typed.close();
      bare.close();
      await server.shutdown(2_000);
    }
  });

  it("leaves a call whose first message came in time alone when the first-message deadline passes", async () => {
    const { scheduler, armed } = handScheduler();
    const { registration } = testImpl();
    const server = createRpcServer({ services: [registration], scheduler });
    const { port } = await server.listen("127.0.0.1:0");
    const typed = createRpcClient(MigrationService, `127.0.0.1:${port}`);
    try {
      const x = typed.handover();
      const fire = await armed(LIMITS.exchangeFirstMessageNs);
      expect((await x.send(OPEN)).step.case).toBe("opened");
      // The deadline passes after the first message: the call stays open and answers the next one.
      fire();
      const transfer = await x.send({ step: { case: "transfer", value: {} } });
      expect(transfer.step.case).toBe("transfer");
      expect(x.live).toBe(true);
      x.close();
    } finally {
      typed.close();
      await server.shutdown(2_000);
    }
  });

  it("ends a call still open after exchangeCallNsMax, busy or not (deadline_exceeded, exchange_lifetime), and frees its slot", async () => {
    const { scheduler, armed } = handScheduler();
    const { registration } = testImpl();
    const server = createRpcServer({ services: [{ ...registration, exchangeCallsMax: 1 }], scheduler });
    const { port } = await server.listen("127.0.0.1:0");
    // The call's own deadline is far past the server's limit: only the server's cut can end it.
    const typed = createRpcClient(MigrationService, `127.0.0.1:${port}`, { deadlineNs: LIMITS.exchangeCallNsMax });
    try {
      const x = typed.handover();
      const expire = await armed(LIMITS.exchangeCallNsMax);
      expect((await x.send(OPEN)).step.case).toBe("opened");
      expire();
      const e = await rejection(x.send({ step: { case: "transfer", value: {} } }));
      expect(e).toMatchObject({ code: "deadline_exceeded", reason: "exchange_lifetime" });
      expect(x.live).toBe(false);
      // The slot is free again: a new call is served, not refused with exchange_calls_limit.
      const next = typed.handover();
      expect((await next.send(OPEN)).step.case).toBe("opened");
      next.close();
    } finally {
      typed.close();
      await server.shutdown(2_000);
    }
  });
});

describe("rpc server shutdown", () => {
  it("marks everything NOT_SERVING, lets calls run, and cuts them when the grace ends", async () => {
    // A scheduler the test fires by hand: the grace period ends when the test says so.
    const timers: Array<{ delayNs: bigint; fn: () => void }> = [];
    const scheduler = { after: (delayNs: bigint, fn: () => void) => (timers.push({ delayNs, fn }), { cancel: () => {} }) };
    const { registration, observed } = testImpl();
    const server = createRpcServer({ services: [registration], scheduler });
    const { port } = await server.listen("127.0.0.1:0");
    const address = `127.0.0.1:${port}`;
    const client = createRpcClient(MigrationService, address, { deadlineNs: 60_000_000_000n });
    const watch = watchHealth(address, SERVICE);
    try {
      await watch.seen(HealthCheckResponse_ServingStatus.SERVING);
      const hanging = rejection(client.probe({ migrationId: "hang" }));
      await observed.probeStarted;

      const done = server.shutdown(5_000);
      await watch.seen(HealthCheckResponse_ServingStatus.NOT_SERVING);
      expect(timers.map((t) => t.delayNs)).toEqual([5_000_000_000n]);
      timers[0]?.fn(); // the grace period is over
      await done;
      // A call cut by the shutdown is retryable: unavailable (CANCELLED on the wire).
      expect((await hanging).code).toBe("unavailable");
      await observed.probeCancelled;
      expect((await rejection(client.ping({}))).code).toBe("unavailable");
    } finally {
      watch.close();
      client.close();
    }
  });
});

const opensslMissing = opensslMissingReason();
if (opensslMissing !== undefined) console.log(`skipping mutual TLS tests: ${opensslMissing}`);

describe("rpc over mutual TLS", () => {
  let dir = "";
  let pki: TestPki;
  let server: RpcServer;
  let port = 0;

  beforeAll(async () => {
    if (opensslMissing !== undefined) return;
    dir = await mkdtemp(join(tmpdir(), "tscmig-pki-"));
    pki = await makeTestPki(dir);
    server = createRpcServer({
      services: [testImpl().registration],
      tls: { certPem: pki.serverCertPem, keyPem: pki.serverKeyPem, caPem: pki.caPem, requireClientCert: true },
    });
    ({ port } = await server.listen("127.0.0.1:0"));
  });

  afterAll(async () => {
    await server?.shutdown(2_000);
    if (dir !== "") await rm(dir, { recursive: true, force: true });
  });

  it.skipIf(opensslMissing !== undefined)("serves a client with a certificate from the trusted CA", async () => {
    const client = createRpcClient(MigrationService, `127.0.0.1:${port}`, {
      tls: { caPem: pki.caPem, certPem: pki.clientCertPem, keyPem: pki.clientKeyPem },
    });
    const byName = createRpcClient(MigrationService, `127.0.0.1:${port}`, {
      tls: { caPem: pki.caPem, certPem: pki.clientCertPem, keyPem: pki.clientKeyPem, serverName: "localhost" },
    });
    try {
      expect(await client.ping({})).toBeDefined();
      expect((await client.resolve({ migrationId: "m-1", vmId: "vm-1" })).generation).toBe(GENERATION_BIG);
      expect(await byName.ping({})).toBeDefined();
    } finally {
      client.close();
      byName.close();
    }
  });

  it.skipIf(opensslMissing !== undefined)("refuses a client without a certificate", async () => {
    const client = createRpcClient(MigrationService, `127.0.0.1:${port}`, { tls: { caPem: pki.caPem }, deadlineNs: 10_000_000_000n });
    try {
      const e = await rejection(client.ping({}));
      expect(e.code).toBe("unavailable");
    } finally {
      client.close();
    }
  });

  it.skipIf(opensslMissing !== undefined)("refuses a client that trusts another CA, and one whose certificate another CA signed", async () => {
    const wrongTrust = createRpcClient(MigrationService, `127.0.0.1:${port}`, {
      tls: { caPem: pki.otherCaPem, certPem: pki.clientCertPem, keyPem: pki.clientKeyPem },
      deadlineNs: 10_000_000_000n,
    });
    const wrongCert = createRpcClient(MigrationService, `127.0.0.1:${port}`, {
      tls: { caPem: pki.caPem, certPem: pki.otherClientCertPem, keyPem: pki.otherClientKeyPem },
      deadlineNs: 10_000_000_000n,
    });
    try {
      expect((await rejection(wrongTrust.ping({}))).code).toBe("unavailable");
      expect((await rejection(wrongCert.ping({}))).code).toBe("unavailable");
    } finally {
      wrongTrust.close();
      wrongCert.close();
    }
  });

  it.skipIf(opensslMissing !== undefined)("refuses a plaintext client", async () => {
    const client = createRpcClient(MigrationService, `127.0.0.1:${port}`, { deadlineNs: 10_000_000_000n });
    try {
      expect((await rejection(client.ping({}))).code).toBe("unavailable");
    } finally {
      client.close();
    }
  });
});
