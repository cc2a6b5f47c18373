// A client of a daemon's `GET /v1/events` (server-sent events) for programs: `tscmig watch` and the
// tests. It sends the bearer header (programs can; browsers use the session cookie instead) and
// yields each event with its type, id and parsed JSON data.

import { request } from "undici";
import { isErrorCode, TscmigError } from "../shared/errors.js";

export interface StreamEvent {
  type: string;
  id: string | undefined;
  data: unknown;
}

/** Parses SSE text as it arrives; `push` returns the events completed by this chunk. */
export class SseParser {
  private buffer = "";
  private id: string | undefined;

  push(chunk: string): StreamEvent[] {
    this.buffer += chunk.replaceAll("\r\n", "\n");
    const out: StreamEvent[] = [];
    for (;;) {
      const end = this.buffer.indexOf("\n\n");
      if (end < 0) break;
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      let type = "message";
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
        if (field === "event") type = value;
        else if (field === "data") data.push(value);
        else if (field === "id") this.id = value;
      }
      if (data.length === 0) continue; // retry: lines, comments
      let parsed: unknown;
      try {
        parsed = JSON.parse(data.join("\n"));
      } catch {
        throw new TscmigError("internal", `event ${type}: data is not JSON`);
      }
      out.push({ type, id: this.id, data: parsed });
    }
    if (this.buffer.length > 16 * 1024 * 1024) throw new TscmigError("resource_exhausted", "an event larger than 16 MiB");
    return out;
  }
}

export interface OpenStreamOptions {
  token?: string;
  lastEventId?: string;
  signal?: AbortSignal;
  /** How long to wait for the answer's headers. */
  connectTimeoutMs?: number;
}

/** Opens the stream and yields its events until the daemon ends it (or `signal` aborts). */
export async function* eventStream(baseUrl: string, o: OpenStreamOptions = {}): AsyncGenerator<StreamEvent> {
  const url = `${baseUrl.replace(/\/$/, "")}/v1/events${o.lastEventId ? `?lastEventId=${encodeURIComponent(o.lastEventId)}` : ""}`;
  let res;
  try {
    res = await request(url, {
      method: "GET",
      headers: { accept: "text/event-stream", ...(o.token ? { authorization: `Bearer ${o.token}` } : {}) },
      headersTimeout: o.connectTimeoutMs ?? 10_000,
      bodyTimeout: 0, // a stream: the daemon's heartbeat shows it is alive
      ...(o.signal ? { signal: o.signal } : {}),
    });
  } catch (e) {
    throw new TscmigError("unavailable", `GET ${url}: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (res.statusCode !== 200) {
    const text = await res.body.text();
    let err: { code?: string; message?: string } = {};
    try {
      err = (JSON.parse(text) as { error?: typeof err }).error ?? {};
    } catch {
      // not our error shape
    }
    throw new TscmigError(err.code && isErrorCode(err.code) ? err.code : "internal", `GET /v1/events: ${err.message ?? res.statusCode}`);
  }
  const parser = new SseParser();
  const decoder = new TextDecoder();
  try {
    for await (const chunk of res.body) for (const ev of parser.push(decoder.decode(chunk as Uint8Array, { stream: true }))) yield ev;
  } catch (e) {
    if (o.signal?.aborted) return;
    throw new TscmigError("unavailable", `event stream: ${e instanceof Error ? e.message : String(e)}`);
  }
}
