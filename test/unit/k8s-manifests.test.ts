// Goal: the Kubernetes manifests under deploy/k8s are valid Kubernetes API objects and fit together:
// the Indexed Job runs every shard of one campaign with flags tscmig accepts and the merge Job reads
// what the shards write; the daemons' StatefulSet reaches its peers by stable names its certificate
// covers, never localhost, with TLS material and token from Secrets; and a broken manifest is
// reported by file, document and field path. Method: validate every manifest — and the Secrets
// make-secrets.sh prints — offline against the Kubernetes API schemas of the pinned
// `kubernetes-models` package plus its exact TypeScript types (test/helpers/k8s-manifests.ts);
// then read the objects and check what ties them together, parsing the shard command with the
// `tscmig chaos` command's own definition. make-secrets.sh needs openssl; without it those parts
// skip with the reason printed.

import { execFileSync, spawnSync } from "node:child_process";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkServerIdentity } from "node:tls";
import { Command } from "commander";
import { afterAll, describe, expect, it } from "vitest";
import { chaosCommand, type ChaosFlags, parseChaosFlags } from "../../src/chaos/cli.js";
import { parseToken } from "../../src/daemon/config-parsers.js";
import { DAEMON_CONFIG } from "../../src/daemon/daemon-config.js";
import { ROOT } from "../helpers/daemons.js";
import { describeProblem, type Manifest, parseManifests, readManifestDir, validateFiles } from "../helpers/k8s-manifests.js";

type Obj = Record<string, unknown>;
const DIR = join(ROOT, "deploy", "k8s");
const files = readManifestDir(DIR, ROOT);
const manifests: Manifest[] = files.flatMap((f) => parseManifests(f.file, f.text).manifests);

const hasOpenssl = spawnSync("openssl", ["version"]).status === 0;
const secretsDir = mkdtempSync(join(tmpdir(), "tscmig-k8s-secrets-"));
afterAll(() => rmSync(secretsDir, { recursive: true, force: true }));
const NAMESPACE = "chaos-lab";
/** make-secrets.sh's output (null without openssl). */
const secretsText = hasOpenssl ? execFileSync("sh", [join(DIR, "make-secrets.sh"), NAMESPACE, secretsDir], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }) : null;
if (!hasOpenssl) console.log("skipping make-secrets.sh checks: openssl is not installed");

const find = (kind: string, name: string): Obj => {
  const m = manifests.find((x) => x.doc.kind === kind && (x.doc.metadata as Obj | undefined)?.name === name);
  if (!m) throw new Error(`no ${kind}/${name} under deploy/k8s`);
  return m.doc;
};
const at = (o: unknown, path: string): unknown => path.split(".").reduce<unknown>((x, k) => (x !== null && typeof x === "object" ? (x as Obj)[k] : undefined), o);
const podSpec = (workload: Obj) => at(workload, "spec.template.spec") as Obj;
const containers = (workload: Obj) => [...((podSpec(workload).initContainers ?? []) as Obj[]), ...(podSpec(workload).containers as Obj[])];
const container = (workload: Obj, name: string) => containers(workload).find((c) => c.name === name) as Obj;
const envOf = (c: Obj) => Object.fromEntries(((c.env ?? []) as Obj[]).map((e) => [String(e.name), e]));
const envValue = (c: Obj, name: string) => String((envOf(c)[name] as Obj | undefined)?.value);
const script = (c: Obj) => [...((c.command ?? []) as string[]), ...((c.args ?? []) as string[])].join(" ");

describe("deploy/k8s manifests", () => {
  it("are valid Kubernetes API objects (schema and exact field names)", async () => {
    expect(files.map((f) => f.file).sort()).toEqual(
      ["chaos/merge-job.yaml", "chaos/reports-pvc.yaml", "chaos/shards-job.yaml", "daemons/service.yaml", "daemons/statefulset.yaml"].map((f) => join("deploy", "k8s", f)),
    );
    const problems = await validateFiles([...files, ...(secretsText ? [{ file: "make-secrets.sh output", text: secretsText }] : [])]);
    expect(problems.map(describeProblem)).toEqual([]);
  });

  it("a broken manifest is reported by file, document and field path", async () => {
    const text = [
      "apiVersion: v1\nkind: Service\nmetadata: {name: fine}\nspec: {ports: [{port: 1}]}",
      "apiVersion: batch/v1\nkind: Job\nmetadata: {name: broken}\nspec:\n  completionMod: Indexed\n  completions: three\n  template:\n    spec:\n      restartPolicy: Sometimes\n      containers: [{name: c, image: i, args: [1], volumeMount: []}]",
      "apiVersion: v1\nkind: Widget\nmetadata: {name: w}",
      "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad-yaml\n",
    ].join("\n---\n");
    const got = (await validateFiles([{ file: "broken.yaml", text }])).map(describeProblem);
    const expectOne = (re: RegExp) => expect(got.filter((p) => re.test(p)), `${re} in\n${got.join("\n")}`).not.toHaveLength(0);
    expectOne(/^broken\.yaml \[document 1\] Job\/broken \/spec\/completions: must be integer/);
    expectOne(/^broken\.yaml \[document 1\] Job\/broken \/spec\/template\/spec\/restartPolicy: must be equal to one of the allowed values/);
    expectOne(/^broken\.yaml \[document 1\] Job\/broken \/spec\/template\/spec\/containers\/0\/args\/0: .*string/);
    expectOne(/^broken\.yaml \[document 1\] Job\/broken \/spec\/completionMod: unknown field "completionMod"/);
    expectOne(/^broken\.yaml \[document 1\] Job\/broken \/spec\/template\/spec\/containers\/0\/volumeMount: unknown field "volumeMount"/);
    expectOne(/^broken\.yaml \[document 2\] Widget\/w \/kind: no Kubernetes API type/);
    expectOne(/^broken\.yaml \[document 3\] .*YAML/);
    expect(got.filter((p) => p.includes("[document 0]"))).toEqual([]);
  });
});

describe("the sharded campaign (chaos/)", () => {
  const shards = find("Job", "tscmig-chaos-shards");
  const merge = find("Job", "tscmig-chaos-merge");
  const shard = container(shards, "shard");

  it("an Indexed Job whose index is the shard, as many completions as shards, each shard's flags accepted by tscmig chaos", () => {
    expect(at(shards, "spec.completionMode")).toBe("Indexed");
    const count = Number(envValue(shard, "SHARDS"));
    expect(at(shards, "spec.completions")).toBe(count);
    expect(Number(envValue(container(merge, "wait-for-shards"), "SHARDS"))).toBe(count);
    expect(at(envOf(shard).SHARD_INDEX, "valueFrom.fieldRef.fieldPath")).toBe("metadata.annotations['batch.kubernetes.io/job-completion-index']");
    // The shard's command line, as its shell expands it for the last index, through `tscmig chaos`'s own flags.
    const line = /node bin\/tscmig\.js (chaos .*?);/.exec(script(shard))?.[1];
    expect(line).toBeDefined();
    const vars: Record<string, string> = { SHARD_INDEX: String(count - 1), SHARDS: String(count), RUNS: envValue(shard, "RUNS"), SEED: envValue(shard, "SEED"), JOBS: envValue(shard, "JOBS") };
    const argv = (line as string)
      .replace(/\$([A-Z_]+)/g, (_m, v: string) => vars[v] ?? `<unset ${v}>`)
      .replace(/"/g, "")
      .split(/\s+/)
      .slice(1);
    const cmd = chaosCommand(new Command("chaos"), () => {});
    const parsed = cmd.parseOptions(argv);
    expect(parsed.unknown, `unknown flags in: ${argv.join(" ")}`).toEqual([]);
    const { campaign, shard: s } = parseChaosFlags(cmd.opts() as ChaosFlags);
    expect(s).toEqual({ index: count - 1, count });
    expect(campaign.range?.end).toBe(campaign.runs);
    expect(campaign.runs).toBeGreaterThanOrEqual(count);
    // What the shards write is what the merge waits for and reads.
    expect(argv).toContain(`/reports/shards/shard-${count - 1}.json`);
    expect(script(container(merge, "wait-for-shards"))).toContain("/reports/shards/shard-*.json");
    expect(script(container(merge, "merge"))).toMatch(/tscmig\.js chaos merge \/reports\/shards\/shard-\*\.json --json \S+ --junit \S+ --html \S+/);
  });

  it("shards and merge share the reports volume; a shard with violations still completes, the merge's verdict fails the Job", () => {
    const pvc = find("PersistentVolumeClaim", "tscmig-chaos-reports");
    expect(at(pvc, "spec.accessModes")).toContain("ReadWriteMany");
    for (const job of [shards, merge]) {
      const volumes = podSpec(job).volumes as Obj[];
      expect(volumes.find((v) => v.name === "reports")?.persistentVolumeClaim).toEqual({ claimName: "tscmig-chaos-reports" });
      for (const c of containers(job)) for (const m of (c.volumeMounts ?? []) as Obj[]) expect(volumes.map((v) => v.name), `${String(c.name)} mounts ${String(m.name)}`).toContain(m.name);
    }
    expect(script(shard)).toMatch(/status=\$\?; test "\$status" -le 1$/);
    expect(at(merge, "spec.podFailurePolicy.rules")).toEqual([{ action: "FailJob", onExitCodes: { containerName: "merge", operator: "In", values: [1] } }]);
  });
});

describe("the daemon pair (daemons/)", () => {
  const sts = find("StatefulSet", "tscmig");
  const svc = find("Service", "tscmig-peers");
  const daemon = container(sts, "tscmig");
  const env = envOf(daemon);

  it("reaches its peers by stable names through the headless Service, never by localhost", () => {
    expect(at(sts, "spec.serviceName")).toBe("tscmig-peers");
    expect(at(svc, "spec.clusterIP")).toBe("None");
    const labels = at(sts, "spec.template.metadata.labels") as Obj;
    for (const [k, v] of Object.entries(at(svc, "spec.selector") as Obj)) expect(labels[k]).toBe(v);
    const portNames = ((daemon.ports ?? []) as Obj[]).map((p) => p.name);
    for (const p of at(svc, "spec.ports") as Obj[]) expect(portNames).toContain(p.targetPort);
    expect(at(env.TSCMIG_ADVERTISE, "value")).toBe("$(POD_NAME).tscmig-peers.$(POD_NAMESPACE).svc:7071");
    for (const m of manifests.filter((x) => x.file.includes("daemons"))) expect(JSON.stringify(m.doc), m.file).not.toMatch(/localhost|127\.0\.0\.1|::1/);
  });

  it("every TSCMIG_* variable is a daemon setting; TLS files and the token come from Secrets", () => {
    const known = new Set(Object.values(DAEMON_CONFIG).map((k) => k.env));
    for (const name of Object.keys(env).filter((n) => n.startsWith("TSCMIG_"))) expect(known, name).toContain(name);
    const mount = ((daemon.volumeMounts ?? []) as Obj[]).find((m) => m.name === "peer-tls") as Obj;
    const tlsVolume = (podSpec(sts).volumes as Obj[]).find((v) => v.name === "peer-tls") as Obj;
    expect(at(tlsVolume, "secret.secretName")).toBe("tscmig-peer-tls");
    for (const [name, key] of [["TSCMIG_TLS_CA", "ca.crt"], ["TSCMIG_TLS_CERT", "tls.crt"], ["TSCMIG_TLS_KEY", "tls.key"]]) expect(at(env[name as string], "value")).toBe(`${String(mount.mountPath)}/${key}`);
    expect(at(env.TSCMIG_TOKEN, "valueFrom.secretKeyRef")).toEqual({ name: "tscmig-api-token", key: "token" });
    const claims = ((at(sts, "spec.volumeClaimTemplates") ?? []) as Obj[]).map((c) => at(c, "metadata.name"));
    const volumes = [...(podSpec(sts).volumes as Obj[]).map((v) => v.name), ...claims];
    for (const m of (daemon.volumeMounts ?? []) as Obj[]) expect(volumes).toContain(m.name);
    expect(((daemon.volumeMounts ?? []) as Obj[]).find((m) => m.mountPath === at(env.TSCMIG_DATA, "value"))?.name).toBe("data");
  });

  it.skipIf(!hasOpenssl)("make-secrets.sh: the Secrets the StatefulSet reads, a certificate its CA signed for every advertised name, a token the daemon accepts", () => {
    const docs = parseManifests("make-secrets.sh output", secretsText as string).manifests.map((m) => m.doc);
    const secret = (name: string) => docs.find((d) => at(d, "metadata.name") === name) as Obj;
    const data = (name: string, key: string) => Buffer.from(String((secret(name).data as Obj)[key]), "base64");
    expect(Object.keys(at(secret("tscmig-peer-tls"), "data") as Obj).sort()).toEqual(["ca.crt", "tls.crt", "tls.key"]);
    const ca = new X509Certificate(data("tscmig-peer-tls", "ca.crt"));
    const cert = new X509Certificate(data("tscmig-peer-tls", "tls.crt"));
    expect(cert.verify(ca.publicKey)).toBe(true);
    expect(cert.checkPrivateKey(createPrivateKey(data("tscmig-peer-tls", "tls.key")))).toBe(true);
    expect(cert.keyUsage).toEqual(expect.arrayContaining(["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"])); // serverAuth and clientAuth: mutual TLS
    for (const pod of ["tscmig-0", "tscmig-1", "tscmig-7"]) {
      const host = `${pod}.tscmig-peers.${NAMESPACE}.svc`; // TSCMIG_ADVERTISE with POD_NAME and POD_NAMESPACE
      expect(checkServerIdentity(host, { subject: { CN: "" }, subjectaltname: cert.subjectAltName } as never), host).toBeUndefined();
    }
    expect(checkServerIdentity("tscmig-0.tscmig-peers.other.svc", { subject: { CN: "" }, subjectaltname: cert.subjectAltName } as never)).toBeInstanceOf(Error);
    expect(() => parseToken(data("tscmig-api-token", "token").toString("utf8"))).not.toThrow();
    expect(readFileSync(join(secretsDir, "ca.crt"), "utf8")).toContain("BEGIN CERTIFICATE");
  });
});

