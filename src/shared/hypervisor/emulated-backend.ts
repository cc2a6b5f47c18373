// The default hypervisor backend: emulated KVM VMs (vm.ts) on an emulated host (host.ts).

import type { HypervisorBackend, HostInfo, VmSpec, VmState } from "./backend.js";
import type { EmulatedHost } from "./host.js";
import { EmulatedVm } from "./vm.js";

export class EmulatedBackend implements HypervisorBackend {
  readonly name = "emulated";
  readonly host: EmulatedHost;

  constructor(host: EmulatedHost) {
    this.host = host;
  }

  get hostInfo(): HostInfo {
    return this.host.info;
  }

  createVm(spec: VmSpec): EmulatedVm {
    return new EmulatedVm(this.host, spec);
  }

  restoreVm(state: VmState): EmulatedVm {
    const vm = new EmulatedVm(this.host, { vcpus: state.vcpus });
    vm.importState(state);
    return vm;
  }
}
