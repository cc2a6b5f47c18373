// The shape of one run's compacted timeline, as the chaos report embeds it (JSON) and its viewer
// (web/report) reads it. Imports nothing, so the browser bundle can share it.

export interface TimelineHost {
  name: string;
  tMs: number[];
  skewUs: number[];
  maxerrorUs: number[];
}

export interface TimelineVm {
  id: string;
  tMs: number[];
  errorUs: number[];
  /** Half the claimed interval while synchronized; null while the guest claims no bound. */
  halfUs: (number | null)[];
  /** Index into `hosts` of the daemon each sample came from. */
  host: number[];
}

export interface TimelineFault {
  site: string;
  fromMs: number;
  toMs: number;
  detail: string;
}

export interface TimelineMigration {
  id: string;
  vmId: string;
  source: string;
  destination: string;
  policy: string;
  estimator: string;
  outcome: string;
  startMs: number | null;
  pauseMs: number | null;
  resumeMs: number | null;
  errorUs: number | null;
  boundUs: number | null;
  hostFault: string | null;
}

export interface TimelineVerdict {
  invariant: string;
  tMs: number | null;
  vmId: string | null;
  daemon: string | null;
  message: string;
  hostFault: string | null;
}

export interface RunTimeline {
  run: number;
  seed: string;
  endMs: number;
  healMs: number | null;
  hosts: TimelineHost[];
  vms: TimelineVm[];
  faults: TimelineFault[];
  /** Point faults left out past the cap, by site. */
  faultsOmitted: Record<string, number>;
  migrations: TimelineMigration[];
  verdicts: TimelineVerdict[];
}
