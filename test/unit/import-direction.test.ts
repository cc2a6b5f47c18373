// Goal: dependencies under src/ flow one way (STYLE 14): the chaos harness, the bench and the
// control-API client never reach into the CLI; shared code never imports a daemon, a role or a tool;
// the two roles never import each other; only the codec and the RPC adapter (src/shared/rpc/) import
// generated code. Method: list every import of every .ts file under src/ (static, dynamic, type-only
// and re-exports, as TypeScript's own pre-processor finds them), resolve relative ones to a path,
// and check each against the rules; every hit is listed as file → import.

import { readFileSync } from "node:fs";
import { dirname, join, normalize, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { describe, expect, it } from "vitest";
import { tsFiles } from "../helpers/source-files.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const SRC = join(ROOT, "src");

interface Rule {
  name: string;
  /** Whether an import from `from` to `to` (paths relative to the repository, "/"-separated) breaks the rule. */
  breaks(from: string, to: string): boolean;
}

const under = (path: string, dir: string) => path.startsWith(`${dir}/`);
const underAny = (path: string, dirs: readonly string[]) => dirs.some((d) => under(path, d));

const RULES: readonly Rule[] = [
  { name: "the chaos harness, the bench and the client do not import the CLI", breaks: (f, t) => underAny(f, ["src/chaos", "src/bench", "src/client"]) && under(t, "src/cli") },
  { name: "only src/shared/rpc/ imports generated code", breaks: (f, t) => under(t, "src/gen") && !under(f, "src/gen") && !under(f, "src/shared/rpc") },
  { name: "shared code imports only shared code (and the RPC modules generated code)", breaks: (f, t) => under(f, "src/shared") && !under(t, "src/shared") && !(under(f, "src/shared/rpc") && under(t, "src/gen")) },
  { name: "the client imports only shared code", breaks: (f, t) => under(f, "src/client") && under(t, "src") && !under(t, "src/client") && !under(t, "src/shared") },
  {
    name: "capture, restore, the guest and the roles are written against the hypervisor seam, not a backend",
    breaks: (f, t) =>
      underAny(f, ["src/shared/migration", "src/shared/guest", "src/source", "src/destination"]) &&
      (t === "src/shared/hypervisor/vm.ts" || t === "src/shared/hypervisor/emulated-backend.ts" || under(t, "src/shared/hypervisor/kvm")),
  },
  {
    name: "a role imports neither the other role nor a daemon or a tool",
    breaks: (f, t) => {
      const role = ["src/source", "src/destination"].find((r) => under(f, r));
      return role !== undefined && under(t, "src") && !under(t, role) && !under(t, "src/shared");
    },
  },
];

/** The repository-relative paths of a file's relative imports ("./x.js" → "src/dir/x.ts"). */
function importsOf(file: string, text: string): string[] {
  return ts
    .preProcessFile(text, true, true)
    .importedFiles.map((x) => x.fileName)
    .filter((spec) => spec.startsWith("."))
    .map((spec) => normalize(join(dirname(file), spec)).split(sep).join("/").replace(/\.js$/, ".ts"));
}

function violations(files: readonly { path: string; text: string }[]): string[] {
  const hits: string[] = [];
  for (const { path, text } of files)
    for (const to of importsOf(path, text)) for (const r of RULES) if (r.breaks(path, to)) hits.push(`${path} → ${to}  (${r.name})`);
  return hits;
}

describe("imports under src/ flow one way", () => {
  const files = tsFiles(SRC, [join(SRC, "gen")]).map((f) => ({ path: relative(ROOT, f).split(sep).join("/"), text: readFileSync(f, "utf8") }));

  it("no file breaks a rule", () => {
    expect(files.length).toBeGreaterThan(40); // the walk found the tree
    const hits = violations(files);
    expect(hits, `imports that run the wrong way:\n${hits.join("\n")}`).toEqual([]);
  });

  it("the scan sees multi-line, type-only, dynamic and re-exported imports, and not comments", () => {
    const text = [
      "import {",
      "  ApiClient,",
      '} from "../../cli/api.js";',
      'import type { X } from "../../gen/tscmig/v1/migration_pb.js";',
      'export { y } from "../../daemon/node.js";',
      'const m = await import("../../cli/main.js");',
      'type T = typeof import("../../gen/grpc/health/v1/health_pb.js");',
      '// import { z } from "../../cli/watch.js";',
      'import { ok } from "../../shared/errors.js";',
    ].join("\n");
    expect(importsOf("src/chaos/live/x.ts", text)).toEqual(["src/cli/api.ts", "src/gen/tscmig/v1/migration_pb.ts", "src/daemon/node.ts", "src/cli/main.ts", "src/gen/grpc/health/v1/health_pb.ts", "src/shared/errors.ts"]);
    const hits = violations([
      { path: "src/bench/x.ts", text: 'import { ApiClient } from "../cli/api.js";' },
      { path: "src/chaos/live/x.ts", text: 'import type { X } from "../../gen/tscmig/v1/migration_pb.js";' },
      { path: "src/shared/time/x.ts", text: 'import { node } from "../../daemon/node.js";' },
      { path: "src/source/x.ts", text: 'import type { D } from "../destination/migrate-in.js";' },
      { path: "src/shared/rpc/x.ts", text: 'import { S } from "../../gen/tscmig/v1/migration_pb.js";' },
      { path: "src/cli/x.ts", text: 'import { ApiClient } from "../client/api.js";' },
      { path: "src/shared/migration/x.ts", text: 'import type { EmulatedVm } from "../hypervisor/vm.js";' },
      { path: "src/shared/migration/y.ts", text: 'import type { HypervisorVm } from "../hypervisor/backend.js";' },
    ]);
    expect(hits.map((h) => h.split(" → ")[0])).toEqual(["src/bench/x.ts", "src/chaos/live/x.ts", "src/shared/time/x.ts", "src/source/x.ts", "src/shared/migration/x.ts"]);
  });
});
