// The protocol code alone in simulation, next to the chaos runner's figure (main.ts): two
// TscmigNodes on one SimClock/SimScheduler, in-memory journals, and the peer protocol over a
// transport with no network (rpc/direct-transport.ts: the same codec and protocol core, a simulated
// one-way delay, no faults, guest samples or checker), so the gap between the two figures is what a
// campaign adds around each migration.

import { TscmigError } from "../shared/errors.js";
import { EmulatedHost } from "../shared/hypervisor/host.js";
import { SILENT_LOGGER } from "../shared/logger.js";
import { MemoryJournal } from "../shared/migration/journal.js";
import { DirectNetwork } from "../shared/rpc/direct-transport.js";
import type { Clock } from "../shared/time/clock.js";
import { SeededRandom } from "../shared/time/random.js";
import { flushMicrotasks, SimClock, SimScheduler } from "../shared/time/sim.js";
import { defaultNodeConfig, TscmigNode } from "../daemon/node.js";

export interface SimRunOptions {
  /** Migrations to carry (one VM bounced between the two nodes). */
  migrations: number;
  vcpus: number;
  seed: bigint;
  /** Real clock that times the run (wall time, this process). */
  wallClock: Clock;
}

export interface SimRunResult {
  runner: string;
  migrations: number;
  committed: number;
  wallNs: bigint;
  simulatedNs: bigint;
}

export type SimRunner = (o: SimRunOptions) => Promise<SimRunResult>;

/** One-way delay of every simulated message (loopback-like). */
const ONE_WAY_NS = 50_000n;

/** Drives the scheduler until `p` settles: microtasks first, then the next simulated event. */
async function pump<T>(sched: SimScheduler, p: Promise<T>): Promise<T> {
  let done = false;
  p.then(
    () => (done = true),
    () => (done = true),
  );
  while (!done) {
    await flushMicrotasks();
    if (done) break;
    if (!sched.step()) throw new TscmigError("internal", "simulation ran out of events before the migration finished");
  }
  return p;
}

/** The stand-in runner: two nodes, one VM bounced between them, one migration at a time. */
export const minimalPairRunner: SimRunner = async (o) => {
  const clock = new SimClock();
  const sched = new SimScheduler(clock);
  const net = new DirectNetwork(sched, { outNs: ONE_WAY_NS, backNs: ONE_WAY_NS });
  const root = new SeededRandom(o.seed);
  const mk = (name: string) => {
    const host = new EmulatedHost({ name, clock, epochNs: 1_767_225_600_000_000_000n, maxerrorNs: 100_000n });
    const node = new TscmigNode(defaultNodeConfig(name, name), {
      clock,
      scheduler: sched,
      random: root.fork(name),
      log: SILENT_LOGGER,
      host,
      journal: new MemoryJournal(),
      dialer: net.dialer(name),
    });
    net.attach(name, node.peer, () => node.host.rawNs());
    node.start();
    return node;
  };
  const nodes = [mk("sim-a"), mk("sim-b")] as const;
  nodes[0].createVm({ id: "sim-vm", vcpus: o.vcpus });
  let here = 0;
  let committed = 0;
  const sim0 = clock.monotonicNs();
  const t0 = o.wallClock.monotonicNs();
  for (let i = 0; i < o.migrations; i++) {
    const from = nodes[here] as TscmigNode;
    const to = nodes[1 - here] as TscmigNode;
    const r = await pump(sched, from.migrate("sim-vm", { destination: to.cfg.name }));
    if (r.outcome !== "committed") throw new TscmigError("internal", `simulated migration ${i}: ${r.outcome} ${r.error?.message ?? ""}`);
    committed++;
    here = 1 - here;
  }
  const wallNs = o.wallClock.monotonicNs() - t0;
  for (const n of nodes) n.stop();
  return { runner: "minimal-pair (two TscmigNodes, the peer protocol over a transport with no network)", migrations: o.migrations, committed, wallNs, simulatedNs: clock.monotonicNs() - sim0 };
};

/** The protocol-only runner the benchmark reports beside the chaos runner's figure. */
export const simRunner: SimRunner = minimalPairRunner;

// ---- the chaos runner: per-core rate and scaling over jobs ------------------------------------------

/** One timed campaign of the chaos runner (default scenario, every fault kind, checker on, no determinism reruns). */
export interface ChaosTiming {
  jobs: number;
  runs: number;
  migrationsStarted: number;
  migrationsCommitted: number;
  samples: number;
  simulatedNs: bigint;
  wallNs: bigint;
  /** CPU time of this whole process over the campaign (every thread: workers, GC, compiler). */
  cpuNs: bigint;
  /** Migrations started per second of wall time. */
  migrationsPerSec: number;
  /** Migrations started per second of CPU time: the rate one fully available core gives. */
  migrationsPerCpuSec: number;
}

export interface ChaosRoundResult {
  oneJob: ChaosTiming;
  twoJobs: ChaosTiming;
  /** Wall-time throughput of two jobs over one's. */
  scaling: number;
}

export interface ChaosSimResult {
  runner: string;
  /** Pooled over the rounds' one-job campaigns. */
  oneJob: ChaosTiming;
  twoJobs: ChaosTiming;
  /** The per-core rate: migrations started per CPU-second, one job, pooled over the rounds. */
  migrationsPerCoreSec: number;
  /** Median over the rounds of two jobs' wall throughput over one job's (the machine is shared: see `loadAverage`). */
  scaling: number;
  /**
   * 2 × (two jobs' per-CPU-second rate ÷ one job's): the scaling two free cores would give, i.e. what
   * the parallel campaign itself costs (workers starting cold, outcomes crossing threads), without
   * the other processes' share of the cores.
   */
  scalingCpuNormalized: number;
  rounds: ChaosRoundResult[];
  /** The machine's 1-minute load average before and after (2 cores: above ~1 the jobs compete). */
  loadAverage: [number, number];
}

export interface ChaosBenchDeps {
  wallClock: Clock;
  cpuNs: () => bigint;
  loadAverage: () => number;
  /** Runs one campaign (campaign.ts's runCampaign over defaultCampaign with these settings). */
  campaign: (o: { seed: bigint; runs: number; jobs: number }) => Promise<{ totals: { migrationsStarted: number; migrationsCommitted: number; samples: number; simNs: bigint } }>;
  say: (line: string) => void;
}

async function timeCampaign(d: ChaosBenchDeps, seed: bigint, runs: number, jobs: number): Promise<ChaosTiming> {
  const w0 = d.wallClock.monotonicNs();
  const c0 = d.cpuNs();
  const r = await d.campaign({ seed, runs, jobs });
  const cpuNs = d.cpuNs() - c0;
  const wallNs = d.wallClock.monotonicNs() - w0;
  return timing(jobs, runs, r.totals, wallNs, cpuNs);
}

function timing(jobs: number, runs: number, t: { migrationsStarted: number; migrationsCommitted: number; samples: number; simNs: bigint }, wallNs: bigint, cpuNs: bigint): ChaosTiming {
  return {
    jobs,
    runs,
    migrationsStarted: t.migrationsStarted,
    migrationsCommitted: t.migrationsCommitted,
    samples: t.samples,
    simulatedNs: t.simNs,
    wallNs,
    cpuNs,
    migrationsPerSec: t.migrationsStarted / (Number(wallNs) / 1e9),
    migrationsPerCpuSec: t.migrationsStarted / (Number(cpuNs) / 1e9),
  };
}

function pooled(ts: readonly ChaosTiming[]): ChaosTiming {
  const sum = (f: (t: ChaosTiming) => number) => ts.reduce((a, t) => a + f(t), 0);
  const sumNs = (f: (t: ChaosTiming) => bigint) => ts.reduce((a, t) => a + f(t), 0n);
  const t = { migrationsStarted: sum((x) => x.migrationsStarted), migrationsCommitted: sum((x) => x.migrationsCommitted), samples: sum((x) => x.samples), simNs: sumNs((x) => x.simulatedNs) };
  return timing(ts[0]?.jobs ?? 0, sum((x) => x.runs), t, sumNs((x) => x.wallNs), sumNs((x) => x.cpuNs));
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/**
 * The chaos runner's per-core rate and its scaling from one job to two: after a warm-up, `rounds`
 * rounds each time the same campaign (same seed, same runs) with one job and with two, in
 * alternating order, so a burst of load from elsewhere hits both. One job runs in this thread;
 * two jobs start two worker threads, cold, as every `tscmig chaos --jobs 2` does.
 */
export async function chaosRunnerBench(d: ChaosBenchDeps, o: { runs: number; rounds: number; warmupRuns: number }): Promise<ChaosSimResult> {
  const load0 = d.loadAverage();
  await d.campaign({ seed: 7n, runs: o.warmupRuns, jobs: 1 });
  const rounds: ChaosRoundResult[] = [];
  for (let r = 0; r < o.rounds; r++) {
    d.say(`sim: round ${r + 1}/${o.rounds}: ${o.runs} runs with one job and with two`);
    const first = r % 2 === 0 ? 1 : 2;
    const a = await timeCampaign(d, 1n, o.runs, first);
    const b = await timeCampaign(d, 1n, o.runs, 3 - first);
    const [oneJob, twoJobs] = first === 1 ? [a, b] : [b, a];
    rounds.push({ oneJob, twoJobs, scaling: twoJobs.migrationsPerSec / oneJob.migrationsPerSec });
  }
  const oneJob = pooled(rounds.map((x) => x.oneJob));
  const twoJobs = pooled(rounds.map((x) => x.twoJobs));
  return {
    runner: "chaos campaign (tscmig chaos --mode sim, default scenario, every fault kind, checker on, no determinism reruns, no report files)",
    oneJob,
    twoJobs,
    migrationsPerCoreSec: oneJob.migrationsPerCpuSec,
    scaling: median(rounds.map((x) => x.scaling)),
    scalingCpuNormalized: (2 * twoJobs.migrationsPerCpuSec) / oneJob.migrationsPerCpuSec,
    rounds,
    loadAverage: [load0, d.loadAverage()],
  };
}
