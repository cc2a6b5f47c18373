// Loggers made with pino: JSON lines, passed in to every component (STYLE 13). pino prints a
// bigint as a bare number, which JSON parsers round to a double, so every bigint in a log line or
// in a child's bindings is written as a decimal string instead.

import { pino } from "pino";
import { toJsonSafe } from "./json-safe.js";

/** pino's logger: a Logger (logger.ts) and all of pino's API, which the fastify app needs. */
export type PinoLogger = pino.Logger;
export type LogLevel = pino.LevelWithSilent;

export const LOG_LEVELS: readonly LogLevel[] = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

export interface LoggerOptions {
  level: LogLevel;
  /** Component or daemon name, the `name` key of every line. */
  name: string;
  /** Where lines go; standard output when absent. */
  destination?: pino.DestinationStream;
}

export function createLogger(opts: LoggerOptions): PinoLogger {
  const options: pino.LoggerOptions = {
    level: opts.level,
    name: opts.name,
    formatters: {
      bindings: (bindings) => toJsonSafe(bindings) as pino.Bindings,
      log: (object) => toJsonSafe(object) as Record<string, unknown>,
    },
  };
  return opts.destination ? pino(options, opts.destination) : pino(options);
}

/**
 * A component's logger: every line carries `bindings` (e.g. `{ component, vmId, migrationId }`).
 * Use this rather than `log.child()`: pino applies the bindings formatter to the root logger only.
 */
export function child(log: PinoLogger, bindings: pino.Bindings): PinoLogger {
  return log.child(toJsonSafe(bindings) as pino.Bindings);
}

/**
 * The line a daemon writes once both listeners are bound; tools (`tscmig up`, `demo`, the live chaos
 * runner, tests) read the bound addresses from it. Logged at info whatever the daemon's level (a
 * `--log-level warn` daemon must still say where it listens), as one of the daemon's JSON lines.
 */
export function logListening(log: PinoLogger, where: { http: string; grpc: string; data: string } & Record<string, unknown>): void {
  log.child({}, { level: "info" }).info({ event: "listening", ...where }, "daemon listening");
}

/** The addresses of a `logListening` line, or undefined for any other line (log or not). */
export function listeningOf(line: string): { http: string; grpc: string } | undefined {
  if (!line.startsWith("{") || !line.includes('"listening"')) return undefined;
  try {
    const j = JSON.parse(line) as Record<string, unknown>;
    if (j.event === "listening" && typeof j.http === "string" && typeof j.grpc === "string") return { http: j.http, grpc: j.grpc };
  } catch {
    // not JSON after all
  }
  return undefined;
}

/**
 * grpc-js writes its diagnostics with console.error unless given a logger: this one makes them
 * log lines of `log` (component "grpc-js"), so a daemon's output stays JSON lines only.
 */
export function grpcJsLogger(log: PinoLogger): Pick<Console, "error" | "info" | "debug"> {
  const grpcLog = log.child({ component: "grpc-js" });
  const text = (args: unknown[]) => args.map((a) => (typeof a === "string" ? a : a instanceof Error ? a.message : JSON.stringify(a))).join(" ");
  return {
    error: (...args: unknown[]) => grpcLog.error(text(args)),
    info: (...args: unknown[]) => grpcLog.info(text(args)),
    debug: (...args: unknown[]) => grpcLog.debug(text(args)),
  };
}
