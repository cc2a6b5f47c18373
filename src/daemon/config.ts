// Configuration: flags, then environment (`TSCMIG_*`), then defaults; unknown keys are errors
// (docs/operations.md#configuration). A schema declares each key once (its flag, its variable, its parser, its default, its
// documentation) and the loader, the --help text and the error messages all come from it. The loader
// reads nothing itself: the daemon's main passes `env()` from the platform module, tests pass records.

import { assert, TscmigError } from "../shared/errors.js";

export interface KeySpec<T> {
  /** Environment variable, `TSCMIG_` + the key in SCREAMING_SNAKE_CASE. */
  env: string;
  /** Long flag without dashes, the key in kebab-case (so commander's `opts()` names it by the key). */
  flag: string;
  /** Turns the raw text into a value; throws a TscmigError whose message says what was expected. */
  parse: (raw: string) => T;
  /** Typed by `parse` alone (so an enum's default does not widen it); see `optional` for no default. */
  default: NoInfer<T>;
  doc: string;
  /** How --help shows the default, when printing the value would not say it well. */
  defaultDoc?: string;
  /** Never echo the value (tokens). */
  secret?: boolean;
}

export type Schema = Record<string, KeySpec<unknown>>;

/** The loaded configuration of a schema: each key's parsed type. */
export type Config<S extends Schema> = { [K in keyof S]: S[K] extends KeySpec<infer T> ? T : never };

export interface ConfigInput {
  /** Flag values keyed by schema key, as commander's `opts()` gives them; undefined = not given. */
  flags: Record<string, string | undefined>;
  /** The process environment (or a test's record). */
  env: Record<string, string | undefined>;
  /** `TSCMIG_*` variables read elsewhere (by the platform module) that are not unknown keys. */
  reservedEnv?: readonly string[];
}

/** For a key without a default: its value is `undefined` unless given. */
export function optional<T>(parse: (raw: string) => T): (raw: string) => T | undefined {
  return parse;
}

/** Declares a schema; checks that names follow the conventions, so flags, variables and keys line up. */
export function defineConfig<T extends Record<string, unknown>>(schema: { [K in keyof T]: KeySpec<T[K]> }): { [K in keyof T]: KeySpec<T[K]> } {
  const envs = new Set<string>();
  for (const [key, spec] of Object.entries<KeySpec<unknown>>(schema)) {
    assert(spec.flag === kebabCase(key), `config ${key}: flag must be ${kebabCase(key)}`);
    assert(spec.env === `TSCMIG_${kebabCase(key).replaceAll("-", "_").toUpperCase()}`, `config ${key}: env name`);
    assert(!envs.has(spec.env), `config ${key}: duplicate env ${spec.env}`);
    envs.add(spec.env);
  }
  return schema;
}

/** Loads every key of `schema` from flags, then env, then its default. */
export function loadConfig<S extends Schema>(schema: S, input: ConfigInput): Config<S> {
  const specs = Object.entries(schema);
  const byEnv = new Set(specs.map(([, spec]) => spec.env));
  const reserved = new Set(input.reservedEnv ?? []);
  for (const name of Object.keys(input.env).sort()) {
    if (name.startsWith("TSCMIG_") && !byEnv.has(name) && !reserved.has(name) && input.env[name] !== undefined)
      throw new TscmigError("invalid_argument", `unknown environment variable ${name}`, { field: name });
  }
  for (const name of Object.keys(input.flags).sort()) {
    if (!(name in schema) && input.flags[name] !== undefined)
      throw new TscmigError("invalid_argument", `unknown flag --${kebabCase(name)}`, { field: name });
  }
  const config: Record<string, unknown> = {};
  for (const [key, spec] of specs) {
    const flag = input.flags[key];
    const env = input.env[spec.env];
    if (flag !== undefined) config[key] = parseAs(key, spec, flag, `flag --${spec.flag}`);
    else if (env !== undefined) config[key] = parseAs(key, spec, env, `env ${spec.env}`);
    else config[key] = spec.default;
  }
  return config as Config<S>;
}

/** The --help text of a schema: one entry per key with its flag, variable, default and meaning. */
export function describeConfig(schema: Schema): string {
  return Object.values(schema)
    .map((spec) => {
      const shown = spec.defaultDoc ?? (spec.default === undefined ? "none" : spec.secret ? "(secret)" : String(spec.default));
      return `  --${spec.flag} <value>  (env ${spec.env}, default ${shown})\n      ${spec.doc}`;
    })
    .join("\n");
}

function parseAs(key: string, spec: KeySpec<unknown>, raw: string, source: string): unknown {
  try {
    return spec.parse(raw);
  } catch (e) {
    if (!(e instanceof TscmigError)) throw e;
    const given = spec.secret ? "" : ` ${JSON.stringify(raw.length > 64 ? `${raw.slice(0, 64)}…` : raw)}`;
    throw new TscmigError("invalid_argument", `${key} (${source}${given}): ${e.message}`, { field: key });
  }
}

function kebabCase(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}
