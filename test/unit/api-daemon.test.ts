// Goal: buildDaemon's life on simulated time, in process: start() recovers the VMs a journal holds
// (their clocks where true time says, after any downtime), refuses a damaged journal with a typed
// error naming the record and writes nothing, and close() lets a new daemon take the same journal.
// Method: test/helpers/daemon-app.ts's InProcessDaemons (no port, MemoryJournal kept by the test),
// requests through inject(), downtime made by moving the simulated clock.
import { afterEach, describe, expect, it } from "vitest";
import type { Daemon } from "../../src/daemon/daemon.js";
import { MemoryJournal, type VmRecord } from "../../src/shared/migration/journal.js";
import { InProcessDaemons } from "../helpers/daemon-app.js";

const S = 1_000_000_000n;
let world: InProcessDaemons;
afterEach(() => world?.close());

async function get(d: Daemon, url: string) {
  const res = await world.inject(d, { method: "GET", url });
  return { status: res.statusCode, body: res.json() };
}

describe("buildDaemon over a journal", () => {
  it("recovers its VMs after a restart, their clocks where true time says", async () => {
    world = new InProcessDaemons();
    const journal = new MemoryJournal();
    const d = await world.daemon("r", { journal });
    expect((await world.inject(d, { method: "POST", url: "/v1/vms", payload: { id: "kept", vcpus: 2, guestTscKhz: "2000000" } })).statusCode).toBe(201);
    await world.advance(S);
    await world.stop(d);
    await world.advance(5n * S); // the daemon is down; true time and the host's TSC run on
    const again = await world.daemon("r", { journal });
    const vm = await get(again, "/v1/vms/kept?vcpus=2");
    expect(vm.status).toBe(200);
    expect(vm.body).toMatchObject({ id: "kept", generation: "0", role: "owner", running: true, trueNs: "6000000000", kvmNs: "6000000000" });
    expect(vm.body.vcpu.map((v: { tsc: string }) => v.tsc)).toEqual(["12000000000", "12000000000"]); // 2 GHz for 6 s
  });

  it("refuses to start on a damaged record, naming it, and writes nothing", async () => {
    world = new InProcessDaemons();
    const journal = new MemoryJournal();
    const d = await world.daemon("dmg", { journal });
    await world.inject(d, { method: "POST", url: "/v1/vms", payload: { id: "vm-damaged", vcpus: 1 } });
    await world.advance(S);
    await world.stop(d);
    let stored: VmRecord | undefined;
    journal.corruptVm("vm-damaged", (r) => {
      r.generation = 7n;
      stored = r;
    });
    const before = { ...(stored as VmRecord) };

    const broken = await world.daemon("dmg", { journal, start: false });
    await expect(broken.start()).rejects.toMatchObject({ code: "data_loss", reason: "journal_record_damaged", message: expect.stringContaining("vm-damaged") });
    expect(stored).toEqual(before);
    expect(() => journal.listVms()).toThrow(/vm-damaged is damaged/); // not rewritten: a put would store a sound record
  });
});
