// Goal: the compose deployment works end to end — two daemons in two containers, and the demo
// client migrates a VM from source to destination and reports it committed. Method: `docker
// compose up --build` (or Debian's v1 `docker-compose`) of the demo service, then its JSON output
// read from the logs; only where a container engine answers `docker info`, skipped with the reason
// printed elsewhere. Bounded by a timeout; `down -v` afterwards.

import { afterAll, describe, expect, it } from "vitest";
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { childEnv, freePort } from "../helpers/proc.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const COMPOSE_FILE = `${ROOT}docker-compose.yml`;
/** Building the image (npm ci, tsc) dominates: generous, but bounded. */
const UP_TIMEOUT_MS = 20 * 60_000;

/** The compose command to use and a reason when there is none (or no engine behind it). */
function detect(): { compose: string[] } | { reason: string } {
  const probe = (cmd: string, args: string[]) => spawnSync(cmd, args, { encoding: "utf8", timeout: 20_000, env: childEnv() });
  const info = probe("docker", ["info"]);
  if (info.error !== undefined) return { reason: `no docker CLI (${info.error.message})` };
  if (info.status !== 0) {
    const why = (info.stderr || info.stdout).trim().split("\n").slice(-1)[0] ?? "";
    return { reason: `no reachable container engine: \`docker info\` exited ${info.status}${why ? `: ${why}` : ""}` };
  }
  if (probe("docker", ["compose", "version"]).status === 0) return { compose: ["docker", "compose"] };
  for (const v1 of ["/usr/bin/docker-compose", "/usr/local/bin/docker-compose"])
    if (existsSync(v1) && probe(v1, ["version"]).status === 0) return { compose: [v1] };
  return { reason: "an engine answers but neither `docker compose` nor `docker-compose` is installed" };
}

const found = detect();
if ("reason" in found) console.log(`skip: compose-up: ${found.reason}`);

/** Runs compose with a bound; resolves with its exit code and output (stdout and stderr interleaved). */
function compose(args: readonly string[], env: Record<string, string>, timeoutMs: number): Promise<{ code: number | null; output: string }> {
  const [cmd, ...pre] = (found as { compose: string[] }).compose;
  return new Promise((resolve) => {
    const child = spawn(cmd as string, [...pre, ...args], { cwd: ROOT, env: childEnv(env), stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (c: Buffer) => (output += c.toString("utf8")));
    child.stderr.on("data", (c: Buffer) => (output += c.toString("utf8")));
    const timer = setTimeout(() => {
      output += `\n[compose-up test] still running after ${timeoutMs} ms: SIGTERM\n`;
      child.kill("SIGTERM");
    }, timeoutMs);
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

/** The demo's lines without compose's `service-1  | ` (v2) or `project_demo_1  | ` (v1) prefix. */
function demoLines(logs: string): string[] {
  return logs
    .split("\n")
    .map((l) => l.replace(/^[\w.-]+\s+\|\s?/, ""))
    .filter((l) => l.trim() !== "");
}

/** The first object with an `outcome` field, searched depth-first through every JSON value in the demo's output. */
function findOutcome(lines: string[]): { outcome: unknown; report: unknown } | undefined {
  const values: unknown[] = [];
  try {
    values.push(JSON.parse(lines.join("\n"))); // one pretty-printed document
  } catch {
    for (const l of lines) {
      try {
        values.push(JSON.parse(l)); // or JSON lines
      } catch {
        // not JSON: a log line
      }
    }
  }
  const visit = (v: unknown): { outcome: unknown; report: unknown } | undefined => {
    if (v === null || typeof v !== "object") return undefined;
    if (!Array.isArray(v) && "outcome" in v) return { outcome: (v as { outcome: unknown }).outcome, report: v };
    for (const child of Object.values(v)) {
      const hit = visit(child);
      if (hit) return hit;
    }
    return undefined;
  };
  for (const v of values) {
    const hit = visit(v);
    if (hit) return hit;
  }
  return undefined;
}

describe.skipIf(!("compose" in found))("docker compose up: source, destination and demo", () => {
  const project = `tscmigtest${process.pid}`;
  const env: Record<string, string> = { COMPOSE_PROJECT_NAME: project };

  afterAll(async () => {
    const down = await compose(["-f", COMPOSE_FILE, "-p", project, "down", "-v", "--remove-orphans", "--timeout", "10"], env, 120_000);
    if (down.code !== 0) console.log(`compose down exited ${down.code}:\n${down.output}`);
  }, 150_000);

  it(
    "migrates a VM and the demo reports outcome committed",
    async () => {
      // Published control ports: free ones, so a run never collides with a daemon already on 7070.
      env.SOURCE_HTTP_PORT = String(await freePort());
      env.DESTINATION_HTTP_PORT = String(await freePort());
      const up = await compose(
        ["-f", COMPOSE_FILE, "-p", project, "up", "--build", "--abort-on-container-exit", "--exit-code-from", "demo", "demo"],
        env,
        UP_TIMEOUT_MS,
      );
      const logs = await compose(["-f", COMPOSE_FILE, "-p", project, "logs", "--no-color", "demo"], env, 60_000);
      const lines = demoLines(logs.output);
      const result = findOutcome(lines);
      const context = `compose up exited ${up.code}\n--- up (last 80 lines) ---\n${up.output.split("\n").slice(-80).join("\n")}\n--- demo ---\n${lines.join("\n")}`;
      expect(up.code, context).toBe(0);
      expect(result, `no JSON object with an "outcome" in the demo's output\n${context}`).toBeDefined();
      expect(result?.outcome, context).toBe("committed");
    },
    UP_TIMEOUT_MS + 120_000,
  );
});

// The log reading above runs only with an engine; its parsing is checked here on both CLIs' formats.
describe("reading the demo's report from compose logs", () => {
  const report = { id: "m-1", outcome: "committed", advancedNs: "12000000", errorBoundNs: "2000000" };

  it("finds the outcome in JSON lines behind v1 and v2 prefixes, skipping log lines", () => {
    const v1 = `Attaching to tscmigtest1_demo_1\ndemo_1  | {"level":30,"msg":"creating VM"}\ndemo_1  | ${JSON.stringify({ migration: report })}\n`;
    const v2 = `tscmigtest1-demo-1  | starting demo\ntscmigtest1-demo-1  | ${JSON.stringify(report)}\n`;
    expect(findOutcome(demoLines(v1))).toEqual({ outcome: "committed", report });
    expect(findOutcome(demoLines(v2))).toEqual({ outcome: "committed", report });
  });

  it("finds the outcome in one pretty-printed document and keeps `|` inside JSON intact", () => {
    const pretty = JSON.stringify({ note: "a | b", report }, null, 2)
      .split("\n")
      .map((l) => `demo-1  | ${l}`)
      .join("\n");
    expect(findOutcome(demoLines(pretty))).toEqual({ outcome: "committed", report });
    expect(findOutcome(demoLines('demo-1  | {"outcome":"aborted"}'))?.outcome).toBe("aborted");
    expect(findOutcome(demoLines("demo-1  | no json here"))).toBeUndefined();
  });
});
