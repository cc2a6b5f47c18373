// The C library calls the real-KVM backend needs (open, ioctl, mmap, signals, clock_gettime), bound
// through koffi. Part of the platform layer: like the clocks beside it, these touch the real
// machine, so nothing outside the KVM backend imports this module, and koffi is loaded on first use
// only (the emulated backend never pays for it, and a machine without the prebuilt binary still
// runs everything else).
//
// Why koffi and not a native addon: koffi ships prebuilt binaries inside its npm package, so
// `npm ci` needs no compiler (the Docker image carries no build tools) and the ioctls stay
// TypeScript next to the struct layouts they encode. What a native addon would add — threads
// of its own for KVM_RUN — we get from worker_threads, each calling KVM_RUN synchronously through
// its own koffi instance (see hypervisor/kvm/vcpu-thread.ts). A koffi call costs well under a
// microsecond, small beside a KVM_RUN round trip.

import { createRequire } from "node:module";
import type * as Koffi from "koffi";

export type Pointer = unknown;

export interface Libc {
  open(path: string, flags: number): number;
  close(fd: number): number;
  /** ioctl with an integer argument (or none). */
  ioctl(fd: number, request: number, arg: number): number;
  /** ioctl whose argument points at `buf` (read, written or both by the kernel). */
  ioctlBuf(fd: number, request: number, buf: Uint8Array): number;
  mmap(length: number, prot: number, flags: number, fd: number, offset: number): Pointer | null;
  munmap(ptr: Pointer, length: number): number;
  /** An ArrayBuffer over `length` bytes at `ptr`, no copy; valid only until munmap. */
  view(ptr: Pointer, length: number): ArrayBuffer;
  address(ptr: Pointer): bigint;
  /** errno of the last failed call on this thread. */
  errno(): number;
  getpid(): number;
  /** Sends `signal` to thread `tid` of this process. */
  tgkill(tid: number, signal: number): number;
  /** glibc's SIGRTMIN (the first real-time signal it leaves to applications). */
  sigrtmin(): number;
  /** clock_gettime(clockId) in ns. */
  clockNs(clockId: number): bigint;
}

export const O_RDWR = 2;
export const O_CLOEXEC = 0o2000000;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 1;
export const MAP_PRIVATE = 2;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
export const CLOCK_REALTIME = 0;
export const CLOCK_MONOTONIC = 1;
export const CLOCK_MONOTONIC_RAW = 4;

/** Linux errno names for the values KVM answers with. */
export const ERRNO_NAMES: Readonly<Record<number, string>> = {
  1: "EPERM",
  2: "ENOENT",
  4: "EINTR",
  5: "EIO",
  6: "ENXIO",
  9: "EBADF",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  16: "EBUSY",
  17: "EEXIST",
  19: "ENODEV",
  22: "EINVAL",
  24: "EMFILE",
  25: "ENOTTY",
  34: "ERANGE",
  95: "EOPNOTSUPP",
};

export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `errno ${errno}`;
}

let loaded: { libc: Libc; koffiPath: string } | null = null;
let loadError: Error | null = null;

/** The koffi module's resolved path, for worker threads that load their own instance. */
export function koffiPath(): string {
  return load().koffiPath;
}

/** The bound C library; throws (once per process, then the same error) where koffi cannot load. */
export function libc(): Libc {
  return load().libc;
}

function load(): { libc: Libc; koffiPath: string } {
  if (loaded !== null) return loaded;
  if (loadError !== null) throw loadError;
  try {
    const require = createRequire(import.meta.url);
    const path = require.resolve("koffi");
    const koffi = require(path) as typeof Koffi;
    loaded = { libc: bind(koffi), koffiPath: path };
    return loaded;
  } catch (e) {
    loadError = new Error(`cannot load the C library through koffi: ${e instanceof Error ? e.message : String(e)}`);
    throw loadError;
  }
}

function bind(koffi: typeof Koffi): Libc {
  const lib = koffi.load("libc.so.6");
  const open = lib.func("int open(const char *path, int flags)");
  const close = lib.func("int close(int fd)");
  const ioctlInt = lib.func("int ioctl(int fd, unsigned long request, unsigned long arg)");
  const ioctlPtr = lib.func("int ioctl(int fd, unsigned long request, void *arg)");
  const mmap = lib.func("void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)");
  const munmap = lib.func("int munmap(void *addr, size_t length)");
  const getpid = lib.func("int getpid()");
  const tgkill = lib.func("int tgkill(int tgid, int tid, int sig)");
  const sigrtmin = lib.func("int __libc_current_sigrtmin()");
  const clockGettime = lib.func("int clock_gettime(int clk, void *ts)");
  const ts = new BigInt64Array(2);
  const MAP_FAILED = (1n << 64n) - 1n;
  return {
    open: (path, flags) => open(path, flags) as number,
    close: (fd) => close(fd) as number,
    ioctl: (fd, request, arg) => ioctlInt(fd, request, arg) as number,
    ioctlBuf: (fd, request, buf) => ioctlPtr(fd, request, buf) as number,
    mmap: (length, prot, flags, fd, offset) => {
      const p: unknown = mmap(null, length, prot, flags, fd, offset);
      return p === null || koffi.address(p) === MAP_FAILED ? null : p;
    },
    munmap: (ptr, length) => munmap(ptr, length) as number,
    view: (ptr, length) => koffi.view(ptr, length),
    address: (ptr) => koffi.address(ptr),
    errno: () => koffi.errno(),
    getpid: () => getpid() as number,
    tgkill: (tid, signal) => tgkill(getpid(), tid, signal) as number,
    sigrtmin: () => sigrtmin() as number,
    clockNs: (clockId) => {
      if ((clockGettime(clockId, ts) as number) !== 0) throw new Error(`clock_gettime(${clockId}): ${errnoName(koffi.errno())}`);
      return (ts[0] as bigint) * 1_000_000_000n + (ts[1] as bigint);
    },
  };
}
