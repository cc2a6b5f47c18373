// Goal: configuration comes from flags, then TSCMIG_* variables, then defaults; anything unknown or
// malformed is refused with the key and its source named. Method: the loader on plain records (it
// never reads the process environment itself) and table tests of every parser.
import { describe, expect, it } from "vitest";
import { describeConfig, defineConfig, loadConfig, optional } from "../../src/daemon/config.js";
import {
  formatHostPort,
  parseBigInt,
  parseBool,
  parseDurationNs,
  parseEnum,
  parseHostPort,
  parseName,
  parsePath,
  parsePpm,
  parseToken,
} from "../../src/daemon/config-parsers.js";
import { DAEMON_CONFIG, defaultDataDir, loadDaemonConfig } from "../../src/daemon/daemon-config.js";
import { TscmigError } from "../../src/shared/errors.js";

const HOME = { HOME: "/home/op" };

function errorOf(fn: () => unknown): TscmigError {
  try {
    fn();
  } catch (e) {
    if (e instanceof TscmigError) return e;
    throw e;
  }
  throw new Error("expected a TscmigError");
}

describe("loading", () => {
  const schema = defineConfig({
    port: { env: "TSCMIG_PORT", flag: "port", parse: (raw: string) => parseBigInt(raw, { min: 0n, max: 9n }), default: 1n, doc: "a port" },
    label: { env: "TSCMIG_LABEL", flag: "label", parse: optional(parseName), default: undefined, doc: "a label" },
    dryRun: { env: "TSCMIG_DRY_RUN", flag: "dry-run", parse: parseBool, default: false, doc: "do nothing" },
  });

  it("takes a flag over the environment over the default", () => {
    expect(loadConfig(schema, { flags: {}, env: {} })).toEqual({ port: 1n, label: undefined, dryRun: false });
    expect(loadConfig(schema, { flags: {}, env: { TSCMIG_PORT: "2", TSCMIG_DRY_RUN: "yes" } })).toEqual({ port: 2n, label: undefined, dryRun: true });
    expect(loadConfig(schema, { flags: { port: "3", dryRun: undefined }, env: { TSCMIG_PORT: "2" } }).port).toBe(3n);
  });

  it("refuses an unknown TSCMIG_ variable by name, and ignores other variables", () => {
    const e = errorOf(() => loadConfig(schema, { flags: {}, env: { TSCMIG_FOO: "1", PATH: "/bin" } }));
    expect(e.code).toBe("invalid_argument");
    expect(e.message).toContain("TSCMIG_FOO");
    expect(e.field).toBe("TSCMIG_FOO");
    expect(loadConfig(schema, { flags: {}, env: { TSCMIG_FOO: "1" }, reservedEnv: ["TSCMIG_FOO"] }).port).toBe(1n);
  });

  it("refuses an unknown flag", () => {
    expect(errorOf(() => loadConfig(schema, { flags: { verbose: "1" }, env: {} })).message).toContain("--verbose");
  });

  it("names the key and the source of a malformed value", () => {
    const fromEnv = errorOf(() => loadConfig(schema, { flags: {}, env: { TSCMIG_PORT: "12" } }));
    expect(fromEnv.field).toBe("port");
    expect(fromEnv.message).toMatch(/^port \(env TSCMIG_PORT "12"\): expected a decimal integer within 0\.\.9/);
    const fromFlag = errorOf(() => loadConfig(schema, { flags: { dryRun: "maybe" }, env: {} }));
    expect(fromFlag.message).toMatch(/^dryRun \(flag --dry-run "maybe"\)/);
  });

  it("describes every key for --help", () => {
    const text = describeConfig(schema);
    expect(text).toContain("--port <value>  (env TSCMIG_PORT, default 1)");
    expect(text).toContain("--dry-run <value>  (env TSCMIG_DRY_RUN, default false)");
    expect(text).toContain("default none");
  });

  it("refuses a schema whose names do not line up", () => {
    expect(() => defineConfig({ dryRun: { env: "TSCMIG_DRY_RUN", flag: "dryrun", parse: parseBool, default: false, doc: "" } })).toThrow(/flag/);
    expect(() => defineConfig({ dryRun: { env: "DRY_RUN", flag: "dry-run", parse: parseBool, default: false, doc: "" } })).toThrow(/env/);
  });
});

describe("daemon configuration", () => {
  it("has working defaults", () => {
    const c = loadDaemonConfig({ flags: {}, env: HOME });
    expect(c).toMatchObject({
      name: "tscmig",
      http: { host: "127.0.0.1", port: 7070 },
      grpc: { host: "127.0.0.1", port: 7071 },
      data: "/home/op/.local/state/tscmig/tscmig",
      skewOffsetNs: 0n,
      skewDriftPpm: 0,
      tscKhz: 2_000_000n,
      tscDriftPpm: 0,
      vendor: "vmx",
      tscScaling: true,
      hostMaxerrorNs: 100_000n,
      token: undefined,
      logLevel: "info",
    });
  });

  it("reads every key from flags and from the environment", () => {
    const env = {
      ...HOME,
      TSCMIG_NAME: "b",
      TSCMIG_HTTP: "[::1]:8080",
      TSCMIG_SKEW_OFFSET_NS: "-250ms",
      TSCMIG_SKEW_DRIFT_PPM: "12.5",
      TSCMIG_TSC_KHZ: "3000000",
      TSCMIG_VENDOR: "svm",
      TSCMIG_TSC_SCALING: "false",
      TSCMIG_HOST_MAXERROR_NS: "1ms",
      TSCMIG_TOKEN: "s3cret",
      TSCMIG_LOG_LEVEL: "debug",
    };
    const c = loadDaemonConfig({ flags: { grpc: "0.0.0.0:0", tscDriftPpm: "-3", name: "c" }, env });
    expect(c).toMatchObject({
      name: "c",
      http: { host: "::1", port: 8080 },
      grpc: { host: "0.0.0.0", port: 0 },
      data: "/home/op/.local/state/tscmig/c",
      skewOffsetNs: -250_000_000n,
      skewDriftPpm: 12.5,
      tscKhz: 3_000_000n,
      tscDriftPpm: -3,
      vendor: "svm",
      tscScaling: false,
      hostMaxerrorNs: 1_000_000n,
      token: "s3cret",
      logLevel: "debug",
    });
  });

  it("puts data under XDG_STATE_HOME, else HOME, unless given", () => {
    expect(defaultDataDir("a", { XDG_STATE_HOME: "/state", HOME: "/h" })).toBe("/state/tscmig/a");
    expect(defaultDataDir("a", { XDG_STATE_HOME: "relative", HOME: "/h" })).toBe("/h/.local/state/tscmig/a");
    expect(loadDaemonConfig({ flags: { data: "/var/lib/x" }, env: {} }).data).toBe("/var/lib/x");
    expect(errorOf(() => loadDaemonConfig({ flags: {}, env: {} })).field).toBe("data");
  });

  it("accepts the platform's own TSCMIG_ variable and refuses unknown ones", () => {
    expect(loadDaemonConfig({ flags: {}, env: { ...HOME, TSCMIG_TRUE_EPOCH_NS: "1" } }).name).toBe("tscmig");
    expect(errorOf(() => loadDaemonConfig({ flags: {}, env: { ...HOME, TSCMIG_HTTP_PORT: "1" } })).message).toContain("TSCMIG_HTTP_PORT");
  });

  it("wants all three TLS files or none, naming what is missing", () => {
    const all = { tlsCert: "c.pem", tlsKey: "k.pem", tlsCa: "ca.pem" };
    expect(loadDaemonConfig({ flags: all, env: HOME }).tlsCa).toBe("ca.pem");
    const e = errorOf(() => loadDaemonConfig({ flags: { tlsCert: "c.pem" }, env: { ...HOME, TSCMIG_TLS_CA: "ca.pem" } }));
    expect(e.code).toBe("invalid_argument");
    expect(e.field).toBe("tlsKey");
    expect(e.message).toContain("tlsKey missing");
  });

  it("never echoes the token", () => {
    const e = errorOf(() => loadDaemonConfig({ flags: { token: "bad token with spaces" }, env: HOME }));
    expect(e.message).toMatch(/^token \(flag --token\): /);
    expect(e.message).not.toContain("spaces");
    expect(describeConfig(DAEMON_CONFIG)).toContain("--token <value>  (env TSCMIG_TOKEN, default none)");
  });

  it("documents every key", () => {
    const text = describeConfig(DAEMON_CONFIG);
    for (const spec of Object.values(DAEMON_CONFIG)) expect(text).toContain(`--${spec.flag} <value>  (env ${spec.env}, `);
    expect(text).toContain("default 127.0.0.1:7070");
  });
});

describe("parsers", () => {
  it.each([
    ["127.0.0.1:7070", "127.0.0.1", 7070],
    ["[::1]:0", "::1", 0],
    ["[2001:db8::7]:65535", "2001:db8::7", 65535],
    ["tscmig-b.default.svc:7071", "tscmig-b.default.svc", 7071],
    ["localhost:1", "localhost", 1],
  ])("parses host:port %s", (raw, host, port) => {
    expect(parseHostPort(raw)).toEqual({ host, port });
    expect(formatHostPort({ host, port })).toBe(raw);
  });

  it.each(["127.0.0.1", "::1:7070", "[::1]", "host:65536", ":7070", "[nothost]:1", "a b:1", "-x:1", "host:-1", "host:1x"])("refuses host:port %s", (raw) => {
    expect(errorOf(() => parseHostPort(raw)).code).toBe("invalid_argument");
  });

  it.each([
    ["250ms", 250_000_000n],
    ["4s", 4_000_000_000n],
    ["1.5s", 1_500_000_000n],
    ["100us", 100_000n],
    ["100µs", 100_000n],
    ["262s", 262_000_000_000n],
    ["2m", 120_000_000_000n],
    ["1h", 3_600_000_000_000n],
    ["12345", 12_345n],
    ["7ns", 7n],
    ["0.000000001s", 1n],
    ["9223372036854775807", 9_223_372_036_854_775_807n],
  ])("parses duration %s", (raw, ns) => {
    expect(parseDurationNs(raw)).toBe(ns);
  });

  it.each(["", "1.5", "-1s", "1.5ns", "0.0000000001s", "5 s", "5d", "1e3", "9223372036854775808", "s"])("refuses duration %s", (raw) => {
    expect(errorOf(() => parseDurationNs(raw)).code).toBe("invalid_argument");
  });

  it("parses signed durations within a range", () => {
    const range = { min: -1_000_000_000_000n, max: 1_000_000_000_000n };
    expect(parseDurationNs("-250ms", range)).toBe(-250_000_000n);
    expect(parseDurationNs("+262s", range)).toBe(262_000_000_000n);
    expect(parseDurationNs("-1000s", range)).toBe(-1_000_000_000_000n);
    expect(errorOf(() => parseDurationNs("-1001s", range)).message).toContain("-1000000000000..1000000000000");
  });

  it("parses 64-bit integers exactly", () => {
    expect(parseBigInt("-9223372036854775808")).toBe(-(1n << 63n));
    expect(parseBigInt("9007199254740993")).toBe(9_007_199_254_740_993n);
    expect(parseBigInt("18446744073709551615", { min: 0n, max: (1n << 64n) - 1n })).toBe((1n << 64n) - 1n);
    for (const raw of ["9223372036854775808", "1.0", "0x10", "", "1_000"]) expect(errorOf(() => parseBigInt(raw)).code).toBe("invalid_argument");
  });

  it("parses ppm, booleans, enums, paths, names and tokens", () => {
    expect(parsePpm("-12.5")).toBe(-12.5);
    expect(Object.is(parsePpm("-0"), 0)).toBe(true);
    for (const raw of ["501", "NaN", "1e2", "", "Infinity"]) expect(errorOf(() => parsePpm(raw)).code).toBe("invalid_argument");
    expect([parseBool("TRUE"), parseBool("on"), parseBool("0"), parseBool("no")]).toEqual([true, true, false, false]);
    expect(() => parseBool("2")).toThrow(TscmigError);
    expect(parseEnum(["vmx", "svm"])("svm")).toBe("svm");
    expect(errorOf(() => parseEnum(["vmx", "svm"])("VMX")).message).toBe("expected one of vmx, svm");
    expect(parsePath("./data dir")).toBe("./data dir");
    expect(() => parsePath("")).toThrow(TscmigError);
    expect(() => parsePath("a\0b")).toThrow(TscmigError);
    expect(parseName("node-1.a_b")).toBe("node-1.a_b");
    for (const raw of ["", "../x", "a/b", ".hidden", "x".repeat(129)]) expect(() => parseName(raw)).toThrow(TscmigError);
    expect(parseToken("abc-._~+/==")).toBe("abc-._~+/==");
    for (const raw of ["", "a b", "a=b", "ä"]) expect(() => parseToken(raw)).toThrow(TscmigError);
  });
});
