// A VM as a daemon hosts it: the emulated hypervisor VM, its guest, and its ownership.

import type { EmulatedVm, EmulatedVmState } from "../hypervisor/vm.js";
import type { Guest, GuestState } from "../guest/guest.js";
import type { VmRole } from "./journal.js";
import type { Timer } from "../time/clock.js";
import { invalid } from "../errors.js";
import { fromJson, toJson } from "../serde.js";

export interface HostedVm {
  id: string;
  vm: EmulatedVm;
  guest: Guest;
  /** Fencing generation: bumped by every migration; a daemon refuses traffic for older ones. */
  generation: bigint;
  role: VmRole;
  /** Id of the migration holding this VM, if any (one at a time). */
  lock: string | null;
  sampler: Timer | null;
}

/** Journal form of a VM: hypervisor state and guest state, 64-bit values as decimal strings. */
export interface PersistedVm {
  vm: EmulatedVmState;
  guest: GuestState;
}

export function persistVm(h: HostedVm): string {
  return toJson({ vm: h.vm.exportState(), guest: h.guest.exportState() } satisfies PersistedVm);
}

export function loadPersistedVm(text: string): PersistedVm {
  let o: PersistedVm;
  try {
    o = fromJson<PersistedVm>(text);
  } catch {
    throw invalid("journal.vm.state", "not valid JSON");
  }
  if (typeof o !== "object" || o === null || !o.vm || !o.guest) throw invalid("journal.vm.state", "missing vm or guest");
  return o;
}
