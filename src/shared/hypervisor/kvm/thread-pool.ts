// vCPU threads started before any VM needs them. Starting one (a V8 isolate, koffi) takes tens of
// milliseconds, against a tenth of a millisecond for a later resume: a destination starts its VM's
// threads at the resume, inside the blackout, so a few wait here ready. Idle ones do not keep the
// process alive; close() ends them.

import { Worker } from "node:worker_threads";
import { koffiPath } from "../../platform/libc.js";
import { pooledVcpuThreadSource } from "./vcpu-thread.js";

export class VcpuThreadPool {
  private idle: Worker[] = [];
  private closed = false;
  private filling = false;

  constructor(private readonly size: number) {
    this.fill();
  }

  /** A started thread waiting for its VM's data (KvmVm posts it), or null when none is idle. */
  take(): Worker | null {
    if (this.closed) return null;
    const w = this.idle.shift() ?? null;
    // Replaced after this synchronous turn: starting a thread is not the taker's cost.
    if (!this.filling) {
      this.filling = true;
      queueMicrotask(() => {
        this.filling = false;
        this.fill();
      });
    }
    return w;
  }

  private fill(): void {
    while (!this.closed && this.idle.length < this.size) {
      const w = new Worker(pooledVcpuThreadSource(), { eval: true, workerData: { koffiPath: koffiPath() } });
      w.unref();
      w.once("error", () => (this.idle = this.idle.filter((x) => x !== w)));
      this.idle.push(w);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    const idle = this.idle;
    this.idle = [];
    await Promise.all(idle.map((w) => w.terminate()));
  }
}
