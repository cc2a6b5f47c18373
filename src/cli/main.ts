// `tscmig`: one binary, one command per job. `--help` everywhere (with examples); `--json` for machines.
// Exit status: 0 success; 1 a failed migration or campaign, or a daemon that could not be reached or
// refused the request; 2 a usage or validation error, reported before anything starts or changes.

import { Command, CommanderError, Option } from "commander";
import { isTscmigError, TscmigError } from "../shared/errors.js";
import { buildInfo } from "../shared/build-info.js";
import { LIMITS } from "../shared/limits.js";
import { DAEMON_CONFIG } from "../daemon/daemon-config.js";
import { runDaemon } from "../daemon/main.js";
import { ApiClient } from "../client/api.js";
import { runDemo } from "./demo.js";
import { DURATION, durationFlag, examples, hostPortFlag, intFlag, numberFlag, SIGNED_DURATION, u64Flag, urlFlag } from "./flags.js";
import { renderMigration } from "./render.js";
import { runUp } from "./up.js";
import { runWatch } from "./watch.js";
import { RealScheduler } from "../shared/platform/index.js";
import { chaosCommand } from "../chaos/cli.js";
import { kvmCommand } from "../kvm/cli.js";
import { renderBench, runBench, SECTIONS, type Section } from "../bench/main.js";

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

const EXIT_HELP = `
Exit status:
  0  success
  1  a migration that did not commit, a chaos campaign with a violation, or a daemon that
     could not be reached or refused the request
  2  a usage or validation error (unknown command or flag, a bad value): nothing was started or changed`;

const out = (s: string): void => {
  process.stdout.write(s);
};
const print = (v: unknown): void => out(`${JSON.stringify(v, null, 2)}\n`);

function api(opts: { api: string; token?: string }): ApiClient {
  return new ApiClient(opts.api, opts.token ?? process.env.TSCMIG_TOKEN);
}

const POLICY_HELP =
  "how guest time crosses the blackout: advance (TSC and kvmclock run on as if the vCPUs were only descheduled), kvm-realtime (KVM_SET_CLOCK with KVM_CLOCK_REALTIME, the upstream KVM algorithm), freeze (upstream QEMU: the guest loses the blackout), advance-capped (advance up to --cap, freeze beyond)";
const ESTIMATOR_HELP =
  "how the destination measures the blackout: wallclock (destination minus source realtime: off by the hosts' whole skew), one-sided (durations on each host's monotonic clock plus half the round trip: immune to skew), probe (wallclock corrected by an NTP-style probe of the offset)";
const CLOCKSOURCE_HELP = "the guest kernel's clocksource: tsc (read the TSC directly, as Linux does when it is invariant) or kvm-clock (the pvclock page)";

const apiOption = () => new Option("--api <url>", "control API of the daemon to talk to").default("http://127.0.0.1:7070").argParser(urlFlag);
const tokenOption = () => new Option("--token <token>", "bearer token of the control API (or TSCMIG_TOKEN)");
const policyOption = (def: string) => new Option("--policy <policy>", POLICY_HELP).choices(["advance", "kvm-realtime", "freeze", "advance-capped"]).default(def);
const estimatorOption = (def: string) => new Option("--estimator <estimator>", ESTIMATOR_HELP).choices(["wallclock", "one-sided", "probe"]).default(def);
const clocksourceOption = () => new Option("--clocksource <cs>", CLOCKSOURCE_HELP).choices(["kvm-clock", "tsc"]);

export function buildCli(): Command {
  const program = new Command("tscmig")
    .description("Carry a VM's time across live migration exactly as KVM does, and prove the guest's clocks stay honest.")
    .version(buildInfo().version, "-V, --version", "print the version")
    // Set before any subcommand is added: they inherit both. Errors become CommanderErrors that
    // main() maps to exit status 2; help and --version exit 0.
    .exitOverride()
    .showHelpAfterError("(add --help for usage)")
    .enablePositionalOptions();
  program.addHelpText("after", `${EXIT_HELP}\n\nExamples:\n  $ tscmig demo\n  $ tscmig up --data ./state\n  $ tscmig chaos --mode sim --runs 200\n`);

  const daemon = program.command("daemon").description("run one daemon (source and destination roles); configuration: flags, then TSCMIG_* environment, then defaults");
  for (const spec of Object.values(DAEMON_CONFIG)) {
    const def = spec.defaultDoc ?? (spec.default === undefined ? undefined : String(spec.default));
    daemon.addOption(new Option(`--${spec.flag} <value>`, `${spec.doc} [env ${spec.env}${def === undefined ? "" : `; default ${def}`}]`));
  }
  daemon.action(async (opts: Record<string, string | undefined>) => {
    await runDaemon(opts);
  });
  examples(daemon, [
    "tscmig daemon --name a --http 127.0.0.1:7070 --grpc 127.0.0.1:7071 --data ./a",
    "TSCMIG_SKEW_OFFSET_NS=5000000 tscmig daemon --name b --http 0.0.0.0:7080 --grpc 0.0.0.0:7081 --advertise b.example:7081",
  ]);

  const up = program
    .command("up")
    .description("start a source and a destination daemon on this machine, show their logs, and wait (Ctrl-C stops both)")
    .addOption(new Option("--base-port <port>", "source HTTP on BASE, gRPC BASE+1; destination BASE+10, BASE+11").default(7070).argParser(intFlag(1, 65_524)))
    .option("--data <dir>", "keep both daemons' state in DIR/source and DIR/destination across runs (default: a new temporary directory)")
    .option("--quiet", "do not show the daemons' logs")
    .option("--json", "print the addresses as JSON")
    .addOption(backendOption())
    .action(async (o: { basePort: number; data?: string; quiet?: boolean; json?: boolean; backend: string }) => {
      process.exitCode = await runUp({ basePort: o.basePort, ...(o.data !== undefined ? { data: o.data } : {}), logs: o.quiet !== true, json: o.json === true, backend: o.backend }, out);
    });
  examples(up, ["tscmig up", "tscmig up --base-port 9000 --data ./state --quiet", "sudo tscmig up --backend kvm"]);

  const demo = program
    .command("demo")
    .description("start a pair (or use running daemons), create a VM, let it run, inject skew, migrate it and show what the guest saw")
    .addOption(new Option("--source-http <url>", "use this running source daemon (with --destination-http and --destination-grpc)").argParser(urlFlag))
    .addOption(new Option("--destination-http <url>", "use this running destination daemon").argParser(urlFlag))
    .addOption(new Option("--destination-grpc <host:port>", "the running destination's gRPC address").argParser(hostPortFlag))
    .addOption(new Option("--vcpus <n>", "vCPUs of the demo VM").default(4).argParser(intFlag(1, LIMITS.vcpuCountMax)))
    .addOption(new Option("--guest-tsc-khz <khz>", "guest TSC frequency (default: the host's)").argParser(u64Flag()))
    .addOption(clocksourceOption())
    .addOption(policyOption("kvm-realtime"))
    .addOption(estimatorOption("wallclock"))
    .addOption(
      new Option("--skew <duration>", "destination realtime offset relative to the source's, with a unit, e.g. 5ms, -2ms (default: 5ms on a pair the demo starts; running daemons keep the skew they have)").argParser(
        durationFlag(SIGNED_DURATION),
      ),
    )
    .option("--no-doorbell", "do not ring the doorbell after the restore")
    .addOption(new Option("--run-ms <ms>", "how long the guest runs on the source first, ms").default(300).argParser(intFlag(0, 600_000)))
    .option("--json", "machine-readable output")
    .addOption(tokenOption())
    .addOption(backendOption())
    .action(async (o: DemoFlags) => {
      process.exitCode = await runDemo(demoOptions(o), out);
    });
  examples(demo, [
    "tscmig demo",
    "tscmig demo --policy advance --estimator one-sided --skew 20ms",
    "sudo tscmig demo --backend kvm --vcpus 2",
    "tscmig demo --source-http http://127.0.0.1:7070 --destination-http http://127.0.0.1:7080 --destination-grpc 127.0.0.1:7081",
  ]);

  const vm = program.command("vm").description("create, list, inspect and delete VMs on a running daemon");
  vmCommands(vm);
  examples(vm, ["tscmig vm create --vcpus 4", "tscmig vm show web-1", "tscmig vm delete web-1"]);
  migrateCommand(program);
  skewCommand(program);

  const chaos = chaosCommand(program.command("chaos"), out);
  // Durations without a unit are refused here as everywhere in the CLI; the campaign parses the text.
  for (const flag of ["--skew-max", "--sample-interval"]) {
    const opt = chaos.options.find((x) => x.long === flag);
    const check = durationFlag(DURATION);
    opt?.argParser((raw: string) => {
      check(raw);
      return raw;
    });
  }
  examples(chaos, [
    "tscmig chaos --mode sim --seed 1 --runs 1000 --json out.json --junit out.xml --html out.html",
    "tscmig chaos --mode sim --runs 200 --guest-migration-handling off --policy kvm-realtime --estimator wallclock --skew-max 50ms",
    "tscmig chaos --mode live --runs 2",
  ]);

  watchCommand(program);
  kvmCommand(program.command("kvm"), out);
  benchCommand(program);
  return program;
}

interface DemoFlags {
  sourceHttp?: string;
  destinationHttp?: string;
  destinationGrpc?: string;
  vcpus: number;
  guestTscKhz?: string;
  clocksource?: string;
  policy: string;
  estimator: string;
  skew?: bigint;
  doorbell: boolean;
  runMs: number;
  json?: boolean;
  token?: string;
  backend: string;
}

/** `--backend`: the hypervisor of the daemons a command starts (validated here, passed to `tscmig daemon`). */
function backendOption(): Option {
  return new Option("--backend <name>", "hypervisor backend of the daemons it starts: emulated, or kvm (real KVM VMs; root, /dev/kvm)").choices(["emulated", "kvm"]).default("emulated");
}

function demoOptions(o: DemoFlags): Parameters<typeof runDemo>[0] {
  const running = [o.sourceHttp, o.destinationHttp, o.destinationGrpc].filter((x) => x !== undefined).length;
  if (running !== 0 && running !== 3)
    throw new TscmigError("invalid_argument", "--source-http, --destination-http and --destination-grpc go together: give all three to use running daemons, or none to start a pair");
  const skewNs = o.skew ?? (running === 0 ? 5_000_000n : undefined);
  return {
    ...(o.sourceHttp !== undefined ? { sourceHttp: o.sourceHttp } : {}),
    ...(o.destinationHttp !== undefined ? { destinationHttp: o.destinationHttp } : {}),
    ...(o.destinationGrpc !== undefined ? { destinationGrpc: o.destinationGrpc } : {}),
    vcpus: o.vcpus,
    ...(o.guestTscKhz !== undefined ? { guestTscKhz: o.guestTscKhz } : {}),
    ...(o.clocksource !== undefined ? { clocksource: o.clocksource } : {}),
    policy: o.policy,
    estimator: o.estimator,
    ...(skewNs !== undefined ? { skewNs } : {}),
    doorbell: o.doorbell,
    runMs: o.runMs,
    json: o.json === true,
    ...(o.token !== undefined ? { token: o.token } : {}),
    backend: o.backend,
  };
}

function vmCommands(vm: Command): void {
  const create = vm
    .command("create")
    .description("create a VM (its guest boots, enables kvmclock and synchronises NTP); prints it as JSON")
    .addOption(apiOption())
    .addOption(tokenOption())
    .option("--id <id>", "VM id (default: generated)")
    .addOption(new Option("--vcpus <n>", "vCPUs").default(1).argParser(intFlag(1, LIMITS.vcpuCountMax)))
    .addOption(new Option("--guest-tsc-khz <khz>", "guest TSC frequency (default: the host's)").argParser(u64Flag()))
    .addOption(clocksourceOption())
    .option("--no-migration-handling", "the guest ignores migration signals (Linux today)")
    .action(async (o: { api: string; token?: string; id?: string; vcpus: number; guestTscKhz?: string; clocksource?: string; migrationHandling: boolean }) => {
      const body = {
        vcpus: o.vcpus,
        ...(o.id !== undefined ? { id: o.id } : {}),
        ...(o.guestTscKhz !== undefined ? { guestTscKhz: o.guestTscKhz } : {}),
        ...(o.clocksource !== undefined ? { clocksource: o.clocksource } : {}),
        ...(o.migrationHandling === false ? { migrationHandling: false } : {}),
      };
      print(await api(o).call("POST", "/v1/vms", body));
    });
  examples(create, ["tscmig vm create --vcpus 4", "tscmig vm create --api http://10.0.0.5:7070 --id web-1 --vcpus 8 --clocksource tsc"]);
  const list = vm
    .command("list")
    .description("list VMs as JSON")
    .addOption(apiOption())
    .addOption(tokenOption())
    .action(async (o: { api: string; token?: string }) => print(await api(o).call("GET", "/v1/vms")));
  examples(list, ["tscmig vm list", "tscmig vm list --api http://127.0.0.1:7080"]);
  const show = vm
    .command("show <id>")
    .description("a VM's clocks now, as JSON")
    .addOption(apiOption())
    .addOption(tokenOption())
    .addOption(new Option("--vcpus <n>", "vCPUs to include").default(8).argParser(intFlag(0, LIMITS.vcpuCountMax)))
    .action(async (id: string, o: { api: string; token?: string; vcpus: number }) => print(await api(o).call("GET", `/v1/vms/${encodeURIComponent(id)}?vcpus=${o.vcpus}`)));
  examples(show, ["tscmig vm show web-1", "tscmig vm show web-1 --vcpus 0"]);
  const del = vm
    .command("delete <id>")
    .description("delete a VM (refused while it migrates); its id stays retired on this daemon")
    .addOption(apiOption())
    .addOption(tokenOption())
    .action(async (id: string, o: { api: string; token?: string }) => print(await api(o).call("DELETE", `/v1/vms/${encodeURIComponent(id)}`)));
  examples(del, ["tscmig vm delete web-1"]);
}

function migrateCommand(program: Command): void {
  const migrate = program
    .command("migrate <vm-id>")
    .description("migrate a VM from the daemon at --api to the daemon whose gRPC address is --to; exit 1 unless it committed")
    .addOption(apiOption())
    .addOption(tokenOption())
    .requiredOption("--to <host:port>", "destination daemon's gRPC address", hostPortFlag)
    .addOption(policyOption("advance"))
    .addOption(estimatorOption("one-sided"))
    .option("--doorbell", "ring the doorbell after the restore (default: off)")
    .addOption(new Option("--cap <duration>", "cap of advance-capped, with a unit, e.g. 1s (default: 1s)").argParser(durationFlag(DURATION)))
    .addOption(
      new Option("--switchover <mode>", "when the destination runs the VM: two-phase (after the source's durable decision) or on-receipt (as soon as the snapshot arrives: shorter blackout, but once sent the source cannot roll back on its own)")
        .choices(["two-phase", "on-receipt"])
        .default("two-phase"),
    )
    .option("--json", "print the full migration report as JSON")
    .action(async (id: string, o: { api: string; token?: string; to: string; policy: string; estimator: string; doorbell?: boolean; cap?: bigint; switchover: string; json?: boolean }) => {
      const doorbell = o.doorbell === true;
      if (!o.json) out(`migrating VM ${id} from ${o.api} to ${o.to}: policy ${o.policy}, estimator ${o.estimator}, switchover ${o.switchover}, doorbell ${doorbell ? "on" : "off"}\n`);
      const body = { destination: o.to, policy: o.policy, estimator: o.estimator, doorbell, switchover: o.switchover, ...(o.cap !== undefined ? { advanceCapNs: o.cap.toString() } : {}) };
      const r = await api(o).call<Record<string, unknown>>("POST", `/v1/vms/${encodeURIComponent(id)}/migrate`, body);
      if (o.json) print(r);
      else out(renderMigration(r));
      if (r.outcome !== "committed") process.exitCode = EXIT_FAILED;
    });
  examples(migrate, [
    "tscmig migrate web-1 --to 127.0.0.1:7081",
    "tscmig migrate web-1 --api http://127.0.0.1:7070 --to 127.0.0.1:7081 --policy kvm-realtime --estimator probe --doorbell --json",
    "tscmig migrate web-1 --to 127.0.0.1:7081 --switchover on-receipt",
  ]);
}

function skewCommand(program: Command): void {
  const skew = program
    .command("skew")
    .description("inject realtime skew into a running daemon's host (PUT /v1/host/clock); prints the host's clocks as JSON")
    .addOption(apiOption())
    .addOption(tokenOption())
    .addOption(new Option("--offset <duration>", "set the realtime offset from true time now, with a unit, e.g. 5ms").argParser(durationFlag(SIGNED_DURATION)))
    .addOption(new Option("--drift-ppm <ppm>", "realtime drift from now on, ppm").argParser(numberFlag(-LIMITS.driftPpmMax, LIMITS.driftPpmMax)))
    .addOption(new Option("--step <duration>", "step the clock by this much now, e.g. -1s").argParser(durationFlag(SIGNED_DURATION)))
    .addOption(new Option("--maxerror <duration>", "error bound the host claims for its realtime, e.g. 1ms").argParser(durationFlag(DURATION)))
    .option("--reset", "drop all skew")
    .action(async (o: { api: string; token?: string; offset?: bigint; driftPpm?: number; step?: bigint; maxerror?: bigint; reset?: boolean }) => {
      const body = {
        ...(o.offset !== undefined ? { offsetNs: o.offset.toString() } : {}),
        ...(o.driftPpm !== undefined ? { driftPpm: o.driftPpm } : {}),
        ...(o.step !== undefined ? { stepNs: o.step.toString() } : {}),
        ...(o.maxerror !== undefined ? { maxerrorNs: o.maxerror.toString() } : {}),
        ...(o.reset === true ? { reset: true } : {}),
      };
      if (Object.keys(body).length === 0) throw new TscmigError("invalid_argument", "skew: give at least one of --offset, --drift-ppm, --step, --maxerror, --reset");
      print(await api(o).call("PUT", "/v1/host/clock", body));
    });
  examples(skew, ["tscmig skew --api http://127.0.0.1:7080 --offset 5ms", "tscmig skew --drift-ppm 20 --maxerror 1ms", "tscmig skew --reset"]);
}

function watchCommand(program: Command): void {
  const watch = program
    .command("watch")
    .description("follow a daemon live in the terminal: host clocks, each VM's bounded clock against true time, migrations (its GET /v1/events stream)")
    .addOption(apiOption())
    .addOption(tokenOption())
    .option("--lines", "print one line per event instead of redrawing the screen (the default when stdout is not a terminal)")
    .option("--json", "print every event as one JSON line")
    .addOption(new Option("--duration <duration>", "stop after this long, with a unit, e.g. 30s (default: until Ctrl-C)").argParser(durationFlag(DURATION)))
    .action(async (o: { api: string; token?: string; lines?: boolean; json?: boolean; duration?: bigint }) => {
      const stop = new AbortController();
      process.once("SIGINT", () => stop.abort());
      process.once("SIGTERM", () => stop.abort());
      await runWatch({
        api: new ApiClient(o.api).baseUrl,
        ...((o.token ?? process.env.TSCMIG_TOKEN) ? { token: (o.token ?? process.env.TSCMIG_TOKEN) as string } : {}),
        mode: o.json ? "json" : o.lines || !process.stdout.isTTY ? "lines" : "screen",
        durationNs: o.duration ?? 0n,
        scheduler: new RealScheduler(),
        write: out,
        signal: stop.signal,
      });
    });
  examples(watch, ["tscmig watch", "tscmig watch --api http://127.0.0.1:7080 --lines --duration 30s"]);
}

function benchCommand(program: Command): void {
  const list = (raw: string) => raw.split(",").map((x) => x.trim()).filter((x) => x.length > 0);
  const bench = program
    .command("bench")
    .description("benchmarks over real daemons on loopback: blackout, throughput, introduced error, simulator speed, memory")
    .option("--quick", "fewer samples: under 2 minutes")
    .option("--json <file>", "also write the results as JSON")
    .option("--sections <list>", `comma-separated subset of ${SECTIONS.join(",")}`, (raw: string) => {
      for (const x of list(raw)) if (!(SECTIONS as readonly string[]).includes(x)) throw new TscmigError("invalid_argument", `--sections: unknown section ${x} (one of ${SECTIONS.join(", ")})`);
      return raw;
    })
    .option("--sizes <list>", "vCPU counts of the blackout section, comma-separated (default 1,8,64,256,1024)", (raw: string) => {
      for (const x of list(raw)) intFlag(1, LIMITS.vcpuCountMax)(x);
      return raw;
    })
    .addOption(new Option("--vms <n>", "VMs of the throughput run (default 1000, quick 300)").argParser(intFlag(1, 100_000)))
    .addOption(new Option("--journal-sync <mode>", "journal durability of the measured daemons (a second pair gives a 1-vCPU row with the other)").choices(["normal", "full"]).default("normal"))
    .option("--daemon-args <args>", "extra flags for every daemon, space-separated")
    .option("--node-args <args>", "flags for the daemons' node, space-separated, e.g. \"--cpu-prof --cpu-prof-dir=/tmp/prof\"")
    .addOption(backendOption())
    .action(async (o: { quick?: boolean; json?: string; sections?: string; sizes?: string; vms?: number; daemonArgs?: string; nodeArgs?: string; journalSync: "normal" | "full"; backend: string }) => {
      // The backend is one more daemon flag (the result's daemonArgs name it beside the rows).
      const daemonArgs = [...(o.backend !== "emulated" ? ["--backend", o.backend] : []), ...(o.daemonArgs ?? "").split(" ").filter((x) => x.length > 0)];
      const r = await runBench({
        quick: o.quick === true,
        journalSync: o.journalSync,
        ...(o.json ? { json: o.json } : {}),
        ...(o.sections ? { sections: list(o.sections) as Section[] } : {}),
        ...(o.vms !== undefined ? { vms: o.vms } : {}),
        ...(o.sizes ? { sizes: list(o.sizes).map(Number) } : {}),
        ...(daemonArgs.length > 0 ? { daemonArgs } : {}),
        ...(o.nodeArgs ? { nodeArgs: o.nodeArgs.split(" ").filter((x) => x.length > 0) } : {}),
        progress: (line) => process.stderr.write(`bench: ${line}\n`),
      });
      out(renderBench(r));
    });
  examples(bench, ["tscmig bench --quick", "tscmig bench --sections blackout --sizes 1,64 --json bench.json", "sudo tscmig bench --backend kvm --sections blackout --sizes 1,64"]);
}

/** The exit status of an error that ended a command (see EXIT_HELP). */
export function exitCodeOf(e: unknown): number {
  if (e instanceof CommanderError) return e.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
  return isTscmigError(e) && e.code === "invalid_argument" ? EXIT_USAGE : EXIT_FAILED;
}

/**
 * A reader that went away (`tscmig … | head`) ends the command quietly, as other tools do, instead
 * of an unhandled EPIPE with its stack trace; any other write error is reported, exit 1.
 */
function endQuietlyWhenStdoutCloses(): void {
  process.stdout.on("error", (e: NodeJS.ErrnoException) => {
    if (e.code === "EPIPE") process.exit(process.exitCode ?? EXIT_OK);
    process.stderr.write(`tscmig: cannot write the output: ${e.message}\n`);
    process.exit(EXIT_FAILED);
  });
}

export async function main(argv: string[]): Promise<void> {
  endQuietlyWhenStdoutCloses();
  try {
    await buildCli().parseAsync(argv);
  } catch (e) {
    process.exitCode = exitCodeOf(e);
    if (e instanceof CommanderError) return; // commander has printed the message (or the help)
    const msg = isTscmigError(e) ? `${e.code}: ${e.message}` : e instanceof Error ? e.message : String(e);
    process.stderr.write(`tscmig: ${msg}\n`);
  }
}
