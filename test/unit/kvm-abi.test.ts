// Goal: the ioctl numbers, capability values and struct layouts the real-KVM backend passes to the
// kernel are exactly the kernel's, on any machine (no /dev/kvm needed).
// Method: (1) compare every request number with the value gcc printed from <linux/kvm.h> when this
// table was written, and with the _IO/_IOR/_IOW/_IOWR encoding done by hand; (2) where the kernel
// headers are installed, parse each `#define KVM_… _IOx(KVMIO, nr, struct s)` and each KVM_CAP_*
// and compare; (3) where gcc is installed too, compile a program printing sizeof/offsetof of every
// field we lay out and every request number, and compare all of it. Missing tools skip with a reason.

import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  CAPS,
  decodeClockData,
  decodeMsrs,
  decodeRegs,
  encodeClockData,
  encodeMsrs,
  encodeRegs,
  encodeSignalMask,
  IOCTLS,
  ioc,
  KVM_CLOCK_DATA,
  KVM_SREGS,
  LAYOUTS,
  setRealModeSegment,
} from "../../src/shared/hypervisor/kvm/abi.js";

const KVM_H = "/usr/include/linux/kvm.h";
const ASM_KVM_H = ["/usr/include/x86_64-linux-gnu/asm/kvm.h", "/usr/include/asm/kvm.h"].find((p) => existsSync(p));

/** What gcc printed for each request from linux-libc-dev 6.1's <linux/kvm.h> on x86-64. */
const GCC_VALUES: Record<keyof typeof IOCTLS, number> = {
  KVM_GET_API_VERSION: 0xae00,
  KVM_CREATE_VM: 0xae01,
  KVM_CHECK_EXTENSION: 0xae03,
  KVM_GET_VCPU_MMAP_SIZE: 0xae04,
  KVM_CREATE_VCPU: 0xae41,
  KVM_SET_USER_MEMORY_REGION: 0x4020ae46,
  KVM_SET_TSS_ADDR: 0xae47,
  KVM_SET_CLOCK: 0x4030ae7b,
  KVM_GET_CLOCK: 0x8030ae7c,
  KVM_RUN: 0xae80,
  KVM_GET_REGS: 0x8090ae81,
  KVM_SET_REGS: 0x4090ae82,
  KVM_GET_SREGS: 0x8138ae83,
  KVM_SET_SREGS: 0x4138ae84,
  KVM_INTERRUPT: 0x4004ae86,
  KVM_GET_MSRS: 0xc008ae88,
  KVM_SET_MSRS: 0x4008ae89,
  KVM_SET_SIGNAL_MASK: 0x4004ae8b,
  KVM_SET_TSC_KHZ: 0xaea2,
  KVM_GET_TSC_KHZ: 0xaea3,
  KVM_KVMCLOCK_CTRL: 0xaead,
  KVM_SET_DEVICE_ATTR: 0x4018aee1,
  KVM_GET_DEVICE_ATTR: 0x4018aee2,
  KVM_HAS_DEVICE_ATTR: 0x4018aee3,
};

describe("ioctl request numbers", () => {
  it("match the values gcc computed from the kernel header", () => {
    for (const [name, value] of Object.entries(IOCTLS)) expect(value, name).toBe(GCC_VALUES[name as keyof typeof IOCTLS]);
  });

  it("the encoder puts direction, size, type and number where asm-generic/ioctl.h does", () => {
    expect(ioc(2, 0xae, 0x7c, 48)).toBe(0x8030ae7c); // _IOR(KVMIO, 0x7c, struct kvm_clock_data)
    expect(ioc(3, 0xae, 0x88, 8)).toBe(0xc008ae88); // _IOWR
    expect(ioc(1, 0xae, 0x8b, 4)).toBe(0x4004ae8b); // _IOW
    expect(ioc(0, 0xae, 0x80, 0)).toBe(0xae80); // _IO
    expect(() => ioc(1, 0xae, 0, 1 << 14)).toThrow(/14 bits/);
  });

  it.skipIf(!existsSync(KVM_H))(`agree with every #define in ${KVM_H} (direction, number, struct size)`, () => {
    const text = readFileSync(KVM_H, "utf8").replace(/\\\n/g, " ");
    const sizes = Object.fromEntries(LAYOUTS.map((l) => [l.name, l.size]));
    for (const [name, value] of Object.entries(IOCTLS)) {
      const m = new RegExp(`#define\\s+${name}\\s+_IO(R|W|WR)?\\s*\\(\\s*KVMIO\\s*,\\s*(0x[0-9a-fA-F]+)\\s*(?:,\\s*struct\\s+(\\w+)\\s*)?\\)`).exec(text);
      expect(m, `${name} defined in ${KVM_H}`).not.toBeNull();
      const [, dirText, nrText, struct] = m as RegExpExecArray;
      const dir = dirText === "R" ? 2 : dirText === "W" ? 1 : dirText === "WR" ? 3 : 0;
      const size = struct === undefined ? 0 : sizes[struct as string];
      expect(size, `${name}: layout of struct ${struct} known`).toBeDefined();
      expect(value, name).toBe(ioc(dir, 0xae, Number(nrText), size as number));
    }
  });

  it.skipIf(!existsSync(KVM_H))("capability numbers agree with the header's KVM_CAP_* defines", () => {
    const text = readFileSync(KVM_H, "utf8");
    for (const [name, value] of Object.entries(CAPS)) {
      const m = new RegExp(`#define\\s+${name}\\s+(\\d+)`).exec(text);
      expect(m, name).not.toBeNull();
      expect(value, name).toBe(Number((m as RegExpExecArray)[1]));
    }
  });
});

function hasGcc(): boolean {
  try {
    execFileSync("gcc", ["--version"], { stdio: "ignore" });
    return existsSync(KVM_H) && ASM_KVM_H !== undefined;
  } catch {
    return false;
  }
}

describe("struct layouts", () => {
  const gcc = hasGcc();
  if (!gcc) console.warn(`kvm-abi: skipping the gcc offsetof cross-check: needs gcc and ${KVM_H} (linux-libc-dev)`);

  it.skipIf(!gcc)("every size and field offset equals gcc's sizeof/offsetof, every request gcc's macro value", () => {
    const lines: string[] = [];
    for (const l of LAYOUTS) {
      lines.push(`P("${l.name}", "", sizeof(struct ${l.name}));`);
      for (const [field, fl] of Object.entries(l.fields)) {
        lines.push(`P("${l.name}", "${field}", offsetof(struct ${l.name}, ${field}));`);
        lines.push(`P("${l.name}", "${field}#size", sizeof(((struct ${l.name} *)0)->${field}));`);
        void fl;
      }
    }
    for (const name of Object.keys(IOCTLS)) lines.push(`P("ioctl", "${name}", ${name});`);
    const src = [
      "#include <linux/kvm.h>",
      "#include <stdio.h>",
      "#include <stddef.h>",
      '#define P(s, f, v) printf("%s %s %lu\\n", s, f, (unsigned long)(v))',
      "int main(void) {",
      ...lines,
      "return 0; }",
    ].join("\n");
    const dir = mkdtempSync(join(tmpdir(), "tscmig-kvm-abi-"));
    try {
      writeFileSync(join(dir, "l.c"), src);
      execFileSync("gcc", ["-o", join(dir, "l"), join(dir, "l.c")]);
      const got = new Map<string, number>();
      for (const line of execFileSync(join(dir, "l"), { encoding: "utf8" }).trim().split("\n")) {
        const [s, f, v] = line.split(" ");
        got.set(`${s}.${f}`, Number(v));
      }
      for (const l of LAYOUTS) {
        expect(l.size, `sizeof(struct ${l.name})`).toBe(got.get(`${l.name}.`));
        for (const [field, fl] of Object.entries(l.fields)) {
          expect(fl.offset, `offsetof(${l.name}, ${field})`).toBe(got.get(`${l.name}.${field}`));
          expect(fl.size, `sizeof(${l.name}.${field})`).toBe(got.get(`${l.name}.${field}#size`));
        }
      }
      for (const [name, value] of Object.entries(IOCTLS)) expect(value, name).toBe(got.get(`ioctl.${name}`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("encoders write the fields at the laid-out offsets and decoders read them back", () => {
    const c = { clock: 0x0102030405060708n, flags: 0xe, realtime: 0x1112131415161718n, hostTsc: 0x2122232425262728n };
    const b = encodeClockData(c);
    expect(b.length).toBe(KVM_CLOCK_DATA.size);
    expect(new DataView(b.buffer).getUint32(8, true)).toBe(0xe);
    expect(decodeClockData(b)).toEqual(c);
    const regs = decodeRegs(new Uint8Array(144));
    regs.rip = 0x1234n;
    regs.rflags = 2n;
    expect(new DataView(encodeRegs(regs).buffer).getBigUint64(128, true)).toBe(0x1234n);
    expect(decodeRegs(encodeRegs(regs))).toEqual(regs);
    const msrs = encodeMsrs([{ index: 0x4b564d01, data: 0x2001n }, { index: 0x10, data: 7n }]);
    expect(msrs.length).toBe(8 + 2 * 16);
    expect(decodeMsrs(msrs)).toEqual([{ index: 0x4b564d01, data: 0x2001n }, { index: 0x10, data: 7n }]);
    const mask = encodeSignalMask(1n << 39n);
    expect(new DataView(mask.buffer).getUint32(0, true)).toBe(8);
    expect(new DataView(mask.buffer).getBigUint64(4, true)).toBe(1n << 39n);
    const sregs = new Uint8Array(KVM_SREGS.size);
    setRealModeSegment(sregs, "es", 0x1008);
    const es = new DataView(sregs.buffer, 48, 24); // third segment: cs, ds, es
    expect(es.getBigUint64(0, true)).toBe(0x10080n);
    expect(es.getUint32(8, true)).toBe(0xffff);
    expect(es.getUint16(12, true)).toBe(0x1008);
  });
});
