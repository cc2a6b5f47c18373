// Goal: the documentation stands on its own and its references hold: every relative link in docs/
// and README.md reaches a file and, with a fragment, a heading in it; every docs/ reference in the
// code's comments does too; and no comment cites a specification outside the repository ("SPEC §n").
// Method: GitHub's heading slugs computed for every Markdown file; links and code references parsed
// with regular expressions and resolved against the checkout.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** GitHub's anchor for a heading: lower case, punctuation dropped, each space a hyphen. */
export function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, "")
    .replace(/ /g, "-");
}

function anchors(file: string): Set<string> {
  const out = new Set<string>();
  let fenced = false;
  for (const line of readFileSync(file, "utf8").split("\n")) {
    if (line.startsWith("```")) fenced = !fenced;
    const m = !fenced && /^#{1,6}\s+(.*)$/.exec(line);
    if (m) out.add(slug(m[1]!));
  }
  return out;
}

function files(dir: string, ext: RegExp, skip: (p: string) => boolean = () => false): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (skip(p)) continue;
    if (e.isDirectory()) out.push(...files(p, ext, skip));
    else if (ext.test(e.name)) out.push(p);
  }
  return out;
}

/** Problems with one reference `target` (path#fragment) written in `from`, resolved against `base`. */
function check(from: string, base: string, target: string): string | null {
  const [path, fragment] = target.split("#") as [string, string | undefined];
  const abs = path === "" ? from : resolve(base, path);
  if (!existsSync(abs)) return `${relative(ROOT, from)}: ${target}: no such file`;
  if (fragment && abs.endsWith(".md") && !anchors(abs).has(fragment)) return `${relative(ROOT, from)}: ${target}: no heading with that anchor`;
  if (fragment && statSync(abs).isDirectory()) return `${relative(ROOT, from)}: ${target}: a fragment on a directory`;
  return null;
}

describe("the documentation's references", () => {
  it("slugs headings as GitHub does", () => {
    expect(slug("`kvm-realtime` — the upstream KVM document")).toBe("kvm-realtime--the-upstream-kvm-document");
    expect(slug("Security: TLS, peer tokens, the control-API token")).toBe("security-tls-peer-tokens-the-control-api-token");
  });

  it("every relative link in docs/ and README.md resolves, fragment included", () => {
    const md = [join(ROOT, "README.md"), ...files(join(ROOT, "docs"), /\.md$/, (p) => p === join(ROOT, "docs", "api"))];
    const bad: string[] = [];
    let links = 0;
    for (const f of md) {
      let text = readFileSync(f, "utf8").replace(/```[\s\S]*?```/g, "");
      text = text.replace(/`[^`\n]*`/g, "");
      for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1]!;
        if (/^[a-z]+:/.test(target)) continue;
        links++;
        const problem = check(f, dirname(f), target);
        if (problem) bad.push(problem);
      }
    }
    expect(bad).toEqual([]);
    expect(links).toBeGreaterThan(20);
  });

  it("every docs/ reference in the code resolves, and nothing cites SPEC", () => {
    const skip = (p: string) => /node_modules|\/dist$|\/\.git$|\/docs\/api$/.test(p);
    const code = [
      ...files(join(ROOT, "src"), /\.ts$/, skip),
      ...files(join(ROOT, "test"), /\.ts$/, skip),
      ...files(join(ROOT, "scripts"), /\.(ts|sh|mjs)$/, skip),
      ...files(join(ROOT, "proto"), /\.proto$/, skip),
      ...files(join(ROOT, "deploy"), /\.(md|yaml|yml)$/, skip),
      join(ROOT, "BENCHMARKS.md"),
      join(ROOT, "README.md"),
    ];
    const bad: string[] = [];
    const citing: string[] = [];
    let refs = 0;
    for (const f of code) {
      const text = readFileSync(f, "utf8");
      if (f !== join(ROOT, "test", "unit", "docs-links.test.ts") && /\bSPEC(\s*§|'s\b|\s+I\d)/.test(text)) citing.push(relative(ROOT, f));
      for (const m of text.matchAll(/\bdocs\/[\w./-]+\.(?:md|svg)(?:#[\w-]+)?/g)) {
        refs++;
        const problem = check(f, ROOT, m[0]);
        if (problem) bad.push(problem);
      }
    }
    expect(citing, "cite docs/ instead of a specification outside the repository").toEqual([]);
    expect(bad).toEqual([]);
    expect(refs).toBeGreaterThan(25);
  });
});
