// Goal: the committed guest bytes are exactly guest.S assembled, the layout keeps every per-vCPU
// area apart and inside guest memory, and the mailbox reader returns whole samples only.
// Method: re-assemble guest.S with binutils (`as --32`, `objcopy`) where installed (else skip with
// the reason) and compare with GUEST_CODE; check the listing's offsets chain; lay out 1024 vCPUs
// and check the areas; write mailboxes by hand (as the guest does, seqlock and all) and read them.

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import {
  GUEST_CODE,
  GUEST_HLT_OFFSET,
  GUEST_IRQ_OFFSET,
  GUEST_LISTING,
  initialState,
  installGuest,
  LAYOUT,
  mailboxGpa,
  pvclockGpa,
  readMailbox,
} from "../../src/shared/hypervisor/kvm/guest.js";
import { encodePvclock, PVCLOCK_GUEST_STOPPED } from "../../src/shared/kvm/pvclock.js";

const SOURCE = fileURLToPath(new URL("../../src/shared/hypervisor/kvm/guest.S", import.meta.url));

function binutils(): boolean {
  try {
    execFileSync("as", ["--version"], { stdio: "ignore" });
    execFileSync("objcopy", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

describe("the guest image", () => {
  const haveAs = binutils();
  if (!haveAs) console.warn("kvm-guest: skipping the re-assembly of guest.S: binutils (as, objcopy) not installed");

  it.skipIf(!haveAs)("guest.S assembles to exactly the committed bytes", () => {
    const dir = mkdtempSync(join(tmpdir(), "tscmig-guest-"));
    try {
      execFileSync("as", ["--32", "-o", join(dir, "g.o"), SOURCE]);
      execFileSync("objcopy", ["-O", "binary", join(dir, "g.o"), join(dir, "g.bin")]);
      expect(Buffer.from(readFileSync(join(dir, "g.bin"))).toString("hex")).toBe(Buffer.from(GUEST_CODE).toString("hex"));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("the listing is contiguous and names the entry points the host uses", () => {
    let at = 0;
    for (const [offset, hex] of GUEST_LISTING) {
      expect(offset).toBe(at);
      at += hex.length / 2;
    }
    expect(at).toBe(GUEST_CODE.length);
    const asm = new Map(GUEST_LISTING.map(([o, , text]) => [o, text]));
    expect(asm.get(GUEST_IRQ_OFFSET)).toBe("push %eax");
    expect(asm.get(GUEST_HLT_OFFSET)).toBe("hlt");
    expect(GUEST_LISTING.some(([, , t]) => t === "mov $0x4b564d01, %ecx")).toBe(true); // MSR_KVM_SYSTEM_TIME_NEW
  });
});

describe("the guest-physical layout", () => {
  it("keeps IVT, code, records, mailboxes and stacks of 1024 vCPUs apart and inside memory", () => {
    const n = LAYOUT.vcpusMax;
    const areas: [string, number, number][] = [
      ["ivt+globals", 0, LAYOUT.actedGpa + 4],
      ["code", LAYOUT.codeGpa, LAYOUT.codeGpa + GUEST_CODE.length],
      ["pvclock", LAYOUT.pvclockGpa, pvclockGpa(n)],
      ["mailbox", LAYOUT.mailboxGpa, mailboxGpa(n)],
      ["stack", LAYOUT.stackGpa, LAYOUT.stackGpa + n * LAYOUT.stackBytes],
    ];
    areas.sort((a, b) => a[1] - b[1]);
    for (let k = 1; k < areas.length; k++) expect(areas[k]?.[1], `${areas[k]?.[0]} after ${areas[k - 1]?.[0]}`).toBeGreaterThanOrEqual(areas[k - 1]?.[2] as number);
    expect(areas.at(-1)?.[2]).toBeLessThanOrEqual(LAYOUT.memoryBytes);
    expect(LAYOUT.memoryBytes).toBeLessThanOrEqual(0xa_0000); // real mode reaches it all
    expect(LAYOUT.memoryBytes % 4096).toBe(0);
  });

  it("gives each vCPU segments that address its own areas", () => {
    for (const i of [0, 1, 513, 1023]) {
      const s = initialState(i);
      expect(s.segments.es * 16).toBe(mailboxGpa(i));
      expect(s.segments.fs * 16).toBe(pvclockGpa(i));
      expect(s.segments.ss * 16 + Number(s.rsp)).toBe(LAYOUT.stackGpa + (i + 1) * LAYOUT.stackBytes);
      expect(s.rdi).toBe(BigInt(pvclockGpa(i)) | 1n);
    }
  });

  it("installGuest rejects a memory too small or a vCPU count out of range", () => {
    expect(() => installGuest(new Uint8Array(4096), 1)).toThrow(/memory/);
    expect(() => installGuest(new Uint8Array(LAYOUT.memoryBytes), 0)).toThrow(/vcpus/);
    expect(() => installGuest(new Uint8Array(LAYOUT.memoryBytes), 1025)).toThrow(/vcpus/);
  });
});

describe("the mailbox reader", () => {
  const rec = { version: 4, tscTimestamp: 1000n, systemTime: 5_000_000n, tscToSystemMul: 3303820996n, tscShift: -1, flags: 1 | PVCLOCK_GUEST_STOPPED };

  function withSample(mem: Uint8Array, i: number, seq: number): void {
    const v = new DataView(mem.buffer);
    const b = mailboxGpa(i);
    v.setUint32(b, seq, true);
    v.setUint32(b + 4, 7, true);
    v.setBigUint64(b + 8, 123_456n, true);
    encodePvclock(rec, mem, b + 16);
    v.setUint32(b + 48, 1, true);
    v.setUint32(b + 68, 2, true);
    v.setBigUint64(b + 72, 99n, true);
  }

  it("returns the sample, the record as read and the counters", () => {
    const mem = new Uint8Array(LAYOUT.memoryBytes);
    installGuest(mem, 3);
    withSample(mem, 2, 14);
    const r = readMailbox(mem, 2);
    expect(r).toMatchObject({ vcpu: 2, samples: 7, tsc: 123_456n, stopped: 1, doorbells: 2, doorbellTsc: 99n });
    expect(r.record).toEqual(rec);
  });

  it("never returns a sample the guest is still writing", () => {
    const mem = new Uint8Array(LAYOUT.memoryBytes);
    installGuest(mem, 1);
    withSample(mem, 0, 15); // odd: mid-sample
    expect(() => readMailbox(mem, 0, 50)).toThrow(/odd or moving/);
  });

  it("a vCPU that has not sampled yet reports no record", () => {
    const mem = new Uint8Array(LAYOUT.memoryBytes);
    installGuest(mem, 1);
    expect(readMailbox(mem, 0)).toMatchObject({ samples: 0, record: null, stopped: 0, doorbells: 0 });
  });
});
