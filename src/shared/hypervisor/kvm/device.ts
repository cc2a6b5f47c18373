// /dev/kvm and the ioctl calls on its fds, with the kernel's errno turned into the project's typed
// errors. Every call that can fail names the ioctl and the errno, so an operator reading
// "KVM_SET_CLOCK: EINVAL" knows which step refused and why.

import { TscmigError, type ErrorCode, kvmError } from "../../errors.js";
import { errnoName, libc, type Libc, O_CLOEXEC, O_RDWR } from "../../platform/libc.js";
import { CAPS, type CapName, IOCTLS, type IoctlName, KVM_API_VERSION } from "./abi.js";

export const KVM_DEVICE_PATH = "/dev/kvm";

/** Why /dev/kvm could not be used: the first thing `tscmig kvm info` says. */
export type KvmOpenProblem = "absent" | "permission" | "no_ffi" | "api_version" | "other";

export class KvmUnavailable extends TscmigError {
  readonly problem: KvmOpenProblem;
  constructor(problem: KvmOpenProblem, message: string) {
    super(problem === "permission" ? "permission_denied" : "unavailable", message, { reason: `kvm_${problem}` });
    this.problem = problem;
  }
}

/** The error a failed KVM ioctl (or open, mmap) becomes. */
export function ioctlError(op: string, errno: number, detail = ""): TscmigError {
  const name = errnoName(errno);
  const message = detail.length > 0 ? detail : "the kernel refused";
  if (name === "EINVAL" || name === "ERANGE" || name === "ENXIO" || name === "EBUSY") return kvmError(name, op, message);
  const code: ErrorCode =
    name === "EACCES" || name === "EPERM" ? "permission_denied" : name === "ENOMEM" || name === "EMFILE" || name === "ENOSPC" ? "resource_exhausted" : name === "ENOENT" || name === "ENODEV" ? "unavailable" : "internal";
  return new TscmigError(code, `${op}: ${name}: ${message}`, { reason: `errno_${name}` });
}

/** Opens /dev/kvm and checks the API version; the fd is the system handle (KVM_CREATE_VM etc.). */
export class KvmSystem {
  readonly fd: number;
  readonly libc: Libc;
  private closed = false;

  private constructor(fd: number, c: Libc) {
    this.fd = fd;
    this.libc = c;
  }

  static open(path = KVM_DEVICE_PATH): KvmSystem {
    let c: Libc;
    try {
      c = libc();
    } catch (e) {
      throw new KvmUnavailable("no_ffi", e instanceof Error ? e.message : String(e));
    }
    const fd = c.open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      const errno = c.errno();
      const name = errnoName(errno);
      if (name === "ENOENT" || name === "ENODEV" || name === "ENXIO")
        throw new KvmUnavailable("absent", `${path} does not exist (${name}): this host has no KVM (load kvm_intel or kvm_amd, or run on a machine with virtualisation)`);
      if (name === "EACCES" || name === "EPERM")
        throw new KvmUnavailable("permission", `${path}: ${name}: permission denied (run as root, or add this user to the group owning ${path})`);
      throw new KvmUnavailable("other", `${path}: open failed: ${name}`);
    }
    const sys = new KvmSystem(fd, c);
    const version = c.ioctl(fd, IOCTLS.KVM_GET_API_VERSION, 0);
    if (version !== KVM_API_VERSION) {
      sys.close();
      throw new KvmUnavailable("api_version", `${path}: KVM_GET_API_VERSION returned ${version}, this backend speaks ${KVM_API_VERSION}`);
    }
    return sys;
  }

  /** KVM_CHECK_EXTENSION on /dev/kvm (or on a VM fd when given: some answers are per VM). */
  checkExtension(cap: CapName, fd = this.fd): number {
    const r = this.libc.ioctl(fd, IOCTLS.KVM_CHECK_EXTENSION, CAPS[cap]);
    return r < 0 ? 0 : r;
  }

  vcpuMmapBytes(): number {
    return this.call(this.fd, "KVM_GET_VCPU_MMAP_SIZE", 0);
  }

  /** An integer-argument ioctl; throws the typed error on failure. */
  call(fd: number, name: IoctlName, arg: number): number {
    const r = this.libc.ioctl(fd, IOCTLS[name], arg);
    if (r < 0) throw ioctlError(name, this.libc.errno());
    return r;
  }

  /** A pointer-argument ioctl on `buf`; throws the typed error on failure. */
  callBuf(fd: number, name: IoctlName, buf: Uint8Array): number {
    const r = this.libc.ioctlBuf(fd, IOCTLS[name], buf);
    if (r < 0) throw ioctlError(name, this.libc.errno());
    return r;
  }

  /** The same, answering the errno instead of throwing (for probes that expect refusals). */
  tryBuf(fd: number, name: IoctlName, buf: Uint8Array): { ok: true; value: number } | { ok: false; errno: string } {
    const r = this.libc.ioctlBuf(fd, IOCTLS[name], buf);
    return r < 0 ? { ok: false, errno: errnoName(this.libc.errno()) } : { ok: true, value: r };
  }

  closeFd(fd: number): void {
    this.libc.close(fd);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.libc.close(this.fd);
  }
}
