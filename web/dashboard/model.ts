// The stream's payloads as the page reads them (src/daemon/dashboard-feed.ts writes them): 64-bit
// values arrive as decimal strings and are turned into numbers only for plotting.

export interface HostEvent {
  name: string;
  grpc: string;
  trueNs: string;
  epochNs: string;
  realtimeNs: string;
  skewNs: string;
  maxerrorNs: string;
  skewModel: SkewModel;
  tscKhz: string;
  vendor: string;
  fracBits: number;
  tscScaling: boolean;
}

export interface SkewModel {
  kind: string;
  parts?: SkewModel[];
  [k: string]: unknown;
}

export interface SampleEvent {
  vmId: string;
  generation: string;
  trueNs: string;
  status: string;
  errorNs: string;
  earliestErrorNs: string;
  latestErrorNs: string;
  hostSkewNs: string;
}

export interface VmEvent {
  id: string;
  generation: string;
  role: string;
  running: boolean;
  vcpus: number;
  guestTscKhz: string;
  clocksource: string;
  ntp: { status: number; maxerrorUs: string; esterrorUs: string; synchronized: boolean };
  bounded: { status: string; errorNs?: string; earliestErrorNs?: string; latestErrorNs?: string };
  handledMigrations: string;
  stoppedVcpus: number;
  vcpusRead: number;
  vmclock: { disruptionMarker: string; clockStatus: number; seqCount: number };
  migrating: string | null;
}

export interface GuestEvent {
  vmId: string;
  trueNs: string;
  via: string;
  marker: string;
  mode: string;
}

export interface MigrationEvent {
  direction: "out" | "in";
  migrationId: string;
  vmId: string;
  source: string;
  destination?: string;
  sourceGrpc?: string;
  policy: string | null;
  estimator: string | null;
  outcome: string;
  error?: { code: string; message: string };
  phase?: string;
  pauseTrueNs?: string;
  resumeTrueNs?: string;
  transferReceivedTrueNs?: string;
  trueBlackoutNs?: string;
  estimatedBlackoutNs?: string;
  advancedNs?: string;
  errorBoundNs?: string;
  tscErrorNs?: string;
  capped?: boolean;
  doorbellRung?: boolean;
  disruptionMarker?: string;
  stoppedVcpus?: number;
  transferForwardNs?: string;
  phases?: Partial<Record<"captureNs" | "encodeNs" | "transferNs" | "decodeNs" | "restoreNs" | "commitNs", string>>;
}

export interface PeerInfo {
  name: string;
  grpc: string;
  http?: string;
  via: string;
}

export interface HostPoint {
  trueNs: string;
  skewNs: string;
  maxerrorNs: string;
}

export interface StateEvent {
  host: HostEvent;
  vms: VmEvent[];
  vmCount: number;
  samples: SampleEvent[];
  hostSeries: HostPoint[];
  guest: GuestEvent[];
  migrations: MigrationEvent[];
  peers: PeerInfo[];
}
