// The KVM user ABI this backend speaks, x86-64: ioctl request numbers built with the kernel's own
// _IO/_IOR/_IOW/_IOWR encoding (include/uapi/asm-generic/ioctl.h), capability and flag values, and
// the byte layout of every struct we pass (include/uapi/linux/kvm.h, arch/x86/include/uapi/asm/kvm.h,
// arch/x86/include/uapi/asm/kvm_para.h). Pure data: nothing here touches /dev/kvm, so the unit tests
// check it on any machine, against the kernel headers and gcc's offsetof where they are installed.

// ---- ioctl encoding ---------------------------------------------------------------------------
// request = dir << 30 | size << 16 | type << 8 | nr; dir: none 0, write 1 (_IOW), read 2 (_IOR).

const IOC_NONE = 0;
const IOC_WRITE = 1;
const IOC_READ = 2;
export const KVMIO = 0xae;

export function ioc(dir: number, type: number, nr: number, size: number): number {
  if (size < 0 || size >= 1 << 14) throw new RangeError(`ioctl size ${size} does not fit 14 bits`);
  return ((dir << 30) | (size << 16) | (type << 8) | nr) >>> 0;
}
export const io = (nr: number): number => ioc(IOC_NONE, KVMIO, nr, 0);
export const ior = (nr: number, size: number): number => ioc(IOC_READ, KVMIO, nr, size);
export const iow = (nr: number, size: number): number => ioc(IOC_WRITE, KVMIO, nr, size);
export const iowr = (nr: number, size: number): number => ioc(IOC_READ | IOC_WRITE, KVMIO, nr, size);

// ---- struct layouts ---------------------------------------------------------------------------

export interface FieldLayout {
  offset: number;
  size: number;
}
export interface StructLayout {
  /** The C name, as in the headers. */
  name: string;
  size: number;
  fields: Readonly<Record<string, FieldLayout>>;
}

const f = (offset: number, size: number): FieldLayout => ({ offset, size });

/** struct kvm_clock_data (48 bytes). */
export const KVM_CLOCK_DATA: StructLayout = {
  name: "kvm_clock_data",
  size: 48,
  fields: { clock: f(0, 8), flags: f(8, 4), pad0: f(12, 4), realtime: f(16, 8), host_tsc: f(24, 8), pad: f(32, 16) },
};

/** struct kvm_userspace_memory_region (32 bytes). */
export const KVM_USERSPACE_MEMORY_REGION: StructLayout = {
  name: "kvm_userspace_memory_region",
  size: 32,
  fields: { slot: f(0, 4), flags: f(4, 4), guest_phys_addr: f(8, 8), memory_size: f(16, 8), userspace_addr: f(24, 8) },
};

/** struct kvm_regs (144 bytes): 16 GPRs, rip, rflags, each a u64 in this order. */
export const KVM_REGS_FIELDS = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags"] as const;
export const KVM_REGS: StructLayout = {
  name: "kvm_regs",
  size: 144,
  fields: Object.fromEntries(KVM_REGS_FIELDS.map((n, i) => [n, f(i * 8, 8)])),
};

/** struct kvm_segment (24 bytes). */
export const KVM_SEGMENT: StructLayout = {
  name: "kvm_segment",
  size: 24,
  fields: {
    base: f(0, 8), limit: f(8, 4), selector: f(12, 2), type: f(14, 1), present: f(15, 1), dpl: f(16, 1), db: f(17, 1),
    s: f(18, 1), l: f(19, 1), g: f(20, 1), avl: f(21, 1), unusable: f(22, 1), padding: f(23, 1),
  },
};

/** struct kvm_sregs (312 bytes). */
export const KVM_SREGS_SEGMENTS = ["cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"] as const;
export const KVM_SREGS: StructLayout = {
  name: "kvm_sregs",
  size: 312,
  fields: {
    ...Object.fromEntries(KVM_SREGS_SEGMENTS.map((n, i) => [n, f(i * 24, 24)])),
    gdt: f(192, 16), idt: f(208, 16), cr0: f(224, 8), cr2: f(232, 8), cr3: f(240, 8), cr4: f(248, 8), cr8: f(256, 8),
    efer: f(264, 8), apic_base: f(272, 8), interrupt_bitmap: f(280, 32),
  },
};

/** struct kvm_device_attr (24 bytes): flags, group, attr, addr (a user pointer to the value). */
export const KVM_DEVICE_ATTR: StructLayout = {
  name: "kvm_device_attr",
  size: 24,
  fields: { flags: f(0, 4), group: f(4, 4), attr: f(8, 8), addr: f(16, 8) },
};

/** struct kvm_interrupt (4 bytes). */
export const KVM_INTERRUPT_STRUCT: StructLayout = { name: "kvm_interrupt", size: 4, fields: { irq: f(0, 4) } };

/** struct kvm_msrs header (8 bytes) followed by nmsrs × struct kvm_msr_entry (16 bytes). */
export const KVM_MSRS: StructLayout = { name: "kvm_msrs", size: 8, fields: { nmsrs: f(0, 4), pad: f(4, 4) } };
export const KVM_MSR_ENTRY: StructLayout = { name: "kvm_msr_entry", size: 16, fields: { index: f(0, 4), reserved: f(4, 4), data: f(8, 8) } };

/** struct kvm_signal_mask header (4 bytes) followed by `len` bytes of kernel sigset. */
export const KVM_SIGNAL_MASK: StructLayout = { name: "kvm_signal_mask", size: 4, fields: { len: f(0, 4) } };

/** The fixed head of struct kvm_run (the mmap'ed vCPU page) and the KVM_EXIT_IO member of its union. */
export const KVM_RUN_STRUCT: StructLayout = {
  name: "kvm_run",
  size: 2352,
  fields: {
    request_interrupt_window: f(0, 1), immediate_exit: f(1, 1), exit_reason: f(8, 4), ready_for_interrupt_injection: f(12, 1),
    if_flag: f(13, 1), flags: f(14, 2), cr8: f(16, 8), apic_base: f(24, 8),
    "io.direction": f(32, 1), "io.size": f(33, 1), "io.port": f(34, 2), "io.count": f(36, 4), "io.data_offset": f(40, 8),
    "internal.suberror": f(32, 4),
  },
};

export const LAYOUTS: readonly StructLayout[] = [
  KVM_CLOCK_DATA, KVM_USERSPACE_MEMORY_REGION, KVM_REGS, KVM_SEGMENT, KVM_SREGS, KVM_DEVICE_ATTR,
  KVM_INTERRUPT_STRUCT, KVM_MSRS, KVM_MSR_ENTRY, KVM_SIGNAL_MASK, KVM_RUN_STRUCT,
];

// ---- ioctl requests ---------------------------------------------------------------------------

/** Each request with the header macro that defines it and the struct it carries (for the tests). */
export const IOCTLS = {
  KVM_GET_API_VERSION: io(0x00),
  KVM_CREATE_VM: io(0x01),
  KVM_CHECK_EXTENSION: io(0x03),
  KVM_GET_VCPU_MMAP_SIZE: io(0x04),
  KVM_CREATE_VCPU: io(0x41),
  KVM_SET_USER_MEMORY_REGION: iow(0x46, KVM_USERSPACE_MEMORY_REGION.size),
  KVM_SET_TSS_ADDR: io(0x47),
  KVM_SET_CLOCK: iow(0x7b, KVM_CLOCK_DATA.size),
  KVM_GET_CLOCK: ior(0x7c, KVM_CLOCK_DATA.size),
  KVM_RUN: io(0x80),
  KVM_GET_REGS: ior(0x81, KVM_REGS.size),
  KVM_SET_REGS: iow(0x82, KVM_REGS.size),
  KVM_GET_SREGS: ior(0x83, KVM_SREGS.size),
  KVM_SET_SREGS: iow(0x84, KVM_SREGS.size),
  KVM_INTERRUPT: iow(0x86, KVM_INTERRUPT_STRUCT.size),
  KVM_GET_MSRS: iowr(0x88, KVM_MSRS.size),
  KVM_SET_MSRS: iow(0x89, KVM_MSRS.size),
  KVM_SET_SIGNAL_MASK: iow(0x8b, KVM_SIGNAL_MASK.size),
  KVM_SET_TSC_KHZ: io(0xa2),
  KVM_GET_TSC_KHZ: io(0xa3),
  KVM_KVMCLOCK_CTRL: io(0xad),
  KVM_SET_DEVICE_ATTR: iow(0xe1, KVM_DEVICE_ATTR.size),
  KVM_GET_DEVICE_ATTR: iow(0xe2, KVM_DEVICE_ATTR.size),
  KVM_HAS_DEVICE_ATTR: iow(0xe3, KVM_DEVICE_ATTR.size),
} as const;
export type IoctlName = keyof typeof IOCTLS;

// ---- capabilities, flags, exit reasons ----------------------------------------------------------

export const KVM_API_VERSION = 12;

export const CAPS = {
  KVM_CAP_IRQCHIP: 0,
  KVM_CAP_USER_MEMORY: 3,
  KVM_CAP_SET_TSS_ADDR: 4,
  KVM_CAP_NR_VCPUS: 9,
  KVM_CAP_ADJUST_CLOCK: 39,
  KVM_CAP_TSC_CONTROL: 60,
  KVM_CAP_GET_TSC_KHZ: 61,
  KVM_CAP_MAX_VCPUS: 66,
  KVM_CAP_KVMCLOCK_CTRL: 76,
  KVM_CAP_VCPU_ATTRIBUTES: 127,
  KVM_CAP_IMMEDIATE_EXIT: 136,
  KVM_CAP_VM_TSC_CONTROL: 214,
} as const;
export type CapName = keyof typeof CAPS;

export const KVM_EXIT = {
  UNKNOWN: 0,
  EXCEPTION: 1,
  IO: 2,
  HYPERCALL: 3,
  DEBUG: 4,
  HLT: 5,
  MMIO: 6,
  IRQ_WINDOW_OPEN: 7,
  SHUTDOWN: 8,
  FAIL_ENTRY: 9,
  INTR: 10,
  INTERNAL_ERROR: 17,
} as const;

export function exitReasonName(reason: number): string {
  for (const [k, v] of Object.entries(KVM_EXIT)) if (v === reason) return k;
  return `exit ${reason}`;
}

/** KVM_{GET,SET,HAS}_DEVICE_ATTR on a vCPU: the TSC control group and its offset attribute. */
export const KVM_VCPU_TSC_CTRL = 0;
export const KVM_VCPU_TSC_OFFSET = 0;

/** kvmclock's system-time MSR (new numbering) and the guest TSC as an MSR. */
export const MSR_KVM_SYSTEM_TIME_NEW = 0x4b56_4d01;
export const MSR_IA32_TSC = 0x10;

/** The kernel's sigset for KVM_SET_SIGNAL_MASK on x86-64: 64 signals, 8 bytes. */
export const KERNEL_SIGSET_BYTES = 8;

// ---- encoders and decoders of the structs we pass ----------------------------------------------

function view(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

export interface ClockData {
  clock: bigint;
  flags: number;
  realtime: bigint;
  hostTsc: bigint;
}

export function encodeClockData(c: ClockData): Uint8Array {
  const b = new Uint8Array(KVM_CLOCK_DATA.size);
  const v = view(b);
  v.setBigUint64(0, c.clock, true);
  v.setUint32(8, c.flags, true);
  v.setBigUint64(16, c.realtime, true);
  v.setBigUint64(24, c.hostTsc, true);
  return b;
}

export function decodeClockData(b: Uint8Array): ClockData {
  const v = view(b);
  return { clock: v.getBigUint64(0, true), flags: v.getUint32(8, true), realtime: v.getBigUint64(16, true), hostTsc: v.getBigUint64(24, true) };
}

export function encodeMemoryRegion(r: { slot: number; flags: number; guestPhysAddr: bigint; memorySize: bigint; userspaceAddr: bigint }): Uint8Array {
  const b = new Uint8Array(KVM_USERSPACE_MEMORY_REGION.size);
  const v = view(b);
  v.setUint32(0, r.slot, true);
  v.setUint32(4, r.flags, true);
  v.setBigUint64(8, r.guestPhysAddr, true);
  v.setBigUint64(16, r.memorySize, true);
  v.setBigUint64(24, r.userspaceAddr, true);
  return b;
}

export type Regs = Record<(typeof KVM_REGS_FIELDS)[number], bigint>;

export function decodeRegs(b: Uint8Array): Regs {
  const v = view(b);
  return Object.fromEntries(KVM_REGS_FIELDS.map((n, i) => [n, v.getBigUint64(i * 8, true)])) as Regs;
}

export function encodeRegs(r: Regs): Uint8Array {
  const b = new Uint8Array(KVM_REGS.size);
  const v = view(b);
  KVM_REGS_FIELDS.forEach((n, i) => v.setBigUint64(i * 8, r[n], true));
  return b;
}

/** A real-mode segment for KVM_SET_SREGS: base = selector × 16, 64 KiB limit, data/code as given. */
export function setRealModeSegment(sregs: Uint8Array, seg: (typeof KVM_SREGS_SEGMENTS)[number], selector: number): void {
  const at = (KVM_SREGS.fields[seg] as FieldLayout).offset;
  const v = view(sregs);
  v.setBigUint64(at + 0, BigInt(selector) * 16n, true);
  v.setUint32(at + 8, 0xffff, true);
  v.setUint16(at + 12, selector, true);
}

export function encodeDeviceAttr(a: { group: number; attr: bigint; addr: bigint }): Uint8Array {
  const b = new Uint8Array(KVM_DEVICE_ATTR.size);
  const v = view(b);
  v.setUint32(4, a.group, true);
  v.setBigUint64(8, a.attr, true);
  v.setBigUint64(16, a.addr, true);
  return b;
}

export function encodeInterrupt(vector: number): Uint8Array {
  const b = new Uint8Array(KVM_INTERRUPT_STRUCT.size);
  view(b).setUint32(0, vector, true);
  return b;
}

/** struct kvm_msrs with its entries; KVM_GET_MSRS fills the data fields in place. */
export function encodeMsrs(entries: readonly { index: number; data: bigint }[]): Uint8Array {
  const b = new Uint8Array(KVM_MSRS.size + entries.length * KVM_MSR_ENTRY.size);
  const v = view(b);
  v.setUint32(0, entries.length, true);
  entries.forEach((e, i) => {
    const at = KVM_MSRS.size + i * KVM_MSR_ENTRY.size;
    v.setUint32(at, e.index, true);
    v.setBigUint64(at + 8, e.data, true);
  });
  return b;
}

export function decodeMsrs(b: Uint8Array): { index: number; data: bigint }[] {
  const v = view(b);
  const n = v.getUint32(0, true);
  const out: { index: number; data: bigint }[] = [];
  for (let i = 0; i < n; i++) {
    const at = KVM_MSRS.size + i * KVM_MSR_ENTRY.size;
    out.push({ index: v.getUint32(at, true), data: v.getBigUint64(at + 8, true) });
  }
  return out;
}

/** struct kvm_signal_mask: the signals blocked while the vCPU runs (a kernel sigset, bit n−1 = signal n). */
export function encodeSignalMask(blocked: bigint): Uint8Array {
  const b = new Uint8Array(KVM_SIGNAL_MASK.size + KERNEL_SIGSET_BYTES);
  const v = view(b);
  v.setUint32(0, KERNEL_SIGSET_BYTES, true);
  v.setBigUint64(4, blocked, true);
  return b;
}
