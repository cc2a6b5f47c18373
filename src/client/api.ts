// A small client of a daemon's control API (undici), used by the CLI commands, the live chaos runner
// and the bench.

import { request } from "undici";
import { TscmigError, isErrorCode } from "../shared/errors.js";

export class ApiClient {
  constructor(
    readonly baseUrl: string,
    private readonly token?: string,
  ) {
    if (!/^https?:\/\/[^/]+$/.test(baseUrl.replace(/\/$/, ""))) throw new TscmigError("invalid_argument", `API URL must be http(s)://HOST:PORT, got ${baseUrl}`, { field: "api" });
    this.baseUrl = baseUrl.replace(/\/$/, "");
  }

  async call<T = Record<string, unknown>>(method: "GET" | "POST" | "PUT" | "DELETE", path: string, body?: unknown, timeoutMs = 30_000): Promise<T> {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    let res;
    try {
      res = await request(`${this.baseUrl}${path}`, {
        method,
        headers,
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
    } catch (e) {
      throw new TscmigError("unavailable", unreachable(this.baseUrl, `${method} ${path}`, e));
    }
    const text = await res.body.text();
    let json: unknown;
    try {
      json = text.length > 0 ? JSON.parse(text) : {};
    } catch {
      throw new TscmigError("internal", `${method} ${path}: answer is not JSON (${res.statusCode})`);
    }
    if (res.statusCode >= 400) {
      const err = (json as { error?: { code?: string; message?: string; field?: string; reason?: string } }).error ?? {};
      const code = err.code && isErrorCode(err.code) ? err.code : "internal";
      throw new TscmigError(code, `${method} ${path}: ${err.message ?? res.statusCode}`, {
        ...(err.field ? { field: err.field } : {}),
        ...(err.reason ? { reason: err.reason } : {}),
      });
    }
    return json as T;
  }

  /** Polls /healthz until it answers or `attempts` run out. */
  async waitHealthy(attempts = 100, delay: (n: number) => Promise<void>): Promise<void> {
    for (let i = 0; i < attempts; i++) {
      try {
        await this.call("GET", "/healthz", undefined, 2000);
        return;
      } catch {
        await delay(i);
      }
    }
    throw new TscmigError("unavailable", `${this.baseUrl} did not become healthy`);
  }
}

/** Why a request got no answer, and for a refused connection the likely cause and its remedy. */
export function unreachable(baseUrl: string, what: string, e: unknown): string {
  const code = errnoOf(e);
  if (code === "ECONNREFUSED") return `${what}: connection refused: is a daemon running at ${baseUrl}? (\`tscmig up\` starts a pair)`;
  if (code === "ENOTFOUND" || code === "EAI_AGAIN") return `${what}: cannot resolve the host of ${baseUrl} (${code})`;
  return `${what} at ${baseUrl}: ${e instanceof Error ? e.message : String(e)}`;
}

function errnoOf(e: unknown): string | undefined {
  for (let x: unknown = e, depth = 0; x !== null && typeof x === "object" && depth < 4; x = (x as { cause?: unknown }).cause, depth++) {
    const code = (x as { code?: unknown }).code;
    if (typeof code === "string" && /^E[A-Z_]+$/.test(code)) return code;
    const errors = (x as { errors?: unknown }).errors; // AggregateError of a dual-stack connect
    if (Array.isArray(errors) && errors.length > 0) return errnoOf(errors[0]);
  }
  return undefined;
}
