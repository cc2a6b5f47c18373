// Goal: a VMM engineer can install the package from a tarball (what `npm install <git URL>` also
// builds) and use it by its name: the exports map resolves, the type declarations ship and type-check
// the example, and the example program runs and shows what it promises — the checker catching the
// migration hazard (I4) under the upstream algorithm, and nothing under advance + one-sided.
// Method: `npm pack` the built package into a temporary directory, unpack it as the only package in
// a consumer's node_modules (no dependencies installed: the library must not need them), copy
// examples/migrate-and-check.ts there, compile it with tsc against the package's declarations, run
// the output with plain node.
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

describe("the package, installed from a tarball", () => {
  const tmp = mkdtempSync(join(tmpdir(), "tscmig-pkg-"));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));
  const consumer = join(tmp, "consumer");
  const run = (cmd: string, args: string[], cwd: string) => execFileSync(cmd, args, { cwd, encoding: "utf8", stdio: "pipe", timeout: 110_000 });

  it("packs with its build, declarations and docs, and nothing of the tests", () => {
    // --ignore-scripts: the build is the suite's global setup's; prepare would rebuild it here.
    const packed = JSON.parse(run("npm", ["pack", "--ignore-scripts", "--json", "--pack-destination", tmp], ROOT)) as { filename: string; files: { path: string }[] }[];
    const files = packed[0]!.files.map((f) => f.path);
    for (const f of ["package.json", "bin/tscmig.js", "dist/src/index.js", "dist/src/index.d.ts", "docs/api/README.md", "README.md"]) expect(files, f).toContain(f);
    expect(files.filter((f) => f.startsWith("test/") || f.startsWith("node_modules/"))).toEqual([]);
    mkdirSync(join(consumer, "node_modules", "tscmig"), { recursive: true });
    run("tar", ["-xzf", join(tmp, packed[0]!.filename), "-C", join(consumer, "node_modules", "tscmig"), "--strip-components=1"], tmp);
    expect(readdirSync(join(consumer, "node_modules"))).toEqual(["tscmig"]);
  });

  it("type-checks and runs the example by the package's name", () => {
    writeFileSync(join(consumer, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }));
    writeFileSync(
      join(consumer, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: { target: "ES2022", module: "NodeNext", moduleResolution: "NodeNext", strict: true, noUncheckedIndexedAccess: true, outDir: "out", typeRoots: [join(ROOT, "node_modules", "@types")], types: ["node"] },
        files: ["migrate-and-check.ts"],
      }),
    );
    copyFileSync(join(ROOT, "examples", "migrate-and-check.ts"), join(consumer, "migrate-and-check.ts"));
    try {
      run(process.execPath, [join(ROOT, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.json"], consumer);
    } catch (e) {
      const x = e as { stdout?: string; stderr?: string };
      throw new Error(`the example does not type-check against the packed declarations:\n${x.stdout ?? ""}${x.stderr ?? ""}`, { cause: e });
    }
    const output = run(process.execPath, [join(consumer, "out", "migrate-and-check.js")], consumer);
    const [upstream, advance] = output.split(/\n(?=advance \+ one-sided)/);
    expect(upstream).toMatch(/^kvm-realtime \+ wallclock, guest migration handling off:/);
    expect(upstream).toMatch(/TSC error at resume 5\d{6} ns/);
    expect(upstream).toMatch(/violations: I4×\d+/);
    expect(upstream).toMatch(/first: I4 .*guest says synchronized/);
    expect(advance).toMatch(/guest migration handling on:/);
    expect(advance).toMatch(/violations: none/);
  });
});
