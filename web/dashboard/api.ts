// The page's side of the control API and the event stream, with the token scheme of
// src/daemon/ui-routes.ts: the token lives in this tab's sessionStorage (taken once from a prompt
// or from the URL fragment, which is then removed), goes out as a bearer header on API calls, and
// buys the stream a short-lived HttpOnly cookie; it is never put in a URL.

const TOKEN_KEY = "tscmig.token";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export function takeTokenFromFragment(): void {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (!m) return;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1] as string));
  history.replaceState(null, "", location.pathname + location.search);
}

export function setToken(token: string): void {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function hasToken(): boolean {
  return sessionStorage.getItem(TOKEN_KEY) !== null;
}

export async function call<T>(method: "GET" | "POST" | "PUT", path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token !== null) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(path, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}), credentials: "same-origin" });
  const text = await res.text();
  let json: unknown;
  try {
    json = text.length > 0 ? JSON.parse(text) : {};
  } catch {
    throw new ApiError(res.status, "internal", `${method} ${path}: answer is not JSON (${res.status})`);
  }
  if (!res.ok) {
    const e = (json as { error?: { code?: string; message?: string } }).error ?? {};
    throw new ApiError(res.status, e.code ?? "internal", e.message ?? `${method} ${path}: ${res.status}`);
  }
  return json as T;
}

export type StreamHandler = (type: string, data: unknown) => void;

const TYPES = ["state", "host", "vm", "vm-gone", "sample", "guest", "migration", "peers", "heartbeat", "reset", "bye"];

/**
 * Keeps one EventSource open: mints the session cookie first (and every minute), reopens after the
 * browser gives up (a refused or expired cookie, a restarted daemon) from the last id seen.
 */
export class LiveStream {
  private es: EventSource | null = null;
  private lastId = "";
  private renew: number | undefined;
  private retry: number | undefined;

  constructor(
    private readonly onEvent: StreamHandler,
    private readonly onStatus: (status: "connecting" | "live" | "reconnecting" | "closed", detail?: string) => void,
    private readonly onAuth: () => void,
  ) {}

  async start(): Promise<void> {
    this.onStatus("connecting");
    try {
      await call("POST", "/v1/events/session");
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        this.onStatus("closed", "token needed");
        this.onAuth();
        return;
      }
      this.onStatus("reconnecting", e instanceof Error ? e.message : String(e));
      this.retry = window.setTimeout(() => void this.start(), 2000);
      return;
    }
    this.open();
    window.clearInterval(this.renew);
    this.renew = window.setInterval(() => void call("POST", "/v1/events/session").catch(() => undefined), 60_000);
  }

  private open(): void {
    this.es?.close();
    const url = this.lastId !== "" ? `/v1/events?lastEventId=${encodeURIComponent(this.lastId)}` : "/v1/events";
    const es = new EventSource(url, { withCredentials: true });
    this.es = es;
    es.onopen = () => this.onStatus("live");
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {
        this.onStatus("reconnecting", "stream closed");
        window.clearTimeout(this.retry);
        this.retry = window.setTimeout(() => void this.start(), 1500);
      } else this.onStatus("reconnecting");
    };
    for (const t of TYPES)
      es.addEventListener(t, (ev) => {
        const me = ev as MessageEvent<string>;
        if (me.lastEventId) this.lastId = me.lastEventId;
        if (t === "bye") {
          es.close();
          this.onStatus("reconnecting", "daemon shut down");
          this.retry = window.setTimeout(() => void this.start(), 2000);
        }
        this.onEvent(t, JSON.parse(me.data) as unknown);
      });
  }

  stop(): void {
    this.es?.close();
    window.clearInterval(this.renew);
    window.clearTimeout(this.retry);
  }
}
