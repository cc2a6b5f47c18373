// The dashboard's routes: the page and its assets (`/ui/`, with `/` redirecting there), the live
// event stream (`GET /v1/events`) and the stream's session cookie. Registered by the daemon with
// one call; everything else the page does goes through the ordinary control API.
//
// The token (docs/operations.md#security-tls-peer-tokens-the-control-api-token), when the daemon has one:
// - The page and its assets are public: static code, no data, nothing of the token.
// - The page asks for the token once (or takes it from the URL fragment, `/ui/#token=…`, which a
//   browser never sends to a server, so it appears in no log), keeps it in the tab's
//   sessionStorage, and sends it as `Authorization: Bearer` on every API call.
// - A browser's EventSource cannot send headers, so the page first calls
//   `POST /v1/events/session` with its bearer token and gets a short-lived cookie, signed with a key
//   derived from the token, HttpOnly, SameSite=Strict and scoped to `Path=/v1/events`: the stream
//   accepts it, nothing else does. A token never travels in a URL, so it is never in a log line.
// - `tscmig watch` and other programs just send the bearer header to `GET /v1/events`.

import { createHmac, timingSafeEqual } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { TscmigError } from "../shared/errors.js";
import type { RingHistory } from "../shared/history.js";
import { errorResponses } from "../shared/http/json-schemas.js";
import { LIMITS } from "../shared/limits.js";
import type { Logger } from "../shared/logger.js";
import type { Clock, Scheduler } from "../shared/time/clock.js";
import { offsetModelToJson } from "../shared/time/offset-model.js";
import { webAssetsDir } from "../shared/web-assets.js";
import { restoreReportFromJournal } from "../shared/migration/report.js";
import { PVCLOCK_GUEST_STOPPED } from "../shared/kvm/pvclock.js";
import { type DashboardSource, DashboardFeed, type InboundMigration, type PeerInfo } from "./dashboard-feed.js";
import { EventHub, type FrameSink } from "./events.js";
import type { TscmigNode } from "./node.js";
import type { ConfiguredPeer } from "./peers-config.js";

export const EVENTS_COOKIE = "tscmig_events";
const SESSION_TTL_NS = 300_000_000_000n; // 5 min: the page renews it every minute while open
const HEARTBEAT_INTERVAL_NS = 5_000_000_000n;
const TICK_INTERVAL_NS = 1_000_000_000n;

export interface UiRoutesOptions {
  node: TscmigNode;
  history: RingHistory;
  clock: Clock;
  scheduler: Scheduler;
  log: Logger;
  token?: string;
  peers: readonly ConfiguredPeer[];
  /** Distinguishes this run's event ids from another run's (any short token). */
  streamId: string;
  /** Where the built web assets are (default: the package's dist/web). */
  assetsDir?: string;
}

export interface UiHandle {
  hub: EventHub;
  feed: DashboardFeed;
}

/** The node as the dashboard reads it (DashboardSource): reads only, no state of its own. */
export function nodeDashboardSource(node: TscmigNode, peers: readonly ConfiguredPeer[]): DashboardSource {
  const inboundOf = (rec: { migrationId: string; vmId: string; generation: bigint; peer: string; phase: string; decision: string; report?: string; updatedNs: bigint }): InboundMigration => ({
    migrationId: rec.migrationId,
    vmId: rec.vmId,
    generation: rec.generation,
    sourceGrpc: rec.peer,
    phase: rec.phase,
    decision: rec.decision,
    ...(rec.report ? { report: restoreReportFromJournal(rec.report) } : {}),
    updatedNs: rec.updatedNs,
  });
  return {
    epochNs: node.host.epochNs,
    skewNsAt: (trueNs) => node.host.skew.offsetAt(trueNs),
    host: () => {
      const h = node.host;
      const trueNs = h.trueNs();
      return {
        name: h.info.name,
        grpc: node.cfg.grpcAdvertise,
        trueNs,
        epochNs: h.epochNs,
        realtimeNs: h.realtimeNsAt(trueNs),
        skewNs: h.skew.offsetAt(trueNs),
        maxerrorNs: h.maxerrorNs(),
        skewModel: offsetModelToJson(h.skew.state.model),
        tscKhz: h.info.tscKhz,
        vendor: h.info.vendor.name,
        fracBits: h.info.vendor.fracBits,
        tscScaling: h.info.tscScaling,
      };
    },
    vmIds: () => node.listVms().map((h) => h.id),
    peekVm: (id) => {
      let h;
      try {
        h = node.getVm(id);
      } catch {
        return null; // not here, or gone (handed off) between the listing and the read
      }
      const vm = h.vm;
      const ntp = h.guest.exportState().ntp;
      const vcpusRead = Math.min(vm.vcpuCount, 64);
      let stopped = 0;
      for (let i = 0; i < vcpusRead; i++) if ((vm.pvclock.flags(i) & PVCLOCK_GUEST_STOPPED) !== 0) stopped++;
      const page = vm.vmclock();
      return {
        id,
        generation: h.generation,
        role: h.role,
        running: vm.running,
        vcpus: vm.vcpuCount,
        guestTscKhz: vm.guestTscKhz,
        clocksource: h.guest.clocksource,
        ntp: { status: ntp.status, maxerrorUs: ntp.maxerrorUs, esterrorUs: ntp.esterrorUs },
        handledMigrations: h.guest.handledCount,
        stoppedVcpus: stopped,
        vcpusRead,
        vmclock: { disruptionMarker: page.disruptionMarker, clockStatus: page.clockStatus, seqCount: page.seqCount },
        migrating: h.lock,
      };
    },
    outbound: () => node.reports,
    inbound: (limit) =>
node.journal.listMigrations({ role: "destination", newest: limit }).map(inboundOf),
    inboundPending: (vmId, generation) => {
      const inb = node.destination.heldFor(vmId, generation);
      if (inb) {
        const r = inb.req;
        return { migrationId: r.migrationId, vmId, generation, sourceGrpc: r.sourceGrpc, sourceName: r.sourceName, policy: r.policy, estimator: r.estimator, doorbell: r.doorbell };
      }
      return null;
    },
    inboundRecord: (id, sourceName) => {
      const rec = node.journal.getInboundMigration(sourceName, id);
      return rec && rec.role === "destination" ? inboundOf(rec) : null;
    },
    configuredPeers: () => peers.map((p): PeerInfo => ({ name: p.name, grpc: p.grpc, ...(p.http ? { http: p.http } : {}), via: "configured" })),
  };
}

export function defaultAssetsDir(): string {
  return webAssetsDir();
}

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".map": "application/json",
};

/** The built assets, read once: a missing build is reported by the page's route, not by a crash. */
function loadAssets(dir: string): Map<string, { body: Buffer; type: string }> {
  const out = new Map<string, { body: Buffer; type: string }>();
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir)) {
    const ext = name.slice(name.lastIndexOf("."));
    const type = CONTENT_TYPES[ext];
    if (type !== undefined && /^[a-z0-9][a-z0-9.-]{0,63}$/.test(name)) out.set(name, { body: readFileSync(join(dir, name)), type });
  }
  return out;
}

// Scripts and styles from this origin only; the chart library sets element styles from script
// (CSSOM), which this policy allows without 'unsafe-inline'.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

function sendAsset(reply: FastifyReply, asset: { body: Buffer; type: string }): FastifyReply {
  return reply
    .header("content-type", asset.type)
    .header("cache-control", "no-cache")
    .header("x-content-type-options", "nosniff")
    .header("content-security-policy", CSP)
    .header("referrer-policy", "no-referrer")
    .send(asset.body);
}

/** Mints and checks the stream's session cookie. The key is derived from the token: no token, no cookie. */
export class EventsSession {
  private readonly key: Buffer;
  constructor(
    token: string,
    private readonly clock: Clock,
  ) {
    this.key = createHmac("sha256", token).update("tscmig events session v1").digest();
  }

  private sign(expiresNs: bigint): string {
    return createHmac("sha256", this.key).update(expiresNs.toString()).digest("base64url");
  }

  mint(): { value: string; maxAgeS: number } {
    const expires = this.clock.monotonicNs() + SESSION_TTL_NS;
    return { value: `${expires}.${this.sign(expires)}`, maxAgeS: Number(SESSION_TTL_NS / 1_000_000_000n) };
  }

  valid(value: string): boolean {
    const m = /^([0-9]{1,20})\.([A-Za-z0-9_-]{43})$/.exec(value);
    if (!m) return false;
    const expires = BigInt(m[1] as string);
    const expected = Buffer.from(this.sign(expires));
    const given = Buffer.from(m[2] as string);
    return given.length === expected.length && timingSafeEqual(given, expected) && expires > this.clock.monotonicNs();
  }
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? "").split(";")) {
    const i = part.indexOf("=");
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

function bearerOk(header: string | undefined, token: string): boolean {
  const m = /^Bearer +(\S+) *$/i.exec(header ?? "");
  if (m === null) return false;
  const a = createHmac("sha256", "cmp").update(m[1] as string).digest();
  const b = createHmac("sha256", "cmp").update(token).digest();
  return timingSafeEqual(a, b);
}

/** A hijacked HTTP response as a frame sink. */
function responseSink(req: FastifyRequest, reply: FastifyReply): FrameSink {
  const res = reply.raw;
  return {
    write: (frame) => res.write(frame),
    onDrain: (fn) => void res.on("drain", fn),
    onClose: (fn) => {
      res.on("close", fn);
      req.raw.on("close", fn);
    },
    end: () => res.end(),
    abort: () => res.destroy(),
  };
}

export function uiRoutes(app: FastifyInstance, o: UiRoutesOptions): UiHandle {
  const assets = loadAssets(o.assetsDir ?? defaultAssetsDir());
  const source = nodeDashboardSource(o.node, o.peers);
  const hub: EventHub = new EventHub({
    streamId: o.streamId,
    scheduler: o.scheduler,
    streamsMax: LIMITS.eventStreamsMax,
    queueFramesMax: LIMITS.eventQueueFramesMax,
    replayMax: LIMITS.eventReplayMax,
    heartbeatIntervalNs: HEARTBEAT_INTERVAL_NS,
    heartbeat: (): unknown => ({ trueNs: o.node.host.trueNs().toString(), streams: hub.streamCount }),
  });
  const feed = new DashboardFeed({ source, history: o.history, hub, scheduler: o.scheduler, tickIntervalNs: TICK_INTERVAL_NS, vmsShownMax: 64, samplesPerVmMax: 600, migrationsMax: 100 });
  const session = o.token !== undefined ? new EventsSession(o.token, o.clock) : null;
  feed.start();
  app.addHook("preClose", async () => {
    feed.stop();
    hub.close();
  });
  // Skew set through the API shows at once, not at the next tick.
  app.addHook("onResponse", async (req, reply) => {
    if (req.method === "PUT" && req.routeOptions.url === "/v1/host/clock" && reply.statusCode === 200) feed.hostChanged();
  });

  const redirect = { schema: { hide: true, response: { 302: { type: "null" } } }, config: { public: true } } as const;
  app.get("/", redirect, async (_req, reply) => reply.redirect("/ui/"));
  app.get("/ui", redirect, async (_req, reply) => reply.redirect("/ui/"));
  const page = { schema: { hide: true, response: { 200: { type: "string" }, ...errorResponses } }, config: { public: true } } as const;
  app.get("/ui/", page, async (_req, reply) => {
    const index = assets.get("index.html");
    if (!index) throw new TscmigError("unavailable", "the dashboard's assets are not built: run `npm run build`");
    return sendAsset(reply, index);
  });
  app.get("/ui/:file", { ...page, schema: { ...page.schema, params: { type: "object", properties: { file: { type: "string", pattern: "^[a-z0-9][a-z0-9.-]{0,63}$" } }, required: ["file"] } } }, async (req, reply) => {
    const asset = assets.get((req.params as { file: string }).file);
    if (!asset) throw new TscmigError("not_found", `no dashboard asset ${(req.params as { file: string }).file}`);
    return sendAsset(reply, asset);
  });

  app.post(
    "/v1/events/session",
    {
      schema: {
        summary: "A short-lived cookie that lets a browser's EventSource (which cannot send headers) open GET /v1/events; needs the bearer token",
        operationId: "createEventsSession",
        tags: ["events"],
        response: { 200: { type: "object", description: "whether a cookie was set, and for how long", required: ["cookie"], properties: { cookie: { type: "boolean", description: "false: this daemon has no token, the stream is open" }, expiresInS: { type: "integer" } } }, ...errorResponses },
      },
    },
    async (_req, reply) => {
      if (session === null) return { cookie: false };
      const c = session.mint();
      void reply.header("set-cookie", `${EVENTS_COOKIE}=${c.value}; Path=/v1/events; Max-Age=${c.maxAgeS}; HttpOnly; SameSite=Strict`);
      return { cookie: true, expiresInS: c.maxAgeS };
    },
  );

  app.get(
    "/v1/events",
    {
      // Checked here rather than by the bearer hook: the stream also takes the session cookie.
      config: { public: true },
      schema: {
        summary: "Live server-sent events: state, host, vm, vm-gone, sample, guest, migration, peers, heartbeat, reset, bye (JSON, 64-bit values as decimal strings)",
        description:
          "Needs the bearer token (or the cookie of POST /v1/events/session) when the daemon has one. Resumes after Last-Event-ID (header, or the lastEventId query) when those events are still kept; otherwise the stream starts with a state event.",
        operationId: "streamEvents",
        tags: ["events"],
        querystring: { type: "object", additionalProperties: false, properties: { lastEventId: { type: "string", pattern: "^[A-Za-z0-9-]{1,64}$" } } },
        response: { 200: { type: "string", description: "text/event-stream" }, ...errorResponses },
      },
    },
    async (req, reply) => {
      if (o.token !== undefined && session !== null) {
        const cookie = cookieValue(req.headers.cookie, EVENTS_COOKIE);
        if (!bearerOk(req.headers.authorization, o.token) && !(cookie !== undefined && session.valid(cookie)))
          throw new TscmigError("unauthenticated", "missing or invalid bearer token or events session");
      }
      const header = req.headers["last-event-id"];
      const q = req.query as { lastEventId?: string };
      const lastEventId = q.lastEventId ?? (typeof header === "string" && /^[A-Za-z0-9-]{1,64}$/.test(header) ? header : undefined);
      if (hub.streamCount >= LIMITS.eventStreamsMax)
        throw new TscmigError("resource_exhausted", `at most ${LIMITS.eventStreamsMax} event streams at once`, { reason: "event_streams_limit" });
      reply.hijack();
      reply.raw.writeHead(200, {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-cache, no-transform",
        connection: "keep-alive",
        "x-accel-buffering": "no",
      });
      try {
        hub.open(responseSink(req, reply), () => feed.state(), lastEventId);
      } catch (e) {
        reply.raw.end();
        o.log.warn({ event: "event_stream_refused", err: e instanceof Error ? e.message : String(e) }, "event stream refused");
      }
    },
  );
  return { hub, feed };
}
