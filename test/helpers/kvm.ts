// Whether the real-KVM tests can run here: /dev/kvm opens (and, for tests whose daemons open it
// themselves, this process is root). Each test file prints the reason once and skips when not.
import { KvmSystem } from "../../src/shared/hypervisor/kvm/device.js";

/** Why real-KVM tests cannot run here, or null when they can. */
export function kvmProblem(o: { root?: boolean } = {}): string | null {
  if (o.root && process.getuid?.() !== 0) return "not root (the kvm backend's daemons open /dev/kvm)";
  try {
    KvmSystem.open().close();
    return null;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}
