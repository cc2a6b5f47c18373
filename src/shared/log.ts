// The project's logger: pino, JSON lines, passed in to every component (STYLE 13). pino prints a
// bigint as a bare number, which JSON parsers round to a double, so every bigint in a log line or
// in a child's bindings is written as a decimal string instead.

import { pino } from "pino";
import { toJsonSafe } from "./json-safe.js";

export type Logger = pino.Logger;
export type LogLevel = pino.LevelWithSilent;

export const LOG_LEVELS: readonly LogLevel[] = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

export interface LoggerOptions {
  level: LogLevel;
  /** Component or daemon name, the `name` key of every line. */
  name: string;
  /** Where lines go; standard output when absent. */
  destination?: pino.DestinationStream;
}

export function createLogger(opts: LoggerOptions): Logger {
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
export function child(log: Logger, bindings: pino.Bindings): Logger {
  return log.child(toJsonSafe(bindings) as pino.Bindings);
}
