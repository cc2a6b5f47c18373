// The TypeScript files of a source tree, for tests that scan the code itself (time-scan,
// import-direction).
import { readdirSync } from "node:fs";
import { join } from "node:path";

/** Every .ts file under `dir`, skipping the directories in `excluded` (absolute paths). */
export function tsFiles(dir: string, excluded: readonly string[] = []): string[] {
  if (excluded.includes(dir)) return [];
  const files: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) files.push(...tsFiles(p, excluded));
    else if (e.isFile() && e.name.endsWith(".ts")) files.push(p);
  }
  return files;
}
