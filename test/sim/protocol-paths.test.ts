// Goal: the simulator proves the path production takes: a default campaign carries migrations over
// the Handover exchange and, when an exchange fails, over the unary calls, both through the one
// protocol core that serves gRPC. Method: seeded simulated runs; count committed migrations by the
// path their history records.
import { describe, expect, it } from "vitest";
import { runSimulation } from "../../src/chaos/sim/run.js";
import { DEFAULT_SCENARIO } from "../../src/chaos/sim/scenario.js";

describe("the simulated network carries both paths", () => {
  it("a default campaign commits migrations over Handover and over the unary calls", async () => {
    const paths: Record<string, number> = {};
    for (let seed = 1n; seed <= 60n; seed++) {
      const r = await runSimulation(seed, { ...DEFAULT_SCENARIO });
      for (const e of r.history.events) if (e.kind === "migration" && e.outcome === "committed") paths[e.path] = (paths[e.path] ?? 0) + 1;
    }
    expect(paths.handover ?? 0, JSON.stringify(paths)).toBeGreaterThan(0);
    expect(paths.unary ?? 0, JSON.stringify(paths)).toBeGreaterThan(0);
    expect(paths.handover ?? 0, "Handover is the common path").toBeGreaterThan(paths.unary ?? 0);
  });
});
