// Goal: the two-host topology of a two-container run, without a container engine: one daemon per
// network namespace, joined only by a veth pair; a VM migrates across it with 5 ms of skew and the
// guest's clocks continue. Method: scripts/netns.sh via test/helpers/netns.ts (skips with a printed
// reason where namespaces cannot be made), real daemon processes, the control API through a relay.
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiClient } from "../../src/client/api.js";
import { createTopology, netnsAvailable, type Topology } from "../helpers/netns.js";
import { startProcess, type ManagedProcess } from "../helpers/proc.js";

const avail = netnsAvailable();
if (!avail.ok) console.log(`skip: netns migration test: ${avail.reason}`);

describe.skipIf(!avail.ok)("migration between two network namespaces", () => {
  let topo: Topology;
  const procs: ManagedProcess[] = [];
  let src: ApiClient;
  let dst: ApiClient;

  beforeAll(async () => {
    topo = await createTopology();
    const dir = mkdtempSync(join(tmpdir(), "tscmig-netns-"));
    // Off loopback the data plane must authenticate its peers: both daemons share a peer token.
    const peerToken = randomBytes(24).toString("base64url");
    const start = async (side: "src" | "dst", name: string, addr: string, env: Record<string, string>) => {
      const fwd = await topo.forward(side, 7070);
      const p = await startProcess({
        name,
        command: process.execPath,
        args: ["bin/tscmig.js", "daemon", "--name", name, "--http", "127.0.0.1:7070", "--grpc", `${addr}:7071`, "--data", join(dir, name)],
        env: { TSCMIG_PEER_TOKEN: peerToken, ...env },
        spawn: topo.spawner(side),
        readyUrl: `${fwd.url}/healthz`,
      });
      procs.push(p);
      return new ApiClient(fwd.url);
    };
    src = await start("src", "source", topo.srcAddr, {});
    dst = await start("dst", "destination", topo.dstAddr, { TSCMIG_SKEW_OFFSET_NS: "5000000" });
  }, 120_000);

  afterAll(async () => {
    for (const p of procs) await p.kill();
    await topo?.destroy();
  });

  it("migrates a VM across the veth pair; TSC continues within the one-sided bound despite 5 ms of skew", async () => {
    await src.call("POST", "/v1/vms", { id: "netns-vm", vcpus: 4 });
    const r = await src.call<Record<string, string | number>>("POST", "/v1/vms/netns-vm/migrate", {
      destination: `${topo.dstAddr}:7071`,
      policy: "advance",
      estimator: "one-sided",
      doorbell: true,
    });
    expect(r.outcome).toBe("committed");
    expect(r.stoppedVcpus).toBe(4);
    const err = BigInt(r.tscErrorNs as string);
    expect(err < 0n ? -err : err).toBeLessThanOrEqual(BigInt(r.errorBoundNs as string));
    const after = await dst.call<Record<string, unknown>>("GET", "/v1/vms/netns-vm");
    expect(after.running).toBe(true);
    expect(BigInt((after.vcpu as { tsc: string }[])[0]!.tsc)).toBeGreaterThan(BigInt(r.tscAtPause as string));
    await expect(src.call("GET", "/v1/vms/netns-vm")).rejects.toThrow(/no VM/);
  });
});
