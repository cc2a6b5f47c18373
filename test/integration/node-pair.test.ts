// Goal: a VM migrated between two daemon cores over real gRPC keeps its clocks, under every policy.
// Method: two TscmigNodes in one process (real clock, loopback gRPC); compare the destination's
// guest TSC at resume with what the source would read at that instant, against the reported bound.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startSide, stopSide, type PairSide } from "../helpers/pair.js";
import { POLICIES } from "../../src/shared/migration/restore.js";
import { ESTIMATORS } from "../../src/shared/migration/blackout.js";

let a: PairSide;
let b: PairSide;

beforeAll(async () => {
  a = await startSide({ name: "src" });
  b = await startSide({ name: "dst" }, 2n);
});
afterAll(async () => {
  await stopSide(a);
  await stopSide(b);
});

const abs = (x: bigint) => (x < 0n ? -x : x);

describe("migration between two nodes over gRPC", () => {
  for (const policy of POLICIES)
    for (const estimator of ESTIMATORS)
      it(`${policy} / ${estimator}: TSC continues within the reported bound`, async () => {
        const vm = a.node.createVm({ vcpus: 4 });
        const r = await a.node.migrate(vm.id, { destination: b.address, policy, estimator, doorbell: true });
        expect(r.outcome, JSON.stringify(r.error)).toBe("committed");
        expect(r.path, "Transfer and Commit rode one Handover call").toBe("handover");
        expect(r.trueBlackoutNs).toBeGreaterThan(0n);
        if (policy !== "freeze") expect(abs(r.tscErrorNs)).toBeLessThanOrEqual(r.errorBoundNs);
        else expect(abs(r.tscErrorNs + r.trueBlackoutNs)).toBeLessThanOrEqual(r.errorBoundNs);
        const dst = b.node.readVm(vm.id);
        expect(dst.running).toBe(true);
        expect(dst.vcpu[0]!.tsc).toBeGreaterThanOrEqual(r.tscAtPause);
        expect(() => a.node.getVm(vm.id)).toThrow(/no VM/);
      });
});

describe("a destination without the Handover method (an older daemon)", () => {
  it("the source falls back to the unary Transfer and Commit; the clocks are carried the same", async () => {
    const old = await startSide({ name: "old-dst", withoutHandover: true }, 3n);
    try {
      const vm = a.node.createVm({ vcpus: 4 });
      const r = await a.node.migrate(vm.id, { destination: old.address, policy: "advance", estimator: "one-sided", doorbell: true });
      expect(r.outcome, JSON.stringify(r.error)).toBe("committed");
      expect(r.path).toBe("unary");
      expect(abs(r.tscErrorNs)).toBeLessThanOrEqual(r.errorBoundNs);
      expect(r.stoppedVcpus).toBe(4);
      expect(old.node.readVm(vm.id).running).toBe(true);
    } finally {
      await stopSide(old);
    }
  });
});
