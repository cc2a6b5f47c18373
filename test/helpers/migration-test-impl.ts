// A trivial tscmig.v1.MigrationService for transport tests: Ping answers, Prepare refuses with a
// typed error, Probe hangs until cancelled, Transfer reports the size it got, Resolve answers from a
// fixed table (plus two ids that make it throw or return an unencodable value); Handover counts the
// messages of each call (per-call state) and refuses any Commit with a typed error; Commit and Abort
// are left out so they answer UNIMPLEMENTED.

import type { MessageInitShape } from "@bufbuild/protobuf";
import { Decision, type HandoverResponseSchema, MigrationService } from "../../src/gen/tscmig/v1/migration_pb.js";
import { TscmigError } from "../../src/shared/errors.js";
import { definePartialService } from "../../src/shared/rpc/index.js";
import type { ServiceRegistration } from "../../src/shared/rpc/index.js";

export const GENERATION_BIG = (1n << 63n) + 5n;

/** What the test handlers saw, so tests can wait on events instead of time. */
export interface Observed {
  logs: Array<{ obj: Record<string, unknown>; msg: string }>;
  /** Settles when the first Probe call reaches its handler. */
  probeStarted: Promise<void>;
  /** Settles when the first Probe call is cancelled (deadline, client gone, forced shutdown). */
  probeCancelled: Promise<void>;
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve: () => void = () => {};
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

export function testImpl(): { registration: ServiceRegistration; observed: Observed } {
  const started = deferred();
  const cancelled = deferred();
  const observed: Observed = { logs: [], probeStarted: started.promise, probeCancelled: cancelled.promise };
  const registration = definePartialService(MigrationService, {
    ping: async () => ({}),
    prepare: async () => {
      throw new TscmigError("failed_precondition", "destination host cannot scale the TSC", {
        field: "guestTscKhz",
        reason: "tsc_scaling_missing",
      });
    },
    // Hangs until the call is cancelled (deadline passed), then records that it saw the cancel.
    probe: (_req, ctx) =>
      new Promise((_resolve, reject) => {
        started.resolve();
        ctx.signal.addEventListener("abort", () => {
          cancelled.resolve();
          reject(new TscmigError("aborted", "probe cancelled"));
        });
      }),
    transfer: async (req) => ({ destinationHoldNs: BigInt(req.snapshot?.vcpus?.pvclockRecords.length ?? 0) }),
    // Echoes back what it was asked about, from a fixed table of decisions.
    resolve: async (req) => {
      if (req.migrationId === "boom") throw new Error("secret internal detail");
      if (req.migrationId === "unencodable") return { decision: Decision.COMMITTED, generation: 1n << 64n };
      if (req.migrationId === "m-1" && req.vmId === "vm-1") return { decision: Decision.COMMITTED, generation: GENERATION_BIG };
      return { decision: Decision.UNKNOWN, generation: 0n };
    },
    // Per call: answers `open`, then each Transfer with how many messages this call has carried.
    handover: () => {
      let seen = 0;
      return async (req): Promise<MessageInitShape<typeof HandoverResponseSchema>> => {
        seen++;
        if (req.step.case === "open") return { step: { case: "opened", value: {} } };
        if (req.step.case === "transfer") return { step: { case: "transfer", value: { destinationHoldNs: BigInt(seen) } } };
        throw new TscmigError("failed_precondition", "no commit over this test stream", { field: "commit", reason: "test_refusal" });
      };
    },
    // commit and abort are left out: they must answer UNIMPLEMENTED.
  });
  return { registration, observed };
}

