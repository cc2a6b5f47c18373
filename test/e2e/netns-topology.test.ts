// Goal: the two-host topology the daemon tests run on really is two hosts — bytes cross the veth
// between the namespaces, and neither side can reach the other's loopback. Method: Node echo and
// HTTP servers inside dst, Node clients inside src, veth counters read inside dst; skipped with a
// printed reason where namespaces cannot be made (not root, no iproute2).

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createTopology, netnsAvailable, type Side, type Topology } from "../helpers/netns.js";
import { httpGet, startProcess, type ManagedProcess } from "../helpers/proc.js";

const avail = netnsAvailable();
if (!avail.ok) console.log(`skip: netns-topology: ${avail.reason}`);

const ECHO_PORT = 7000;
const LOOPBACK_ONLY_PORT = 7001;

// Echo server for dst: echoes on DST_ADDR:7000 and on 127.0.0.1:7001, prints each peer address.
const ECHO_SERVER_JS = `
const net = require("node:net");
const [addr, port, loPort] = process.argv.slice(1);
const echo = (c) => {
  console.log(JSON.stringify({ peer: c.remoteAddress, local: c.localAddress + ":" + c.localPort }));
  c.on("error", () => {});
  c.pipe(c);
};
let listening = 0;
const ready = () => { if (++listening === 2) console.log("echo ready"); };
net.createServer(echo).listen(Number(port), addr, ready);
net.createServer(echo).listen(Number(loPort), "127.0.0.1", ready);
process.on("SIGTERM", () => process.exit(0));
`;

// Client: sends a payload to host:port (argv: hex bytes, or "random:N" for N random bytes) and prints
// the size and sha256 of what came back and of what it sent; a connection error prints {error: code}.
const ECHO_CLIENT_JS = `
const net = require("node:net");
const crypto = require("node:crypto");
const [host, port, spec] = process.argv.slice(1);
const payload = spec.startsWith("random:") ? crypto.randomBytes(Number(spec.slice(7))) : Buffer.from(spec, "hex");
const sha = (b) => crypto.createHash("sha256").update(b).digest("hex");
const chunks = [];
let got = 0;
const c = net.connect({ host, port: Number(port), timeout: 5000 }, () => c.write(payload));
c.on("data", (d) => { chunks.push(d); got += d.length; if (got >= payload.length) c.end(); });
c.on("timeout", () => { console.log(JSON.stringify({ error: "TIMEOUT" })); process.exit(0); });
c.on("error", (e) => { console.log(JSON.stringify({ error: e.code })); process.exit(0); });
c.on("close", () => {
  if (got === 0) return;
  const back = Buffer.concat(chunks);
  console.log(JSON.stringify({ bytes: back.length, sha256: sha(back), sentSha256: sha(payload) }));
});
`;

// A daemon stand-in for dst: GET /healthz → 200 on 0.0.0.0:7070; SIGTERM → exit 0.
const HEALTHZ_SERVER_JS = `
const http = require("node:http");
const server = http.createServer((req, res) => {
  res.writeHead(req.url === "/healthz" ? 200 : 404, { "content-type": "application/json" });
  res.end(JSON.stringify({ ok: req.url === "/healthz", from: req.socket.remoteAddress }));
});
server.listen(7070, "0.0.0.0", () => console.log("listening on 7070"));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
`;

/** Runs a command inside `side` to completion (bounded) and returns its stdout. */
function runIn(topo: Topology, side: Side, cmd: string, args: readonly string[], timeoutMs = 15_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = topo.spawnIn(side, cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout?.on("data", (c: Buffer) => (out += c.toString("utf8")));
    child.stderr?.on("data", (c: Buffer) => (err += c.toString("utf8")));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${side}: ${cmd} ${args.join(" ")} ended ${signal ?? code}: ${err}${out}`));
    });
  });
}

function lastJson(text: string): Record<string, unknown> {
  const lines = text.trim().split("\n");
  return JSON.parse(lines[lines.length - 1] as string) as Record<string, unknown>;
}

async function vethBytes(topo: Topology, side: Side): Promise<{ rx: bigint; tx: bigint }> {
  // `ip netns exec` mounts the namespace's own /sys, so these are the counters of its veth0.
  const out = await runIn(topo, side, "cat", ["/sys/class/net/veth0/statistics/rx_bytes", "/sys/class/net/veth0/statistics/tx_bytes"]);
  const [rx, tx] = out.trim().split("\n");
  return { rx: BigInt(rx as string), tx: BigInt(tx as string) };
}

describe.skipIf(!avail.ok)("two network namespaces joined by a veth pair", () => {
  let topo: Topology;
  let echoServer: ChildProcess;
  const serverLines: string[] = [];
  let daemon: ManagedProcess | undefined;

  beforeAll(async () => {
    topo = await createTopology();
    echoServer = topo.spawnIn("dst", process.execPath, ["-e", ECHO_SERVER_JS, topo.dstAddr, String(ECHO_PORT), String(LOOPBACK_ONLY_PORT)], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`echo server not ready in 10 s: ${serverLines.join("\n")}`)), 10_000);
      let buf = "";
      echoServer.stdout?.on("data", (c: Buffer) => {
        buf += c.toString("utf8");
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          serverLines.push(line);
          if (line === "echo ready") {
            clearTimeout(timer);
            resolve();
          }
        }
      });
      echoServer.stderr?.on("data", (c: Buffer) => serverLines.push(c.toString("utf8")));
      echoServer.once("close", (code) => {
        clearTimeout(timer);
        reject(new Error(`echo server exited ${code}: ${serverLines.join("\n")}`));
      });
    });
  }, 30_000);

  afterAll(async () => {
    await daemon?.kill("SIGTERM");
    await topo?.destroy();
  }, 30_000);

  it("gives each side only loopback and veth0, with its /30 address", async () => {
    const src = await runIn(topo, "src", "ip", ["-o", "-4", "addr", "show"]);
    const dst = await runIn(topo, "dst", "ip", ["-o", "-4", "addr", "show"]);
    expect(src).toMatch(new RegExp(`veth0\\s+inet ${topo.srcAddr.replaceAll(".", "\\.")}/30`));
    expect(dst).toMatch(new RegExp(`veth0\\s+inet ${topo.dstAddr.replaceAll(".", "\\.")}/30`));
    const links = (await runIn(topo, "src", "ip", ["-o", "link", "show"])).trim().split("\n");
    expect(links.map((l) => (/^\d+: ([^:@]+)/.exec(l)?.[1] ?? l)).sort()).toEqual(["lo", "veth0"]);
  }, 20_000);

  it("carries bytes from a client in src to a server on dst's veth address and back", async () => {
    const size = 256 * 1024;
    const before = await vethBytes(topo, "dst");
    const out = lastJson(await runIn(topo, "src", process.execPath, ["-e", ECHO_CLIENT_JS, topo.dstAddr, String(ECHO_PORT), `random:${size}`]));
    const after = await vethBytes(topo, "dst");

    expect(out.bytes).toBe(size);
    expect(out.sha256).toBe(out.sentSha256);
    // The server saw the client at src's veth address: the connection came across the pair.
    expect(serverLines.map((l) => (l.startsWith("{") ? (JSON.parse(l) as { peer: string }).peer : null))).toContain(topo.srcAddr);
    expect(after.rx - before.rx).toBeGreaterThanOrEqual(BigInt(size));
    expect(after.tx - before.tx).toBeGreaterThanOrEqual(BigInt(size));
  }, 20_000);

  it("keeps dst's loopback out of src's reach", async () => {
    // 127.0.0.1 inside src is src's own loopback: nothing listens there, and 127/8 never leaves a namespace.
    const fromSrc = lastJson(await runIn(topo, "src", process.execPath, ["-e", ECHO_CLIENT_JS, "127.0.0.1", String(LOOPBACK_ONLY_PORT), "00"]));
    expect(fromSrc).toEqual({ error: "ECONNREFUSED" });
    // ...while the same port answers inside dst, so the refusal is isolation and not a dead server.
    const inDst = lastJson(await runIn(topo, "dst", process.execPath, ["-e", ECHO_CLIENT_JS, "127.0.0.1", String(LOOPBACK_ONLY_PORT), "abcd"]));
    const abcd = createHash("sha256").update(Buffer.from("abcd", "hex")).digest("hex");
    expect(inDst).toEqual({ bytes: 2, sha256: abcd, sentSha256: abcd });
    // Nor does dst's loopback-only port answer on dst's veth address.
    const viaVeth = lastJson(await runIn(topo, "src", process.execPath, ["-e", ECHO_CLIENT_JS, topo.dstAddr, String(LOOPBACK_ONLY_PORT), "00"]));
    expect(viaVeth).toEqual({ error: "ECONNREFUSED" });
  }, 30_000);

  it("runs a daemon-like process in dst that the test reaches through a forward and src reaches over the veth", async () => {
    const http = await topo.forward("dst", 7070);
    daemon = await startProcess({
      name: "dst-daemon",
      command: process.execPath,
      args: ["-e", HEALTHZ_SERVER_JS],
      spawn: topo.spawner("dst"),
      readyUrl: `${http.url}/healthz`,
      readyTimeoutMs: 15_000,
    });
    const here = await httpGet(`${http.url}/healthz`);
    expect(here.status).toBe(200);

    const fromSrc = await runIn(topo, "src", process.execPath, [
      "-e",
      `require("node:http").get("http://${topo.dstAddr}:7070/healthz", (r) => { let b = ""; r.on("data", (c) => b += c); r.on("end", () => console.log(JSON.stringify({ status: r.statusCode, body: JSON.parse(b) }))); }).on("error", (e) => console.log(JSON.stringify({ error: e.code })));`,
    ]);
    expect(lastJson(fromSrc)).toEqual({ status: 200, body: { ok: true, from: topo.srcAddr } });

    // SIGTERM reaches the process itself (spawnIn keeps one PID through `ip netns exec`).
    const exit = await daemon.kill("SIGTERM");
    expect(exit).toEqual({ code: 0, signal: null });
    await daemon.restart();
    expect((await httpGet(`${http.url}/healthz`)).status).toBe(200);
    expect(daemon.lines.filter((l) => l.text === "listening on 7070").map((l) => l.incarnation)).toEqual([1, 2]);
    await http.close();
  }, 40_000);

  it("deletes both namespaces and their processes on destroy, and destroy is idempotent", async () => {
    const probe = await createTopology();
    const sleeper = probe.spawnIn("src", "sleep", ["600"], { stdio: "ignore" });
    const closed = new Promise((resolve) => sleeper.once("close", (code, signal) => resolve(signal ?? code)));
    await probe.destroy(2_000);
    await probe.destroy();
    expect(await closed).toBe("SIGTERM");
    const list = await new Promise<string>((resolve, reject) => {
      const c = spawn("ip", ["netns", "list"], { stdio: ["ignore", "pipe", "inherit"] });
      let out = "";
      c.stdout.on("data", (d: Buffer) => (out += d.toString("utf8")));
      c.once("close", (code) => (code === 0 ? resolve(out) : reject(new Error(`ip netns list: ${code}`))));
    });
    expect(list).not.toContain(probe.srcNs);
    expect(list).not.toContain(probe.dstNs);
  }, 30_000);
});
