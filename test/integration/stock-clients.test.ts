// Goal: gRPC clients the project did not write can discover and call a tscmig server. Method: a real
// server on 127.0.0.1 (port 0); `buf curl` (the buf binary `npx buf` runs) lists services through
// server reflection and calls Ping and Resolve with JSON; Debian's Python grpcio runs
// test/integration/py/stock_client.py against stubs compiled at test time with grpc_tools.protoc.
// Every child process is bounded by a timeout and killed in afterAll. Missing tools skip with a
// printed reason.

import { spawn, spawnSync } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRpcServer } from "../../src/shared/rpc/index.js";
import type { RpcServer } from "../../src/shared/rpc/index.js";
import { GENERATION_BIG, testImpl } from "../helpers/migration-test-impl.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const BUF = join(ROOT, "node_modules", ".bin", "buf");
// Debian's interpreter: the `python3` first on PATH may be another install that cannot see
// python3-grpcio and python3-grpc-tools.
const PYTHON = "/usr/bin/python3";
const CHILD_TIMEOUT_MS = 60_000;

function bufMissingReason(): string | undefined {
  if (!existsSync(BUF)) return `${BUF} not found (npm ci installs @bufbuild/buf)`;
  const r = spawnSync(BUF, ["--version"], { timeout: 30_000, encoding: "utf8" });
  return r.status === 0 ? undefined : `buf does not run: ${r.error?.message ?? r.stderr}`;
}

function pythonMissingReason(): string | undefined {
  if (!existsSync(PYTHON)) return `${PYTHON} not found`;
  const r = spawnSync(PYTHON, ["-c", "import grpc, grpc_tools"], { timeout: 30_000, encoding: "utf8" });
  return r.status === 0 ? undefined : `${PYTHON} lacks grpc/grpc_tools (apt: python3-grpcio python3-grpc-tools): ${r.stderr.trim()}`;
}

const bufMissing = bufMissingReason();
const pythonMissing = pythonMissingReason();
if (bufMissing !== undefined) console.log(`skipping buf curl tests: ${bufMissing}`);
if (pythonMissing !== undefined) console.log(`skipping Python client test: ${pythonMissing}`);

const children = new Set<ChildProcess>();

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion, killed after CHILD_TIMEOUT_MS; tracked for afterAll. */
function run(cmd: string, args: string[], opts: { cwd?: string } = {}): Promise<Run> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd ?? ROOT, timeout: CHILD_TIMEOUT_MS, stdio: ["ignore", "pipe", "pipe"] });
    children.add(child);
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (d: Buffer) => (stdout += d.toString("utf8")));
    child.stderr?.on("data", (d: Buffer) => (stderr += d.toString("utf8")));
    child.on("error", (e) => {
      children.delete(child);
      reject(e);
    });
    child.on("close", (status) => {
      children.delete(child);
      resolvePromise({ status, stdout, stderr });
    });
  });
}

function expectSuccess(r: Run, what: string): void {
  if (r.status !== 0) throw new Error(`${what} exited ${r.status}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
}

describe("stock clients against a tscmig server", () => {
  let server: RpcServer;
  let url = "";
  let target = "";
  let work = "";

  beforeAll(async () => {
    server = createRpcServer({ services: [testImpl().registration] });
    const { port } = await server.listen("127.0.0.1:0");
    target = `127.0.0.1:${port}`;
    url = `http://${target}`;
    work = await mkdtemp(join(tmpdir(), "tscmig-stock-"));
  });

  afterAll(async () => {
    for (const child of children) child.kill("SIGKILL");
    await server?.shutdown(2_000);
    if (work !== "") await rm(work, { recursive: true, force: true });
  });

  const curl = (...args: string[]): Promise<Run> => run(BUF, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", ...args]);

  it.skipIf(bufMissing !== undefined)("buf curl lists the services through reflection", async () => {
    const r = await curl("--list-services", url);
    expectSuccess(r, "buf curl --list-services");
    const services = r.stdout.split("\n").map((l) => l.trim());
    expect(services).toContain("tscmig.v1.MigrationService");
    expect(services).toContain("grpc.health.v1.Health");
  });

  it.skipIf(bufMissing !== undefined)("buf curl lists the methods through reflection", async () => {
    const r = await curl("--list-methods", url);
    expectSuccess(r, "buf curl --list-methods");
    expect(r.stdout).toContain("tscmig.v1.MigrationService/Ping");
    expect(r.stdout).toContain("tscmig.v1.MigrationService/Transfer");
  });

  it.skipIf(bufMissing !== undefined)("buf curl calls Ping with JSON", async () => {
    const r = await curl("-d", "{}", `${url}/tscmig.v1.MigrationService/Ping`);
    expectSuccess(r, "buf curl Ping");
    expect(JSON.parse(r.stdout)).toEqual({});
  });

  it.skipIf(bufMissing !== undefined)("buf curl calls Resolve with JSON and gets the decision and a full uint64", async () => {
    const r = await curl("-d", JSON.stringify({ migrationId: "m-1", vmId: "vm-1" }), `${url}/tscmig.v1.MigrationService/Resolve`);
    expectSuccess(r, "buf curl Resolve");
    expect(JSON.parse(r.stdout)).toEqual({ decision: "DECISION_COMMITTED", generation: GENERATION_BIG.toString() });
  });

  it.skipIf(bufMissing !== undefined)("buf curl sees a refused Prepare as failed_precondition with tscmig trailers", async () => {
    const r = await curl("-v", "-d", JSON.stringify({ migrationId: "m-1" }), `${url}/tscmig.v1.MigrationService/Prepare`);
    expect(r.status).not.toBe(0);
    expect(r.stderr + r.stdout).toMatch(/failed_precondition/i);
    expect(r.stderr).toMatch(/tscmig-reason: tsc_scaling_missing/i);
  });

  it.skipIf(bufMissing !== undefined)("buf curl checks health", async () => {
    const r = await curl("-d", JSON.stringify({ service: "tscmig.v1.MigrationService" }), `${url}/grpc.health.v1.Health/Check`);
    expectSuccess(r, "buf curl Health/Check");
    expect(JSON.parse(r.stdout)).toEqual({ status: "SERVING" });
  });

  it.skipIf(pythonMissing !== undefined)("Python grpcio calls Ping, Resolve, Prepare and the health Check", async () => {
    // Stubs go to <work>/stubs/{tscmig,health}/v1: never a folder named grpc/, which would shadow grpcio.
    const stubs = join(work, "stubs");
    const healthSrc = join(work, "health-src");
    await mkdir(stubs, { recursive: true });
    await mkdir(join(healthSrc, "health", "v1"), { recursive: true });
    await copyFile(join(ROOT, "proto", "grpc", "health", "v1", "health.proto"), join(healthSrc, "health", "v1", "health.proto"));
    const protoc = (include: string, file: string): Promise<Run> =>
      run(PYTHON, ["-m", "grpc_tools.protoc", "-I", include, `--python_out=${stubs}`, `--grpc_python_out=${stubs}`, file]);
    expectSuccess(await protoc(join(ROOT, "proto"), "tscmig/v1/migration.proto"), "grpc_tools.protoc migration.proto");
    expectSuccess(await protoc(healthSrc, "health/v1/health.proto"), "grpc_tools.protoc health.proto");

    const r = await run(PYTHON, [join(ROOT, "test", "integration", "py", "stock_client.py"), stubs, target]);
    expectSuccess(r, "stock_client.py");
    const out = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(out).toEqual({
      ping: "ok",
      resolve: { decision: "DECISION_COMMITTED", generation: GENERATION_BIG.toString() },
      prepare_error: {
        code: "FAILED_PRECONDITION",
        status: 9,
        details: "destination host cannot scale the TSC",
        trailers: { "tscmig-code": "failed_precondition", "tscmig-field": "guestTscKhz", "tscmig-reason": "tsc_scaling_missing" },
      },
      health: { "": "SERVING", "tscmig.v1.MigrationService": "SERVING" },
    });
  });
});
