// `tscmig up`: a source and a destination daemon on this machine until Ctrl-C. Their logs are shown
// line by line behind a `[source]` / `[destination]` prefix; `--data DIR` keeps their journals (VMs,
// migrations) in DIR/source and DIR/destination across runs.

import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { type LocalDaemon, spawnDaemon } from "../client/local-daemons.js";

export interface UpOptions {
  basePort: number;
  data?: string;
  /** Show the daemons' log lines on stderr. */
  logs: boolean;
  json: boolean;
  /** The daemons' hypervisor backend (`tscmig daemon --backend`). */
  backend?: string;
}

/** Runs until SIGINT/SIGTERM (exit status 0) or until a daemon exits on its own (1). */
export async function runUp(o: UpOptions, out: (s: string) => void): Promise<number> {
  const dataOf = (name: string) => {
    if (o.data === undefined) return undefined;
    const dir = join(resolve(o.data), name);
    mkdirSync(dir, { recursive: true });
    return dir;
  };
  // Each daemon's dashboard offers the other as a destination (--peers NAME=GRPC@HTTP).
  const spawnOne = (name: string, httpPort: number, peer: { name: string; httpPort: number }) => {
    const data = dataOf(name);
    const peers = `${peer.name}=127.0.0.1:${peer.httpPort + 1}@127.0.0.1:${peer.httpPort}`;
    return spawnDaemon({ name, http: `127.0.0.1:${httpPort}`, grpc: `127.0.0.1:${httpPort + 1}`, echo: o.logs, args: ["--peers", peers, ...(o.backend !== undefined ? ["--backend", o.backend] : [])], ...(data !== undefined ? { data } : {}) });
  };
  const started = await Promise.allSettled([
    spawnOne("source", o.basePort, { name: "destination", httpPort: o.basePort + 10 }),
    spawnOne("destination", o.basePort + 10, { name: "source", httpPort: o.basePort }),
  ]);
  const daemons = started.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const failed = started.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) {
    await Promise.all(daemons.map((d) => d.stop()));
    throw failed.reason;
  }
  const [s, d] = daemons as [LocalDaemon, LocalDaemon];
  const info = {
    source: { dashboard: `${s.http}/ui/`, http: s.http, grpc: s.grpc, data: s.data },
    destination: { dashboard: `${d.http}/ui/`, http: d.http, grpc: d.grpc, data: d.data },
  };
  if (o.json) out(`${JSON.stringify(info, null, 2)}\n`);
  else
    out(
      `dashboard: open ${s.http}/ui/ (source) and ${d.http}/ui/ (destination) in a browser\n` +
        `source       control API ${s.http}  gRPC ${s.grpc}  data ${s.data}\n` +
        `destination  control API ${d.http}  gRPC ${d.grpc}  data ${d.data}\n` +
        `try: tscmig vm create --api ${s.http} --vcpus 4 && tscmig migrate <vm-id> --api ${s.http} --to ${d.grpc}\n` +
        `Ctrl-C stops both.\n`,
    );
  return new Promise<number>((done) => {
    let stopping = false;
    const stop = (why: string, code: number) => {
      if (stopping) return;
      stopping = true;
      process.stderr.write(`tscmig up: ${why}: stopping both daemons\n`);
      void Promise.all([s.stop(), d.stop()]).then(() => done(code));
    };
    process.once("SIGINT", () => stop("SIGINT", 0));
    process.once("SIGTERM", () => stop("SIGTERM", 0));
    s.child.once("exit", (code) => stop(`source exited (${code})`, 1));
    d.child.once("exit", (code) => stop(`destination exited (${code})`, 1));
  });
}
