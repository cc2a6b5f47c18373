// Goal: the switchover mode and what on-receipt adds to the peer protocol travel through the one
// codec losslessly, and what does not belong is refused: the mode in Prepare (absent reads
// two-phase, as an older source sends it), the restore report in the Transfer's answer (unary and
// Handover), and a Resolve's fence (source and generation only with it).
// Method: domain values through REQUESTS/ANSWERS and the Handover step codecs, bytes and back; a
// Resolve hand-built on the generated schema with the fence's fields but no fence.
import { create, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ResolveRequestSchema } from "../../src/gen/tscmig/v1/migration_pb.js";
import type { PrepareReq, RestoreReport } from "../../src/shared/migration/messages.js";
import { ANSWERS, decodeHandoverAnswer, encodeHandoverAnswer, keyToPb, REQUESTS } from "../../src/shared/rpc/codec.js";
import { prepareReq } from "../helpers/prepare-req.js";

const KEY = "ab".repeat(16);
const PREPARE: PrepareReq = prepareReq({ migrationId: "m1", vmId: "vm1", generation: 2n, sourceGrpc: "a:1", sourceKey: KEY });
const REPORT: RestoreReport = {
  estimatedBlackoutNs: 5n,
  advancedNs: 5n,
  errorBoundNs: 3n,
  capped: false,
  doorbellRung: true,
  disruptionMarker: 1n,
  resumeTrueNs: 99n,
  decodeNs: 1n,
  restoreNs: 2n,
  tscAtResume: 1234n,
  kvmclockAtResumeNs: 77n,
  stoppedVcpus: 1,
  transferReceivedTrueNs: 90n,
};

describe("switchover on the wire", () => {
  it("carries the mode in Prepare; an absent one reads two-phase", () => {
    expect(REQUESTS.Prepare.decode(REQUESTS.Prepare.encode({ ...PREPARE, switchover: "on-receipt" }))).toEqual({ ...PREPARE, switchover: "on-receipt" });
    expect(REQUESTS.Prepare.decode(REQUESTS.Prepare.encode(PREPARE)).switchover ?? "two-phase").toBe("two-phase");
    expect(REQUESTS.Prepare.decode(REQUESTS.Prepare.encode({ ...PREPARE, switchover: "two-phase" })).switchover ?? "two-phase").toBe("two-phase");
  });

  it("carries the restore report in the Transfer's answer, unary and on Handover, and none under two-phase", () => {
    expect(ANSWERS.Transfer.decode(ANSWERS.Transfer.encode({ destinationHoldNs: 7n, report: REPORT }))).toEqual({ destinationHoldNs: 7n, report: REPORT });
    expect(ANSWERS.Transfer.decode(ANSWERS.Transfer.encode({ destinationHoldNs: 7n }))).toEqual({ destinationHoldNs: 7n });
    expect(decodeHandoverAnswer(encodeHandoverAnswer({ case: "transfer", value: { destinationHoldNs: 7n, report: REPORT } }))).toEqual({ case: "transfer", value: { destinationHoldNs: 7n, report: REPORT } });
  });

  it("carries a Resolve's fence, and refuses its fields without it", () => {
    const fenced = { migrationId: "m1", vmId: "vm1", sourceKey: KEY, fence: { sourceName: "a", generation: 2n } };
    expect(REQUESTS.Resolve.decode(REQUESTS.Resolve.encode(fenced))).toEqual(fenced);
    const plain = { migrationId: "m1", vmId: "vm1", sourceKey: KEY };
    expect(REQUESTS.Resolve.decode(REQUESTS.Resolve.encode(plain))).toEqual(plain);
    const stray = toBinary(ResolveRequestSchema, create(ResolveRequestSchema, { migrationId: "m1", vmId: "vm1", sourceKey: keyToPb(KEY), sourceName: "a", generation: 2n }));
    expect(() => REQUESTS.Resolve.decode(stray)).toThrow(/fence/);
  });
});
