// A real VM's backend payload (HypervisorVm.capturePayload): what a fresh destination VM needs besides
// the clocks the snapshot carries — guest memory (deflated: the guest uses a few pages of it) and per
// vCPU its registers, segment registers, kvmclock MSR and TSC offset. Little-endian, one layout:
//
//   0  magic "TSCKVM" 0x00 0x01      8  u32 vCPUs      12  u32 memory bytes (inflated)
//   16 u32 deflated length L          20  L bytes of deflated memory
//   then per vCPU: kvm_regs (144), kvm_sregs (312), u64 MSR_KVM_SYSTEM_TIME_NEW, u64 TSC offset
//
// It arrives from a peer: every length is checked against the layout before anything is read, the
// inflation is bounded by the memory size, and a payload that is anything but exactly this is a
// typed `invalid_argument` naming `snapshot.backendPayload` (nothing reaches the kernel).

import { deflateRawSync, inflateRawSync } from "node:zlib";
import { invalid, isTscmigError } from "../../errors.js";
import { LIMITS } from "../../limits.js";
import { KVM_REGS, KVM_SREGS } from "./abi.js";
import { LAYOUT } from "./guest.js";
import type { KvmVmState } from "./kvm-vm.js";

const MAGIC = Uint8Array.from([0x54, 0x53, 0x43, 0x4b, 0x56, 0x4d, 0x00, 0x01]);
const HEADER_BYTES = 20;
const PER_VCPU_BYTES = KVM_REGS.size + KVM_SREGS.size + 16;
const FIELD = "snapshot.backendPayload";

/** What the payload carries: KvmVmState without the clock (the snapshot has it). */
export type KvmPayloadState = Pick<KvmVmState, "vcpus" | "memory" | "regs" | "sregs" | "systemTimeMsr" | "tscOffset">;

export function encodeKvmPayload(s: KvmPayloadState): Uint8Array {
  const deflated = deflateRawSync(s.memory, { level: 1 });
  const out = new Uint8Array(HEADER_BYTES + deflated.length + s.vcpus * PER_VCPU_BYTES);
  const v = new DataView(out.buffer);
  out.set(MAGIC, 0);
  v.setUint32(8, s.vcpus, true);
  v.setUint32(12, s.memory.length, true);
  v.setUint32(16, deflated.length, true);
  out.set(deflated, HEADER_BYTES);
  let at = HEADER_BYTES + deflated.length;
  for (let i = 0; i < s.vcpus; i++) {
    out.set(s.regs[i] as Uint8Array, at);
    out.set(s.sregs[i] as Uint8Array, at + KVM_REGS.size);
    v.setBigUint64(at + KVM_REGS.size + KVM_SREGS.size, s.systemTimeMsr[i] as bigint, true);
    v.setBigUint64(at + KVM_REGS.size + KVM_SREGS.size + 8, s.tscOffset[i] as bigint, true);
    at += PER_VCPU_BYTES;
  }
  if (out.length > LIMITS.backendPayloadBytesMax) throw invalid(FIELD, `${out.length} bytes, over the ${LIMITS.backendPayloadBytesMax}-byte limit`);
  return out;
}

/** The payload's structure only (no inflation): cheap enough for every Transfer. */
export function checkKvmPayloadShape(p: Uint8Array): { vcpus: number; deflatedBytes: number } {
  if (!(p instanceof Uint8Array)) throw invalid(FIELD, "must be bytes");
  if (p.length > LIMITS.backendPayloadBytesMax) throw invalid(FIELD, `${p.length} bytes, over the ${LIMITS.backendPayloadBytesMax}-byte limit`);
  if (p.length < HEADER_BYTES) throw invalid(FIELD, `${p.length} bytes: shorter than its header`);
  for (let k = 0; k < MAGIC.length; k++) if (p[k] !== MAGIC[k]) throw invalid(FIELD, "not a KVM backend payload (bad magic or version)");
  const v = new DataView(p.buffer, p.byteOffset, p.byteLength);
  const vcpus = v.getUint32(8, true);
  const memoryBytes = v.getUint32(12, true);
  const deflatedBytes = v.getUint32(16, true);
  const vcpusMax = Math.min(LIMITS.vcpuCountMax, LAYOUT.vcpusMax);
  if (vcpus < 1 || vcpus > vcpusMax) throw invalid(FIELD, `${vcpus} vCPUs: must be in 1..${vcpusMax}`);
  if (memoryBytes !== LAYOUT.memoryBytes) throw invalid(FIELD, `guest memory of ${memoryBytes} bytes: this backend's guest has ${LAYOUT.memoryBytes}`);
  const expected = HEADER_BYTES + deflatedBytes + vcpus * PER_VCPU_BYTES;
  if (deflatedBytes === 0 || p.length !== expected) throw invalid(FIELD, `${p.length} bytes where its header implies ${expected}`);
  return { vcpus, deflatedBytes };
}

export function decodeKvmPayload(p: Uint8Array): KvmPayloadState {
  const { vcpus, deflatedBytes } = checkKvmPayloadShape(p);
  let memory: Uint8Array;
  try {
    memory = new Uint8Array(inflateRawSync(p.subarray(HEADER_BYTES, HEADER_BYTES + deflatedBytes), { maxOutputLength: LAYOUT.memoryBytes }));
  } catch (e) {
    if (isTscmigError(e)) throw e;
    throw invalid(FIELD, `guest memory does not inflate (${e instanceof Error ? e.message : String(e)})`);
  }
  if (memory.length !== LAYOUT.memoryBytes) throw invalid(FIELD, `guest memory inflates to ${memory.length} bytes, not ${LAYOUT.memoryBytes}`);
  const v = new DataView(p.buffer, p.byteOffset, p.byteLength);
  const s: KvmPayloadState = { vcpus, memory, regs: [], sregs: [], systemTimeMsr: [], tscOffset: [] };
  let at = HEADER_BYTES + deflatedBytes;
  for (let i = 0; i < vcpus; i++) {
    s.regs.push(p.slice(at, at + KVM_REGS.size));
    s.sregs.push(p.slice(at + KVM_REGS.size, at + KVM_REGS.size + KVM_SREGS.size));
    const msr = v.getBigUint64(at + KVM_REGS.size + KVM_SREGS.size, true);
    const gpa = msr & ~1n;
    if (msr !== 0n && (gpa % 4n !== 0n || gpa + 32n > BigInt(LAYOUT.memoryBytes))) throw invalid(`${FIELD}.systemTimeMsr[${i}]`, "pvclock record outside guest memory");
    s.systemTimeMsr.push(msr);
    s.tscOffset.push(v.getBigUint64(at + KVM_REGS.size + KVM_SREGS.size + 8, true));
    at += PER_VCPU_BYTES;
  }
  return s;
}

/** decodeKvmPayload for a snapshot of `vcpus` vCPUs: a payload carrying another count is refused. */
export function decodeKvmPayloadFor(p: Uint8Array, vcpus: number): KvmPayloadState {
  const s = decodeKvmPayload(p);
  if (s.vcpus !== vcpus) throw invalid(FIELD, `carries ${s.vcpus} vCPUs, the snapshot ${vcpus}`);
  return s;
}
