// Goal: a file read from a path given by the user (`chaos merge` reports, `chaos replay --history`,
// `--peer-token-file`) that is not a regular file (a device, a FIFO, a directory) is refused with a
// typed error naming it, instead of reading /dev/zero without end or blocking on a FIFO for good.
// Method: the readers on such paths; the FIFO is made with mkfifo where it exists.

import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runMerge } from "../../src/chaos/cli.js";
import { readHistoryFile } from "../../src/chaos/replay.js";
import { resolvePeerAuth } from "../../src/daemon/peer-auth.js";
import { isTscmigError } from "../../src/shared/errors.js";

const dir = mkdtempSync(join(tmpdir(), "tscmig-merge-inputs-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function refusal(file: string): string {
  try {
    runMerge([file], { quiet: true }, () => {});
  } catch (e) {
    if (isTscmigError(e) && e.code === "invalid_argument" && e.field === "reports") return e.message;
    throw e;
  }
  throw new Error(`merge of ${file} did not fail`);
}

describe("chaos merge inputs", () => {
  it("refuses a device, a directory and a FIFO as not a regular file", () => {
    expect(refusal("/dev/null")).toMatch(/\/dev\/null: not a regular file/);
    expect(refusal(dir)).toMatch(/not a regular file/);
    let fifo: string | null = join(dir, "fifo");
    try {
      execFileSync("mkfifo", [fifo]);
    } catch {
      fifo = null;
      console.warn("chaos merge inputs: FIFO case skipped: mkfifo is not available");
    }
    if (fifo !== null) expect(refusal(fifo)).toMatch(/not a regular file/);
  });
});

describe("other files read from a path", () => {
  it("chaos replay --history refuses a device and a directory as not a regular file", () => {
    for (const path of [dir, "/dev/zero"]) {
      let err: unknown;
      try {
        readHistoryFile(path);
      } catch (e) {
        err = e;
      }
      expect(isTscmigError(err) && err.field === "history" && /not a regular file/.test(err.message), String(err)).toBe(true);
    }
  });

  it("--peer-token-file refuses a directory and a device as not a regular file", () => {
    for (const path of [dir, "/dev/zero"]) {
      const config = { peerAuth: "token", peerTokenFile: path, tls: false, grpcHost: "127.0.0.1" };
      expect(() => resolvePeerAuth(config)).toThrow(/: not a regular file/);
    }
  });
});
