// Goal: the process helper the daemon tests stand on starts, probes, stops and restarts a child
// reliably, and fails fast with the child's own logs. Method: tiny Node HTTP servers as stand-in
// daemons on free loopback ports; every wait is a bounded poll or an event, never a fixed sleep.

import { afterEach, describe, expect, it } from "vitest";
import { createServer } from "node:net";
import { ManagedProcess, childEnv, freePort, httpGet, startProcess } from "../helpers/proc.js";

// argv: port, then "ignore-term" to ignore SIGTERM (a hung daemon). Prints its env's TSCMIG_* keys.
const SERVER_JS = `
const http = require("node:http");
const [port, mode] = process.argv.slice(1);
console.log("env " + JSON.stringify(Object.keys(process.env).filter((k) => k.startsWith("TSCMIG_")).sort()));
console.error("to stderr");
const server = http.createServer((req, res) => res.writeHead(req.url === "/healthz" ? 200 : 404).end("ok"));
server.listen(Number(port), "127.0.0.1", () => console.log("listening " + port));
process.on("SIGTERM", () => {
  if (mode === "ignore-term") { console.log("ignoring SIGTERM"); return; }
  server.close(() => process.exit(0));
});
`;

const started: ManagedProcess[] = [];
afterEach(async () => {
  await Promise.all(started.splice(0).map((p) => p.kill("SIGKILL")));
});

async function server(mode = "", env: Record<string, string | undefined> = {}): Promise<{ p: ManagedProcess; port: number }> {
  const port = await freePort();
  const p = await startProcess({
    name: "stand-in",
    command: process.execPath,
    args: ["-e", SERVER_JS, String(port), mode],
    env,
    readyUrl: `http://127.0.0.1:${port}/healthz`,
    readyTimeoutMs: 15_000,
    stopGraceMs: 1_000,
  });
  started.push(p);
  return { p, port };
}

describe("freePort", () => {
  it("returns a port that can be bound on loopback", async () => {
    const port = await freePort();
    expect(port).toBeGreaterThan(0);
    const s = createServer();
    await new Promise<void>((resolve, reject) => {
      s.once("error", reject);
      s.listen(port, "127.0.0.1", resolve);
    });
    await new Promise((resolve) => s.close(resolve));
  });
});

describe("startProcess", () => {
  it("resolves once /healthz answers, with stdout and stderr kept line by line", async () => {
    const { p, port } = await server();
    expect((await httpGet(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    expect(p.running).toBe(true);
    await p.waitForLine(/^listening /, { timeoutMs: 5_000 });
    expect(p.lines).toContainEqual({ incarnation: 1, stream: "stderr", text: "to stderr" });
    expect(p.logs()).toContain("[stand-in#1 stdout] listening");
  });

  it("keeps the caller's TSCMIG_* variables away from the child and passes the ones asked for", async () => {
    process.env.TSCMIG_LEAKED_FROM_SHELL = "1";
    try {
      const { p } = await server("", { TSCMIG_SKEW_OFFSET_NS: "5000000" });
      const line = await p.waitForLine(/^env /, { timeoutMs: 5_000 });
      expect(JSON.parse(line.text.slice(4))).toEqual(["TSCMIG_SKEW_OFFSET_NS"]);
    } finally {
      delete process.env.TSCMIG_LEAKED_FROM_SHELL;
    }
    expect(childEnv({ A: "1" }).A).toBe("1");
  });

  it("fails fast with the child's logs when it exits before it is ready", async () => {
    const t0 = performance.now();
    const failing = startProcess({
      name: "crasher",
      command: process.execPath,
      args: ["-e", 'console.error("bad config: TSCMIG_NOPE"); process.exit(3)'],
      readyUrl: `http://127.0.0.1:${await freePort()}/healthz`,
      readyTimeoutMs: 60_000,
    });
    await expect(failing).rejects.toThrow(/process exited with code 3[\s\S]*\[crasher#1 stderr\] bad config: TSCMIG_NOPE/);
    // Long before the 60 s deadline: the exit ended the wait.
    expect(performance.now() - t0).toBeLessThan(30_000);
  });

  it("gives up at the deadline when nothing ever answers, and stops the child", async () => {
    const port = await freePort();
    const p = new ManagedProcess({
      name: "silent",
      command: process.execPath,
      args: ["-e", "setInterval(() => {}, 1000)"],
      readyUrl: `http://127.0.0.1:${port}/healthz`,
      readyTimeoutMs: 500,
    });
    await expect(p.start()).rejects.toThrow(/not ready after 500 ms/);
    expect(p.running).toBe(false);
    expect(p.exitStatus).toEqual({ code: null, signal: "SIGKILL" });
  });

  it("waits for a line when asked to", async () => {
    const p = await startProcess({
      name: "liner",
      command: process.execPath,
      args: ["-e", 'console.log("warming up"); console.log("ready on 1234"); setInterval(() => {}, 1000)'],
      readyLine: /^ready on \d+$/,
      readyTimeoutMs: 10_000,
    });
    started.push(p);
    expect(p.lines.map((l) => l.text)).toContain("ready on 1234");
  });
});

describe("stopping and restarting", () => {
  it("kill() stops gracefully with SIGTERM", async () => {
    const { p } = await server();
    expect(await p.kill()).toEqual({ code: 0, signal: null });
    expect(p.running).toBe(false);
    expect(await p.kill()).toEqual({ code: 0, signal: null }); // idempotent
  });

  it("kill() escalates to SIGKILL when SIGTERM is ignored", async () => {
    const { p } = await server("ignore-term");
    expect(await p.kill("SIGTERM")).toEqual({ code: null, signal: "SIGKILL" });
    expect(p.lines.some((l) => l.text.includes("still running 1000 ms after SIGTERM"))).toBe(true);
  });

  it("kill('SIGKILL') simulates a crash; restart() brings up a new incarnation on the same port", async () => {
    const { p, port } = await server();
    const firstPid = p.pid;
    expect(await p.kill("SIGKILL")).toEqual({ code: null, signal: "SIGKILL" });
    await expect(httpGet(`http://127.0.0.1:${port}/healthz`, 1_000)).rejects.toThrow();
    await p.restart();
    expect(p.pid).not.toBe(firstPid);
    expect((await httpGet(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    expect(p.lines.filter((l) => l.text.startsWith("listening")).map((l) => l.incarnation)).toEqual([1, 2]);
    await p.restart(); // while running: SIGTERM first
    expect(p.lines.filter((l) => l.text.startsWith("listening")).map((l) => l.incarnation)).toEqual([1, 2, 3]);
  });

  it("signal() pauses and resumes without waiting for an exit", async () => {
    const { p, port } = await server();
    p.signal("SIGSTOP");
    await expect(httpGet(`http://127.0.0.1:${port}/healthz`, 300)).rejects.toThrow(/no answer within 300 ms/);
    p.signal("SIGCONT");
    expect((await httpGet(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
  });
});
