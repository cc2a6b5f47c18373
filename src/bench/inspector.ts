// A minimal Chrome DevTools Protocol client for the benchmark: it forces a full garbage collection
// in a daemon started with `--inspect=127.0.0.1:0`, so that a memory reading counts what the VMs
// keep alive rather than garbage V8 has not collected yet. No product code is involved.

import { WebSocket } from "undici";
import { TscmigError } from "../shared/errors.js";
import type { LocalDaemon } from "../client/local-daemons.js";

/** The inspector's WebSocket URL, from the line node prints on stderr. */
export function inspectorUrl(d: LocalDaemon): string {
  for (const line of d.logs) {
    const m = /Debugger listening on (ws:\/\/\S+)/.exec(line);
    if (m) return m[1] as string;
  }
  throw new TscmigError("unavailable", `daemon ${d.name} has no inspector (start it with --inspect=127.0.0.1:0)`);
}

export interface Inspector {
  call(method: string, params?: Record<string, unknown>): Promise<unknown>;
  close(): void;
}

export async function openInspector(url: string): Promise<Inspector> {
  const ws = new WebSocket(url);
  await new Promise<void>((ok, fail) => {
    ws.addEventListener("open", () => ok(), { once: true });
    ws.addEventListener("error", () => fail(new TscmigError("unavailable", `cannot open ${url}`)), { once: true });
  });
  let next = 1;
  const waiting = new Map<number, { ok: (v: unknown) => void; fail: (e: Error) => void }>();
  ws.addEventListener("message", (ev) => {
    const msg = JSON.parse(String(ev.data)) as { id?: number; result?: unknown; error?: { message: string } };
    if (msg.id === undefined) return;
    const w = waiting.get(msg.id);
    waiting.delete(msg.id);
    if (msg.error) w?.fail(new TscmigError("internal", `inspector: ${msg.error.message}`));
    else w?.ok(msg.result);
  });
  return {
    call: (method, params = {}) =>
      new Promise((ok, fail) => {
        const id = next++;
        waiting.set(id, { ok, fail });
        ws.send(JSON.stringify({ id, method, params }));
      }),
    close: () => ws.close(),
  };
}

/** Two full collections (the second sweeps what the first's finalizers released). */
export async function collectGarbage(i: Inspector): Promise<void> {
  await i.call("HeapProfiler.collectGarbage");
  await i.call("HeapProfiler.collectGarbage");
}
