// `tscmig`: one binary, one command per job (SPEC §4). `--help` everywhere; `--json` for machines.

import { Command, Option } from "commander";
import { isTscmigError } from "../shared/errors.js";
import { DAEMON_CONFIG } from "../daemon/daemon-config.js";
import { runDaemon } from "../daemon/main.js";
import { parseDurationNs } from "../daemon/config-parsers.js";
import { ApiClient } from "./api.js";
import { runDemo } from "./demo.js";
import { spawnDaemon } from "./local-pair.js";
import { runWatch } from "./watch.js";
import { RealScheduler } from "../shared/platform/index.js";
import { chaosCommand } from "../chaos/cli.js";
import { kvmCommand } from "../kvm/cli.js";
import { renderBench, runBench, SECTIONS, type Section } from "../bench/main.js";

const out = (s: string) => process.stdout.write(s);
const print = (v: unknown, _json: boolean): void => {
  out(`${JSON.stringify(v, null, 2)}\n`);
};

function api(opts: { api: string; token?: string }): ApiClient {
  return new ApiClient(opts.api, opts.token ?? process.env.TSCMIG_TOKEN);
}

const apiOption = () => new Option("--api <url>", "control API of the daemon to talk to").default("http://127.0.0.1:7070");
const tokenOption = () => new Option("--token <token>", "bearer token (or TSCMIG_TOKEN)");

export function buildCli(): Command {
  const program = new Command("tscmig")
    .description("Carry a VM's time across live migration exactly as KVM does, and prove the guest's clocks stay honest.")
    .showHelpAfterError()
    .enablePositionalOptions();

  const daemon = program.command("daemon").description("run one daemon (source and destination roles); configuration: flags, then TSCMIG_* environment, then defaults");
  for (const [key, spec] of Object.entries(DAEMON_CONFIG)) {
    daemon.addOption(new Option(`--${spec.flag} <value>`, `${spec.doc} [env ${spec.env}; default ${spec.defaultDoc ?? String(spec.default)}]`));
    void key; // commander camel-cases --skew-offset-ns to skewOffsetNs: the config key
  }
  daemon.action(async (opts: Record<string, string | undefined>) => {
    await runDaemon(opts);
  });

  program
    .command("up")
    .description("start a source and a destination daemon on this machine and wait (Ctrl-C stops both)")
    .option("--base-port <port>", "source HTTP on BASE, gRPC BASE+1; destination BASE+10, BASE+11", "7070")
    .option("--json", "print the addresses as JSON")
    .action(async (opts: { basePort: string; json?: boolean }) => {
      const base = Number(opts.basePort);
      if (!Number.isInteger(base) || base < 1 || base > 65_000) throw new Error("--base-port must be a port number");
      // Each daemon's dashboard offers the other as a destination and links to its page.
      const [s, d] = await Promise.all([
        spawnDaemon({ name: "source", http: `127.0.0.1:${base}`, grpc: `127.0.0.1:${base + 1}`, echo: false, args: ["--peers", `destination=127.0.0.1:${base + 11}@127.0.0.1:${base + 10}`] }),
        spawnDaemon({ name: "destination", http: `127.0.0.1:${base + 10}`, grpc: `127.0.0.1:${base + 11}`, echo: false, args: ["--peers", `source=127.0.0.1:${base + 1}@127.0.0.1:${base}`] }),
      ]);
      const info = {
        source: { dashboard: `${s.http}/ui/`, http: s.http, grpc: s.grpc, data: s.data },
        destination: { dashboard: `${d.http}/ui/`, http: d.http, grpc: d.grpc, data: d.data },
      };
      if (opts.json) print(info, true);
      else
        out(
          `dashboard: open ${s.http}/ui/ (source) and ${d.http}/ui/ (destination) in a browser\n` +
            `source       control API ${s.http}  gRPC ${s.grpc}  data ${s.data}\n` +
            `destination  control API ${d.http}  gRPC ${d.grpc}  data ${d.data}\n` +
            `try: tscmig vm create --api ${s.http} --vcpus 4 && tscmig migrate <vm-id> --api ${s.http} --to ${d.grpc}\n`,
        );
      await new Promise<void>((resolve) => {
        const stop = () => void Promise.all([s.stop(), d.stop()]).then(() => resolve());
        process.once("SIGINT", stop);
        process.once("SIGTERM", stop);
        s.child.once("exit", stop);
        d.child.once("exit", stop);
      });
    });

  program
    .command("demo")
    .description("start a pair (or use running daemons), create a VM, let it run, inject skew, migrate it and show what the guest saw")
    .option("--source-http <url>", "use this running source daemon")
    .option("--destination-http <url>", "use this running destination daemon")
    .option("--destination-grpc <host:port>", "the running destination's gRPC address")
    .option("--vcpus <n>", "vCPUs of the demo VM", "4")
    .option("--guest-tsc-khz <khz>", "guest TSC frequency (default: the host's)")
    .option("--clocksource <cs>", "guest clocksource: kvm-clock or tsc")
    .addOption(new Option("--policy <policy>", "migration policy").choices(["advance", "kvm-realtime", "freeze", "advance-capped"]).default("kvm-realtime"))
    .addOption(new Option("--estimator <estimator>", "blackout estimator").choices(["wallclock", "one-sided", "probe"]).default("wallclock"))
    .option("--skew <duration>", "destination realtime offset from the source, e.g. 5ms, -2ms", "5ms")
    .option("--no-doorbell", "do not ring the doorbell")
    .option("--run-ms <ms>", "how long the guest runs on the source first", "300")
    .option("--json", "machine-readable output")
    .addOption(tokenOption())
    .action(async (opts: Record<string, string | boolean | undefined>) => {
      const code = await runDemo(
        {
          ...(typeof opts.sourceHttp === "string" ? { sourceHttp: opts.sourceHttp } : {}),
          ...(typeof opts.destinationHttp === "string" ? { destinationHttp: opts.destinationHttp } : {}),
          ...(typeof opts.destinationGrpc === "string" ? { destinationGrpc: opts.destinationGrpc } : {}),
          vcpus: Number(opts.vcpus),
          ...(typeof opts.guestTscKhz === "string" ? { guestTscKhz: opts.guestTscKhz } : {}),
          ...(typeof opts.clocksource === "string" ? { clocksource: opts.clocksource } : {}),
          policy: opts.policy as string,
          estimator: opts.estimator as string,
          skewNs: parseDurationNs(opts.skew as string, { min: -1_000_000_000_000n, max: 1_000_000_000_000n }),
          doorbell: opts.doorbell !== false,
          runMs: Number(opts.runMs),
          json: opts.json === true,
          ...(typeof opts.token === "string" ? { token: opts.token } : {}),
        },
        out,
      );
      process.exitCode = code;
    });

  const vm = program.command("vm").description("create, list and inspect VMs on a running daemon");
  vm.command("create")
    .description("create a VM")
    .addOption(apiOption())
    .addOption(tokenOption())
    .option("--id <id>", "VM id (default: generated)")
    .option("--vcpus <n>", "vCPUs", "1")
    .option("--guest-tsc-khz <khz>", "guest TSC frequency")
    .addOption(new Option("--clocksource <cs>").choices(["kvm-clock", "tsc"]))
    .option("--no-migration-handling", "the guest ignores migration signals (Linux today)")
    .option("--json", "JSON output (default)")
    .action(async (o: Record<string, string | boolean | undefined>) => {
      const body = {
        vcpus: Number(o.vcpus),
        ...(o.id ? { id: o.id } : {}),
        ...(o.guestTscKhz ? { guestTscKhz: o.guestTscKhz } : {}),
        ...(o.clocksource ? { clocksource: o.clocksource } : {}),
        ...(o.migrationHandling === false ? { migrationHandling: false } : {}),
      };
      print(await api(o as { api: string; token?: string }).call("POST", "/v1/vms", body), true);
    });
  vm.command("list")
    .description("list VMs")
    .addOption(apiOption())
    .addOption(tokenOption())
    .option("--json", "JSON output (default)")
    .action(async (o: { api: string; token?: string }) => print(await api(o).call("GET", "/v1/vms"), true));
  vm.command("show <id>")
    .description("a VM's clocks now")
    .addOption(apiOption())
    .addOption(tokenOption())
    .option("--vcpus <n>", "vCPUs to include", "8")
    .option("--json", "JSON output (default)")
    .action(async (id: string, o: { api: string; token?: string; vcpus: string }) =>
      print(await api(o).call("GET", `/v1/vms/${encodeURIComponent(id)}?vcpus=${Number(o.vcpus)}`), true),
    );

  program
    .command("migrate <vm-id>")
    .description("migrate a VM from the daemon at --api to the daemon whose gRPC address is --to")
    .addOption(apiOption())
    .addOption(tokenOption())
    .requiredOption("--to <host:port>", "destination daemon's gRPC address")
    .addOption(new Option("--policy <policy>").choices(["advance", "kvm-realtime", "freeze", "advance-capped"]).default("advance"))
    .addOption(new Option("--estimator <estimator>").choices(["wallclock", "one-sided", "probe"]).default("one-sided"))
    .option("--doorbell", "ring the doorbell after restore")
    .option("--cap <duration>", "cap of advance-capped, e.g. 1s")
    .option("--json", "JSON output (default)")
    .action(async (id: string, o: Record<string, string | boolean | undefined>) => {
      const body = {
        destination: o.to,
        policy: o.policy,
        estimator: o.estimator,
        doorbell: o.doorbell === true,
        ...(typeof o.cap === "string" ? { advanceCapNs: parseDurationNs(o.cap).toString() } : {}),
      };
      const r = await api(o as { api: string; token?: string }).call<Record<string, unknown>>("POST", `/v1/vms/${encodeURIComponent(id)}/migrate`, body);
      print(r, true);
      if (r.outcome !== "committed") process.exitCode = 1;
    });

  program
    .command("skew")
    .description("inject realtime skew into a running daemon's host (PUT /v1/host/clock)")
    .addOption(apiOption())
    .addOption(tokenOption())
    .option("--offset <duration>", "set the skew to this offset now, e.g. 5ms")
    .option("--drift-ppm <ppm>", "drift from now on")
    .option("--step <duration>", "step the clock by this much now")
    .option("--maxerror <duration>", "error bound the host claims")
    .option("--reset", "drop all skew")
    .option("--json", "JSON output (default)")
    .action(async (o: Record<string, string | boolean | undefined>) => {
      const signed = { min: -1_000_000_000_000n, max: 1_000_000_000_000n };
      const body = {
        ...(typeof o.offset === "string" ? { offsetNs: parseDurationNs(o.offset, signed).toString() } : {}),
        ...(typeof o.driftPpm === "string" ? { driftPpm: Number(o.driftPpm) } : {}),
        ...(typeof o.step === "string" ? { stepNs: parseDurationNs(o.step, signed).toString() } : {}),
        ...(typeof o.maxerror === "string" ? { maxerrorNs: parseDurationNs(o.maxerror).toString() } : {}),
        ...(o.reset === true ? { reset: true } : {}),
      };
      print(await api(o as { api: string; token?: string }).call("PUT", "/v1/host/clock", body), true);
    });

  program
    .command("watch")
    .description("follow a daemon live in the terminal: host clocks, each VM's bounded clock against true time, migrations (its GET /v1/events stream)")
    .addOption(apiOption())
    .addOption(tokenOption())
    .option("--lines", "print one line per event instead of redrawing the screen (the default when stdout is not a terminal)")
    .option("--json", "print every event as one JSON line")
    .option("--duration <duration>", "stop after this long, e.g. 30s (default: until Ctrl-C)")
    .action(async (o: { api: string; token?: string; lines?: boolean; json?: boolean; duration?: string }) => {
      const stop = new AbortController();
      process.once("SIGINT", () => stop.abort());
      process.once("SIGTERM", () => stop.abort());
      await runWatch({
        api: new ApiClient(o.api).baseUrl,
        ...((o.token ?? process.env.TSCMIG_TOKEN) ? { token: (o.token ?? process.env.TSCMIG_TOKEN) as string } : {}),
        mode: o.json ? "json" : o.lines || !process.stdout.isTTY ? "lines" : "screen",
        durationNs: o.duration !== undefined ? parseDurationNs(o.duration) : 0n,
        scheduler: new RealScheduler(),
        write: out,
        signal: stop.signal,
      });
    });

  chaosCommand(program.command("chaos"), out);
  kvmCommand(program.command("kvm"), out);

  program
    .command("bench")
    .description("benchmarks over real daemons on loopback: blackout, throughput, introduced error, simulator speed, memory (issue 5)")
    .option("--quick", "fewer samples: under 2 minutes")
    .option("--json <file>", "also write the results as JSON")
    .option("--sections <list>", `comma-separated subset of ${SECTIONS.join(",")}`)
    .option("--sizes <list>", "vCPU counts of the blackout section, comma-separated (default 1,8,64,256,1024)")
    .option("--vms <n>", "VMs of the throughput run (default 1000, quick 300)")
    .addOption(new Option("--journal-sync <mode>", "journal durability of the measured daemons (a second pair gives a 1-vCPU row with the other)").choices(["normal", "full"]).default("normal"))
    .option("--daemon-args <args>", "extra flags for every daemon, space-separated")
    .option("--node-args <args>", "flags for the daemons' node, space-separated, e.g. \"--cpu-prof --cpu-prof-dir=/tmp/prof\"")
    .action(async (o: { quick?: boolean; json?: string; sections?: string; sizes?: string; vms?: string; daemonArgs?: string; nodeArgs?: string; journalSync: "normal" | "full" }) => {
      const sections = o.sections?.split(",").map((x) => x.trim()).filter((x) => x.length > 0);
      for (const x of sections ?? []) if (!(SECTIONS as readonly string[]).includes(x)) throw new Error(`--sections: unknown section ${x}`);
      const r = await runBench({
        quick: o.quick === true,
        journalSync: o.journalSync,
        ...(o.json ? { json: o.json } : {}),
        ...(sections ? { sections: sections as Section[] } : {}),
        ...(o.vms ? { vms: Number(o.vms) } : {}),
        ...(o.sizes ? { sizes: o.sizes.split(",").map(Number) } : {}),
        ...(o.daemonArgs ? { daemonArgs: o.daemonArgs.split(" ").filter((x) => x.length > 0) } : {}),
        ...(o.nodeArgs ? { nodeArgs: o.nodeArgs.split(" ").filter((x) => x.length > 0) } : {}),
        progress: (line) => process.stderr.write(`bench: ${line}\n`),
      });
      out(renderBench(r));
    });

  return program;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildCli().parseAsync(argv);
  } catch (e) {
    const msg = isTscmigError(e) ? `${e.code}: ${e.message}` : e instanceof Error ? e.message : String(e);
    process.stderr.write(`tscmig: ${msg}\n`);
    process.exitCode = 2;
  }
}
