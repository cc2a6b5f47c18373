// The project's own real-mode guest (source and contract: guest.S beside this file): its bytes with
// the annotated listing, the guest-physical layout, each vCPU's initial registers, and the reader
// of the mailbox through which the guest reports what it saw.
//
// Real-mode code is emulated instruction by instruction on a software virtualiser (~0.6–0.9 µs per
// instruction), so one sample is ~40 instructions and the host paces them: the guest HLTs after
// each sample and the vCPU thread decides when to run it again.

import { invalid, TscmigError } from "../../errors.js";
import { decodePvclock, type PvclockRecord } from "../../kvm/pvclock.js";

/** [offset, bytes, instruction]: the assembled guest.S (re-checked with `as` by the unit test). */
export const GUEST_LISTING: readonly (readonly [number, string, string])[] = [
  // entry:
  [0x00, "6689f8", "mov %edi, %eax"],
  [0x03, "6631d2", "xor %edx, %edx"],
  [0x06, "66b9014d564b", "mov $0x4b564d01, %ecx"],
  [0x0c, "0f30", "wrmsr"],
  [0x0e, "fb", "sti"],
  // sample:
  [0x0f, "2666ff060000", "incl %es:0"],
  // retry:
  [0x15, "64668b1e0000", "mov %fs:0, %ebx"],
  [0x1b, "f6c301", "test $1, %bl"],
  [0x1e, "0f859500", "jnz busy"],
  [0x22, "6466a10800", "mov %fs:8, %eax"],
  [0x27, "2666a31800", "mov %eax, %es:24"],
  [0x2c, "6466a10c00", "mov %fs:12, %eax"],
  [0x31, "2666a31c00", "mov %eax, %es:28"],
  [0x36, "6466a11000", "mov %fs:16, %eax"],
  [0x3b, "2666a32000", "mov %eax, %es:32"],
  [0x40, "6466a11400", "mov %fs:20, %eax"],
  [0x45, "2666a32400", "mov %eax, %es:36"],
  [0x4a, "6466a11800", "mov %fs:24, %eax"],
  [0x4f, "2666a32800", "mov %eax, %es:40"],
  [0x54, "6466a11c00", "mov %fs:28, %eax"],
  [0x59, "2666a32c00", "mov %eax, %es:44"],
  [0x5e, "0f31", "rdtsc"],
  [0x60, "64663b1e0000", "cmp %fs:0, %ebx"],
  [0x66, "754f", "jne busy"],
  [0x68, "2666891e1000", "mov %ebx, %es:16"],
  [0x6e, "2666a30800", "mov %eax, %es:8"],
  [0x73, "266689160c00", "mov %edx, %es:12"],
  [0x79, "26f6062d0002", "testb $2, %es:45"],
  [0x7f, "7426", "jz done"],
  [0x81, "6480261d00fd", "andb $0xfd, %fs:29"],
  [0x87, "2666ff063000", "incl %es:48"],
  [0x8d, "26668b0e3000", "mov %es:48, %ecx"],
  [0x93, "67668d41ff", "lea -1(%ecx), %eax"],
  [0x98, "66f00fb10e0005", "lock cmpxchg %ecx, %ds:0x500"],
  [0x9f, "7506", "jne done"],
  [0xa1, "2666ff063400", "incl %es:52"],
  // done:
  [0xa7, "2666ff060400", "incl %es:4"],
  [0xad, "2666ff060000", "incl %es:0"],
  [0xb3, "f4", "hlt"],
  [0xb4, "e958ff", "jmp sample"],
  // busy:
  [0xb7, "2666ff063800", "incl %es:56"],
  [0xbd, "e955ff", "jmp retry"],
  // irq:
  [0xc0, "6650", "push %eax"],
  [0xc2, "6652", "push %edx"],
  [0xc4, "2666ff064000", "incl %es:64"],
  [0xca, "0f31", "rdtsc"],
  [0xcc, "2666a34800", "mov %eax, %es:72"],
  [0xd1, "266689164c00", "mov %edx, %es:76"],
  [0xd7, "2666ff064400", "incl %es:68"],
  [0xdd, "2666ff064000", "incl %es:64"],
  [0xe3, "665a", "pop %edx"],
  [0xe5, "6658", "pop %eax"],
  [0xe7, "cf", "iret"],
  // idle:
  [0xe8, "f4", "hlt"],
  [0xe9, "ebfd", "jmp idle"],
];

/** The code bytes, concatenated from the listing. */
export const GUEST_CODE: Uint8Array = Uint8Array.from(Buffer.from(GUEST_LISTING.map(([, hex]) => hex).join(""), "hex"));

/** Entry points inside the code. */
export const GUEST_ENTRY_OFFSET = 0x00;
export const GUEST_IRQ_OFFSET = 0xc0;
export const GUEST_HLT_OFFSET = 0xb3;
export const GUEST_IDLE_OFFSET = 0xe8;

/** Guest-physical layout. Every area is per vCPU (indexed by its real-mode segment) but the code. */
export const LAYOUT = {
  /** The doorbell's interrupt vector (IVT entry at vector × 4). */
  doorbellVector: 0x40,
  /** VM-wide count of stops acted on (DS:0x500). */
  actedGpa: 0x500,
  codeGpa: 0x1000,
  codeSegment: 0x0100,
  pvclockGpa: 0x2000,
  pvclockBytes: 32,
  mailboxGpa: 0x1_0000,
  mailboxBytes: 128,
  stackGpa: 0x3_0000,
  stackBytes: 256,
  /** Guest memory size: one slot at GPA 0 (a multiple of the page size). */
  memoryBytes: 0x8_0000,
  /** Most vCPUs the layout has room for (the areas above are sized for it). */
  vcpusMax: 1024,
} as const;

// Mailbox offsets (guest.S header).
const MB_SEQ = 0;
const MB_SAMPLES = 4;
const MB_TSC = 8;
const MB_RECORD = 16;
const MB_STOPPED = 48;
const MB_ACTED = 52;
const MB_RETRIES = 56;
const MB_INDEX = 60;
const MB_IRQ_SEQ = 64;
const MB_DOORBELLS = 68;
const MB_IRQ_TSC = 72;

export function pvclockGpa(vcpu: number): number {
  return LAYOUT.pvclockGpa + vcpu * LAYOUT.pvclockBytes;
}
export function mailboxGpa(vcpu: number): number {
  return LAYOUT.mailboxGpa + vcpu * LAYOUT.mailboxBytes;
}

/** Writes the code, the IVT's doorbell entry and each mailbox's vCPU index into zeroed memory. */
export function installGuest(mem: Uint8Array, vcpus: number): void {
  if (mem.length < LAYOUT.memoryBytes) throw invalid("memory", `needs ${LAYOUT.memoryBytes} bytes, has ${mem.length}`);
  if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > LAYOUT.vcpusMax) throw invalid("vcpus", `must be an integer in 1..${LAYOUT.vcpusMax}`);
  mem.set(GUEST_CODE, LAYOUT.codeGpa);
  const v = new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
  v.setUint16(LAYOUT.doorbellVector * 4, GUEST_IRQ_OFFSET, true);
  v.setUint16(LAYOUT.doorbellVector * 4 + 2, LAYOUT.codeSegment, true);
  for (let i = 0; i < vcpus; i++) v.setUint32(mailboxGpa(i) + MB_INDEX, i, true);
}

/** The segment selectors and registers vCPU `i` starts with (guest.S register contract). */
export interface GuestInitialState {
  segments: { cs: number; ds: number; es: number; fs: number; ss: number };
  rip: bigint;
  rsp: bigint;
  rdi: bigint;
  rflags: bigint;
}

/** `entry` runs the sampling guest; `idle` only HLTs (one instruction per KVM_RUN, for timing). */
export type GuestProgram = "sample" | "idle";

export function initialState(i: number, program: GuestProgram = "sample"): GuestInitialState {
  return {
    segments: {
      cs: LAYOUT.codeSegment,
      ds: 0,
      es: mailboxGpa(i) >> 4,
      fs: pvclockGpa(i) >> 4,
      ss: (LAYOUT.stackGpa + i * LAYOUT.stackBytes) >> 4,
    },
    rip: BigInt(program === "idle" ? GUEST_IDLE_OFFSET : GUEST_ENTRY_OFFSET),
    rsp: BigInt(LAYOUT.stackBytes),
    rdi: BigInt(pvclockGpa(i)) | 1n,
    rflags: 0x2n,
  };
}

/** One vCPU's mailbox: the latest sample and its counters. */
export interface GuestReport {
  vcpu: number;
  samples: number;
  /** RDTSC taken inside the pvclock read of the latest sample. */
  tsc: bigint;
  /** The record the latest sample read (flags as read, before the guest cleared GUEST_STOPPED). */
  record: PvclockRecord | null;
  stopped: number;
  acted: number;
  retries: number;
  doorbells: number;
  /** RDTSC at the latest doorbell (0 before the first). */
  doorbellTsc: bigint;
}

/**
 * Reads vCPU `i`'s mailbox under its seqlocks (the guest writes while we read): the sample fields
 * while `seq` is even and unchanged, the doorbell fields likewise under `irq seq`. Gives up after
 * `maxRetries` with an `unavailable` error (a vCPU stopped mid-sample never finishes it).
 */
export function readMailbox(mem: Uint8Array, i: number, maxRetries = 10_000): GuestReport {
  const base = mailboxGpa(i);
  const v = new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
  const sample = seqRead(v, base + MB_SEQ, maxRetries, () => {
    const samples = v.getUint32(base + MB_SAMPLES, true);
    return {
      samples,
      tsc: v.getBigUint64(base + MB_TSC, true),
      record: samples === 0 ? null : decodePvclock(mem.slice(base + MB_RECORD, base + MB_RECORD + 32), 0, `mailbox[${i}].record`),
      stopped: v.getUint32(base + MB_STOPPED, true),
      acted: v.getUint32(base + MB_ACTED, true),
      retries: v.getUint32(base + MB_RETRIES, true),
    };
  });
  const irq = seqRead(v, base + MB_IRQ_SEQ, maxRetries, () => ({
    doorbells: v.getUint32(base + MB_DOORBELLS, true),
    doorbellTsc: v.getBigUint64(base + MB_IRQ_TSC, true),
  }));
  return { vcpu: v.getUint32(base + MB_INDEX, true), ...sample, ...irq };
}

/** The seq word of vCPU `i`'s mailbox: odd while a sample is being written. */
export function mailboxSeq(mem: Uint8Array, i: number): number {
  return new DataView(mem.buffer, mem.byteOffset, mem.byteLength).getUint32(mailboxGpa(i) + MB_SEQ, true);
}

/** The VM-wide count of stops acted on. */
export function readActed(mem: Uint8Array): number {
  return new DataView(mem.buffer, mem.byteOffset, mem.byteLength).getUint32(LAYOUT.actedGpa, true);
}

function seqRead<T>(v: DataView, seqAt: number, maxRetries: number, read: () => T): T {
  for (let n = 0; n < maxRetries; n++) {
    const seq = v.getUint32(seqAt, true);
    if ((seq & 1) !== 0) continue;
    const value = read();
    if (v.getUint32(seqAt, true) === seq) return value;
  }
  throw new TscmigError("unavailable", `mailbox: seq at 0x${seqAt.toString(16)} stayed odd or moving over ${maxRetries} reads (vCPU stopped mid-sample?)`, {
    field: "mailbox.seq",
    reason: "mailbox_mid_sample",
  });
}
