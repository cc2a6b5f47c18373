// Goal: every boundary writes and reads a type through its one codec, losslessly, with 64-bit values
// in that boundary's one form; a field a type gains cannot travel without its codec naming it; bad
// input is a typed error naming the field. Method: fast-check values derived from each codec's own
// shape, round-tripped through JSON text in both forms; real records (a simulated run's history, as
// the control API serves it and as a history file holds it) compared value for value, so a 64-bit
// field read back as text (what a forgotten key list did) fails; the journal's report column read
// in the form it is written and in the decimal form older journals hold.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type BigintStyle, BOUNDARY, type Codec, encodeJson, fromJsonText, obj, type Shape, toJsonText, u64 } from "../../src/shared/codec.js";
import { chaosEventCodec, chaosMetaCodec, canonicalText, type ChaosHistory, historyLineOf } from "../../src/chaos/history.js";
import { guestSampleCodec, historyEventCodec, historyPageCodec, type HistoryEvent } from "../../src/shared/history.js";
import { migrationReportCodec, restoreReportCodec, restoreReportFromJournal, restoreReportToJournal, type RestoreReport, sourceNoteFromJournal, sourceNoteToJournal } from "../../src/shared/migration/report.js";
import { runSimulation } from "../../src/chaos/sim/run.js";
import { DEFAULT_SCENARIO } from "../../src/chaos/sim/scenario.js";
import { isTscmigError } from "../../src/shared/errors.js";
import { foldCodec } from "../../src/chaos/shard.js";

/** Doubles with every non-finite one; -0 is 0 in JSON. */
const double = () => fc.double().map((x) => (Object.is(x, -0) ? 0 : x));

const CUSTOM: Record<string, fc.Arbitrary<unknown>> = {
  offsetModel: fc.oneof(
    fc.bigInt({ min: -1_000_000_000n, max: 1_000_000_000n }).map((offsetNs) => ({ kind: "constant", offsetNs })),
    fc.record({ atNs: fc.bigInt({ min: 0n, max: 10n ** 12n }), stepNs: fc.bigInt({ min: -1_000_000_000n, max: 1_000_000_000n }) }).map((r) => ({ kind: "step", ...r })),
  ),
  scalar: fc.oneof(fc.string(), fc.integer(), fc.boolean()),
  value: fc.oneof(fc.string(), double(), fc.boolean()),
  statRow: fc.record({
    policy: fc.string(),
    estimator: fc.string(),
    capped: fc.boolean(),
    absErrorNs: double(),
    errorOverBound: double(),
    blackoutNs: double(),
    hostFault: fc.constantFrom(null, "lying-clock", "stepped-clock"),
  }),
  timelines: fc.array(fc.tuple(fc.nat(), fc.string()), { maxLength: 3 }).map((pairs) => new Map(pairs)),
};

/** Values of the type a codec describes, from its shape alone (a new field is generated too). */
function arbitraryOf(s: Shape): fc.Arbitrary<unknown> {
  switch (s.kind) {
    case "bigint":
      return fc.bigInt({ min: s.min, max: s.max });
    case "integer":
      return fc.bigInt({ min: BigInt(s.min), max: BigInt(s.max) }).map(Number);
    case "number":
      return double();
    case "string":
      return fc.string();
    case "boolean":
      return fc.boolean();
    case "enum":
      return fc.constantFrom(...s.values);
    case "array":
      return fc.array(arbitraryOf(s.item), { maxLength: 3 });
    case "optional":
      return arbitraryOf(s.inner);
    case "nullable":
      return fc.option(arbitraryOf(s.inner), { nil: null });
    case "object": {
      const keys = Object.keys(s.fields);
      const required = keys.filter((k) => (s.fields[k] as Shape).kind !== "optional");
      return fc.record(Object.fromEntries(keys.map((k) => [k, arbitraryOf(s.fields[k] as Shape)])), { requiredKeys: required });
    }
    case "union":
      return fc.oneof(...Object.values(s.variants).map(arbitraryOf));
    case "record":
      return fc.dictionary(fc.string({ minLength: 1 }), arbitraryOf(s.value), { maxKeys: 3 });
    case "custom":
      return CUSTOM[s.name] as fc.Arbitrary<unknown>;
  }
}

const STYLES: BigintStyle[] = ["decimal", "tagged"];
const CODECS: [string, Codec<unknown>][] = [
  ["RestoreReport", restoreReportCodec as Codec<unknown>],
  ["MigrationReport", migrationReportCodec as Codec<unknown>],
  ["GuestSample", guestSampleCodec as Codec<unknown>],
  ["HistoryEvent", historyEventCodec as Codec<unknown>],
  ["ChaosEvent", chaosEventCodec as Codec<unknown>],
  ["ChaosMeta", chaosMetaCodec as Codec<unknown>],
  ["a shard's fold (CampaignResult)", foldCodec as Codec<unknown>],
];

/** Every bigint as the boundary writes it, in the JSON text. */
function bigintsIn(j: unknown, out: unknown[] = []): unknown[] {
  if (Array.isArray(j)) for (const x of j) bigintsIn(x, out);
  else if (j !== null && typeof j === "object") {
    const o = j as Record<string, unknown>;
    if (typeof o.$b === "string") out.push(o);
    else for (const x of Object.values(o)) bigintsIn(x, out);
  }
  return out;
}

describe("codecs round-trip every value of their type", () => {
  for (const [name, codec] of CODECS)
    for (const style of STYLES)
      it(`${name}, 64-bit values ${style}`, () => {
        fc.assert(
          fc.property(arbitraryOf(codec.shape), (v) => {
            const text = toJsonText(codec, v, style);
            expect(fromJsonText(codec, text, style, name)).toEqual(v);
            // One form per boundary: decimal text carries no tags.
            if (style === "decimal") expect(bigintsIn(JSON.parse(text))).toEqual([]);
          }),
          { numRuns: 150 },
        );
      });
});

describe("real records cross each boundary unchanged", () => {
  const run = runSimulation(2n, { ...DEFAULT_SCENARIO }); // a run with every kind of event but `error`
  const kinds = new Set(Object.keys((historyEventCodec.shape as Extract<Shape, { kind: "union" }>).variants));

  it("the control API: GET /v1/history's samples and a node's events, decoded by the harness, are the values the node recorded", async () => {
    const h = (await run).history;
    const events = h.events.filter((e): e is HistoryEvent => kinds.has(e.kind));
    expect(new Set(events.map((e) => e.kind))).toEqual(new Set(["run", "stop", "handled", "migration", "fault"]));
    const page = { samples: h.samples, events };
    const wire = JSON.parse(JSON.stringify(encodeJson(historyPageCodec, page, BOUNDARY.api)));
    // Every 64-bit field, at any depth, comes back a bigint: compared value for value, not as text.
    expect(historyPageCodec.decode(wire, BOUNDARY.api, "history")).toEqual(page);
  });

  it("a history file: every line read back is the value written (canonical text alone cannot tell a bigint from its digits)", async () => {
    const h = (await run).history;
    const back: ChaosHistory = { meta: undefined as unknown as ChaosHistory["meta"], samples: [], events: [] };
    canonicalText(h)
      .split("\n")
      .forEach((line, i) => line !== "" && historyLineOf(line, back, `line ${i + 1}`));
    expect(new Set(h.events.map((e) => e.kind)).size, "every kind of event but error").toBe(Object.keys((chaosEventCodec.shape as Extract<Shape, { kind: "union" }>).variants).length - 1);
    expect(back).toEqual(h);
    const final = back.events.find((e) => e.kind === "final");
    expect(typeof (final as { owners: { generation: unknown }[] } | undefined)?.owners[0]?.generation, "text that is all digits stays text").toBe("string");
  });
});

describe("the journal's report column", () => {
  const report: RestoreReport = {
    estimatedBlackoutNs: 20_292_000n,
    advancedNs: 20_292_000n,
    errorBoundNs: 231_067n,
    capped: false,
    doorbellRung: true,
    disruptionMarker: 2n,
    resumeTrueNs: 9_007_199_254_740_993n, // not a double
    decodeNs: 1n,
    restoreNs: 2n,
    tscAtResume: 2n ** 64n - 1n,
    kvmclockAtResumeNs: 5n,
    stoppedVcpus: 4,
    transferReceivedTrueNs: 3n,
  };

  it("is written tagged, as the VM state beside it, and read back exactly", () => {
    const text = restoreReportToJournal(report);
    expect(text).toContain('"tscAtResume":{"$b":"18446744073709551615"}');
    expect(restoreReportFromJournal(text)).toEqual(report);
    expect(sourceNoteFromJournal(sourceNoteToJournal({ transferRttNs: 123n }))).toEqual({ transferRttNs: 123n });
  });

  it("still reads what older daemons journaled (decimal strings)", () => {
    const legacy = JSON.stringify(report, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
    expect(restoreReportFromJournal(legacy)).toEqual(report);
    expect(sourceNoteFromJournal('{"transferRttNs":"77"}')).toEqual({ transferRttNs: 77n });
    expect(sourceNoteFromJournal(undefined)).toEqual({ transferRttNs: 0n });
  });

  it("refuses a damaged report with a typed error naming the field", () => {
    const bad = [
      ["not json", /journal\.report: expected JSON text/],
      ['{"estimatedBlackoutNs":1}', /journal\.report\.estimatedBlackoutNs: expected a signed 64-bit integer/],
      [restoreReportToJournal(report).replace('"stoppedVcpus":4', '"stoppedVcpus":-1'), /journal\.report\.stoppedVcpus: expected an integer/],
      [restoreReportToJournal(report).replace('"18446744073709551615"', '"18446744073709551616"'), /journal\.report\.tscAtResume: expected an unsigned 64-bit/],
    ] as const;
    for (const [text, want] of bad) {
      let err: unknown;
      try {
        restoreReportFromJournal(text);
      } catch (e) {
        err = e;
      }
      expect(isTscmigError(err) && err.code === "invalid_argument", text).toBe(true);
      expect(String((err as Error).message), text).toMatch(want);
    }
  });
});

describe("a field cannot travel without its codec", () => {
  it("an object codec names every field of its type (a missing or unknown one does not compile)", () => {
    interface Two {
      a: bigint;
      b: bigint;
    }
    // @ts-expect-error b is missing: a new 64-bit field is a compile error until its codec says how it travels
    const missing = obj<Two>({ a: u64 });
    // @ts-expect-error c is not a field of Two
    const extra = obj<Two>({ a: u64, b: u64, c: u64 });
    expect([missing, extra].length).toBe(2);
    const two = obj<Two>({ a: u64, b: u64 });
    expect(two.decode({ a: "1", b: "2" }, "decimal", "two")).toEqual({ a: 1n, b: 2n });
    expect(() => two.decode({ a: "1" }, "decimal", "two")).toThrow(/two\.b: expected an unsigned 64-bit integer/);
  });
});
