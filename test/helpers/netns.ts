// Two hosts on one machine for tests: two network namespaces joined by a veth pair, made and
// removed by scripts/netns.sh (the one place that knows the topology). A test runs one process per
// side with `spawnIn`, reaches a port inside a namespace from the test process with `forward`, and
// `destroy` ends every process it started and deletes both namespaces, even after a failure.
//
// For the daemon tests (one daemon per namespace), with test/helpers/proc.ts:
//
//   const topo = await createTopology();
//   const dstHttp = await topo.forward("dst", 7070);            // 127.0.0.1:P here → dst's 127.0.0.1:7070
//   const dst = await startProcess({
//     name: "destination", command: process.execPath,
//     args: ["bin/tscmig.js", "daemon", "--name", "destination",
//            "--http", "0.0.0.0:7070", "--grpc", `${topo.dstAddr}:7071`, "--data", dir],
//     env: { TSCMIG_SKEW_OFFSET_NS: "5000000" },
//     spawn: topo.spawner("dst"),
//     readyUrl: `${dstHttp.url}/healthz`,
//   });
//   ...   // source in "src" the same way; it reaches destination at `${topo.dstAddr}:7071`
//   await dst.kill("SIGKILL"); await dst.restart();
//   await topo.destroy();                                         // in afterAll
//
// A fresh namespace has no listeners, so fixed ports (7070, 7071) never collide inside one.

import { type ChildProcess, type SpawnOptions, execFile, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { type Server, type Socket, connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { Spawner } from "./proc.js";

export const NETNS_SCRIPT = fileURLToPath(new URL("../../scripts/netns.sh", import.meta.url));

export type Side = "src" | "dst";

export interface Forward {
  /** Where the test process connects: 127.0.0.1 and a port of this (the host's) namespace. */
  host: string;
  port: number;
  /** `http://127.0.0.1:PORT` */
  url: string;
  close(): Promise<void>;
}

export interface Topology {
  /** Names the namespaces tscmig-src-ID and tscmig-dst-ID. */
  id: string;
  srcNs: string;
  dstNs: string;
  /** Addresses on the veth pair (10.231.X.1 and .2, /30), reachable only between the two namespaces. */
  srcAddr: string;
  dstAddr: string;
  /** Starts `cmd args` inside one namespace; the child's PID is the command's own (signals reach it). */
  spawnIn(side: Side, cmd: string, args: readonly string[], opts?: SpawnOptions): ChildProcess;
  /** `spawnIn` bound to one side, in the shape test/helpers/proc.ts takes. */
  spawner(side: Side): Spawner;
  /**
   * Makes `host:port` inside a namespace reachable from the test process at 127.0.0.1:P, through a
   * small relay inside the namespace that listens on a filesystem Unix socket (those ignore network
   * namespaces). No route or interface is added to the host's namespace.
   */
  forward(side: Side, port: number, host?: string): Promise<Forward>;
  /** Ends every process started here (SIGTERM, then SIGKILL after `graceMs`), closes forwards, deletes both namespaces. Idempotent. */
  destroy(graceMs?: number): Promise<void>;
}

let availability: { ok: boolean; reason?: string } | undefined;

/** Whether namespaces can be made here (Linux, root, iproute2, `ip netns add` and veth work); the reason when not. */
export function netnsAvailable(): { ok: boolean; reason?: string } {
  if (availability !== undefined) return availability;
  if (process.platform !== "linux") {
    availability = { ok: false, reason: `network namespaces need Linux, this is ${process.platform}` };
    return availability;
  }
  const r = spawnSync("bash", [NETNS_SCRIPT, "check"], { encoding: "utf8", timeout: 20_000 });
  if (r.error !== undefined) availability = { ok: false, reason: `cannot run ${NETNS_SCRIPT}: ${r.error.message}` };
  else if (r.status === 0) availability = { ok: true };
  else availability = { ok: false, reason: (r.stderr || r.stdout || `netns.sh check exited ${r.status}`).trim() };
  return availability;
}

function runScript(id: string, args: readonly string[], timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile("bash", [NETNS_SCRIPT, "-i", id, ...args], { encoding: "utf8", timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) reject(new Error(`netns.sh -i ${id} ${args.join(" ")}: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

function parseEnv(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) out[m[1] as string] = m[2] as string;
  }
  return out;
}

/** Leftover topologies of this worker, deleted synchronously if the worker exits before destroy(). */
const undestroyed = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const id of undestroyed) spawnSync("bash", [NETNS_SCRIPT, "-i", id, "down"], { timeout: 15_000 });
  });
}

let counter = 0;

/** A fresh id: this worker's pid, a counter and 2 random bytes, base 36 (at most 12 of [a-z0-9]). */
function newId(): string {
  counter += 1;
  const id = `${process.pid.toString(36)}${counter.toString(36)}${randomBytes(2).readUInt16LE().toString(36)}`;
  return id.slice(-12);
}

// Runs inside a namespace: accepts on the Unix socket argv[1], relays each connection to argv[2]:argv[3].
const RELAY_JS = `
const net = require("node:net");
const [sock, host, port] = process.argv.slice(1);
const server = net.createServer((c) => {
  const u = net.connect(Number(port), host);
  c.on("error", () => u.destroy());
  u.on("error", () => c.destroy());
  c.pipe(u);
  u.pipe(c);
});
server.listen(sock, () => console.log("relay ready"));
process.on("SIGTERM", () => process.exit(0));
`;

/** Creates both namespaces and the veth pair. If any step fails, what was made is deleted before the error is thrown. */
export async function createTopology(): Promise<Topology> {
  const avail = netnsAvailable();
  if (!avail.ok) throw new Error(`network namespaces unavailable: ${avail.reason}`);
  const id = newId();
  installExitHook();
  undestroyed.add(id);
  let env: Record<string, string>;
  try {
    env = parseEnv(await runScript(id, ["up"]));
    for (const k of ["SRC_NS", "DST_NS", "SRC_ADDR", "DST_ADDR"])
      if (env[k] === undefined) throw new Error(`netns.sh up printed no ${k}`);
  } catch (e) {
    await runScript(id, ["down"]).catch(() => undefined);
    undestroyed.delete(id);
    throw e;
  }

  const children = new Set<ChildProcess>();
  const forwards = new Set<{ server: Server; sockets: Set<Socket>; dir: string; relay: ChildProcess }>();
  let destroyed: Promise<void> | null = null;

  const spawnIn = (side: Side, cmd: string, args: readonly string[], opts: SpawnOptions = {}): ChildProcess => {
    if (destroyed !== null) throw new Error(`topology ${id} is destroyed`);
    if (side !== "src" && side !== "dst") throw new Error(`side must be "src" or "dst", not ${String(side)}`);
    // netns.sh exec → `exec ip netns exec` → execvp: one PID all the way down.
    const child = spawn("bash", [NETNS_SCRIPT, "-i", id, "exec", side, cmd, ...args], opts);
    children.add(child);
    child.once("close", () => children.delete(child));
    child.once("error", () => children.delete(child));
    return child;
  };

  const forward = async (side: Side, port: number, host = "127.0.0.1"): Promise<Forward> => {
    const dir = mkdtempSync(join(tmpdir(), "tscmig-fwd-"));
    const sock = join(dir, `${side}-${port}.sock`);
    const relay = spawnIn(side, process.execPath, ["-e", RELAY_JS, sock, host, String(port)], { stdio: ["ignore", "pipe", "pipe"] });
    const relayOutput: string[] = [];
    relay.stderr?.on("data", (c: Buffer) => relayOutput.push(c.toString("utf8")));
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`relay in ${side} not ready within 10 s`)), 10_000);
        const lines = createInterface({ input: relay.stdout as NodeJS.ReadableStream });
        lines.on("line", (l) => {
          if (l === "relay ready") {
            clearTimeout(timer);
            resolve();
          }
        });
        relay.once("close", (code, signal) => {
          clearTimeout(timer);
          reject(new Error(`relay in ${side} ended (${signal ?? code}) before it was ready: ${relayOutput.join("")}`));
        });
      });
    } catch (e) {
      relay.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
    const sockets = new Set<Socket>();
    const server = createServer((c) => {
      const u = connect(sock);
      sockets.add(c).add(u);
      c.once("close", () => sockets.delete(c));
      u.once("close", () => sockets.delete(u));
      c.on("error", () => u.destroy());
      u.on("error", () => c.destroy());
      c.pipe(u);
      u.pipe(c);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    const address = server.address();
    if (address === null || typeof address !== "object") throw new Error("forward: server has no port");
    const entry = { server, sockets, dir, relay };
    forwards.add(entry);
    const close = async () => {
      if (!forwards.delete(entry)) return;
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await endChild(relay, 2_000);
      rmSync(dir, { recursive: true, force: true });
    };
    return { host: "127.0.0.1", port: address.port, url: `http://127.0.0.1:${address.port}`, close };
  };

  const destroy = (graceMs = 5_000): Promise<void> => {
    destroyed ??= (async () => {
      try {
        for (const f of [...forwards]) {
          forwards.delete(f);
          for (const s of f.sockets) s.destroy();
          f.server.close();
          rmSync(f.dir, { recursive: true, force: true });
        }
        await Promise.all([...children].map((c) => endChild(c, graceMs)));
      } finally {
        // netns.sh down also ends whatever is still inside (processes our children started).
        await runScript(id, ["down"]);
        undestroyed.delete(id);
      }
    })();
    return destroyed;
  };

  return {
    id,
    srcNs: env.SRC_NS as string,
    dstNs: env.DST_NS as string,
    srcAddr: env.SRC_ADDR as string,
    dstAddr: env.DST_ADDR as string,
    spawnIn,
    spawner: (side) => (cmd, args, opts) => spawnIn(side, cmd, args, opts),
    forward,
    destroy,
  };
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the child has ended. */
function endChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill("SIGCONT");
      child.kill("SIGKILL");
    }, graceMs);
    child.once("close", () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill("SIGTERM");
  });
}
