// Goal: the one-sided estimator's transit interval is exactly as wide as the legs it can measure
// allow, contains the truth whatever the legs and clock rates, and only narrows with extra legs.
// Method: true instants of the exchanges (Handover `opened` answer, Transfer and its answer, Commit)
// drawn by fast-check with stalls on any leg; each host measures its durations at its own rate
// (within ±500 ppm); the estimator's |estimate − truth| must stay ≤ its bound, and the commit and
// anchor legs must cut a stalled leg's cost to what the other legs leave open.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { oneSidedEstimate } from "../../src/shared/migration/blackout.js";

const US = 1_000n;
const MS = 1_000_000n;

interface Legs {
  /** True instants, ns: anchor answers out (destination) and in (source); Transfer out/in; answer out/in; Commit out/in. */
  anchors: { out: bigint; in: bigint }[];
  send: bigint;
  recv: bigint;
  answerOut: bigint;
  answerIn: bigint;
  commitOut: bigint;
  commitIn: bigint;
}

/** A host's clock at `ppm` from true time measures a true duration d as d·(1 + ppm·1e-6), truncated. */
const measure = (d: bigint, ppm: bigint) => d + (d * ppm) / 1_000_000n;

function estimate(l: Legs, srcPpm: bigint, dstPpm: bigint, parts: { commit: boolean; anchor: boolean }) {
  const s = (d: bigint) => measure(d, srcPpm);
  const d = (x: bigint) => measure(x, dstPpm);
  return oneSidedEstimate({
    sourcePauseToSendNs: 0n,
    transferRttNs: s(l.answerIn - l.send),
    destinationHoldNs: d(l.answerOut - l.recv),
    destinationReceiveToNowNs: d(l.commitIn - l.recv),
    ...(parts.commit ? { commit: { destinationAnswerToCommitNs: d(l.commitIn - l.answerOut), sourceAnswerToCommitNs: s(l.commitOut - l.answerIn) } } : {}),
    ...(parts.anchor ? { anchors: l.anchors.map((a) => ({ destinationAnswerToReceiveNs: d(l.recv - a.out), sourceAnswerToSendNs: s(l.send - a.in) })) } : {}),
  });
}

/** The truth the estimate stands for: snapshot read (= send here) → restore (= Commit arrival). */
const truth = (l: Legs) => l.commitIn - l.send;
const abs = (x: bigint) => (x < 0n ? -x : x);

/** Anchor exchanges one after another (answer back leg, then a gap to the next request's answer), then the Transfer. */
function legs(o: { anchorBacks: bigint[]; gap: bigint; fwd: bigint; hold: bigint; back: bigint; commitGap: bigint; commitFwd: bigint }): Legs {
  const anchors: { out: bigint; in: bigint }[] = [];
  let t = 0n;
  for (const b of o.anchorBacks) {
    anchors.push({ out: t, in: t + b });
    t += b + o.gap;
  }
  const send = t;
  const recv = send + o.fwd;
  const answerOut = recv + o.hold;
  const answerIn = answerOut + o.back;
  const commitOut = answerIn + o.commitGap;
  const commitIn = commitOut + o.commitFwd;
  return { anchors, send, recv, answerOut, answerIn, commitOut, commitIn };
}

const leg = fc.oneof(fc.bigInt({ min: 0n, max: 500n * US }), fc.bigInt({ min: 0n, max: 20n * MS })); // calm or stalled
const ppm = fc.bigInt({ min: -500n, max: 500n });
const shape = fc.record({ anchorBacks: fc.array(leg, { minLength: 0, maxLength: 4 }), gap: leg, fwd: leg, hold: leg, back: leg, commitGap: leg, commitFwd: leg });

describe("one-sided estimator", () => {
  it("contains the truth within its bound for any legs, stalls and clock rates, with or without the extra legs", () => {
    fc.assert(
      fc.property(shape, ppm, ppm, fc.boolean(), fc.boolean(), (o, sp, dp, commit, anchor) => {
        const l = legs(o);
        const e = estimate(l, sp, dp, { commit, anchor });
        expect(abs(e.estimatedNs - truth(l)) <= e.boundNs, `error ${e.estimatedNs - truth(l)} bound ${e.boundNs}`).toBe(true);
      }),
      { numRuns: 3000 },
    );
  });

  it("extra legs only narrow the bound", () => {
    fc.assert(
      fc.property(shape, (o) => {
        const l = legs(o);
        const plain = estimate(l, 0n, 0n, { commit: false, anchor: false }).boundNs;
        expect(estimate(l, 0n, 0n, { commit: true, anchor: false }).boundNs <= plain).toBe(true);
        expect(estimate(l, 0n, 0n, { commit: false, anchor: true }).boundNs <= plain).toBe(true);
        expect(estimate(l, 0n, 0n, { commit: true, anchor: true }).boundNs <= plain).toBe(true);
      }),
    );
  });

  it("a stalled forward leg is seen through the Commit; a stalled back leg through the anchor", () => {
    const calm = { anchorBacks: [100n * US], gap: 300n * US, fwd: 100n * US, hold: 200n * US, back: 100n * US, commitGap: 50n * US, commitFwd: 100n * US };
    const fwdStall = legs({ ...calm, fwd: 5n * MS });
    const plainF = estimate(fwdStall, 0n, 0n, { commit: false, anchor: false });
    expect(abs(plainF.estimatedNs - truth(fwdStall))).toBeGreaterThan(2n * MS); // half the stall
    const withCommit = estimate(fwdStall, 0n, 0n, { commit: true, anchor: false });
    expect(abs(withCommit.estimatedNs - truth(fwdStall))).toBeLessThanOrEqual(200n * US);
    expect(withCommit.boundNs).toBeLessThanOrEqual(200n * US);

    const backStall = legs({ ...calm, back: 5n * MS });
    expect(abs(estimate(backStall, 0n, 0n, { commit: true, anchor: false }).estimatedNs - truth(backStall))).toBeGreaterThan(2n * MS);
    const withAnchor = estimate(backStall, 0n, 0n, { commit: true, anchor: true });
    expect(abs(withAnchor.estimatedNs - truth(backStall))).toBeLessThanOrEqual(200n * US);
    expect(withAnchor.boundNs).toBeLessThanOrEqual(200n * US);
  });

  it("of several anchors, the one whose answer came back fastest sets the cap", () => {
    const calm = { gap: 300n * US, fwd: 100n * US, hold: 200n * US, back: 5n * MS, commitGap: 50n * US, commitFwd: 100n * US };
    const slowOnly = legs({ ...calm, anchorBacks: [3n * MS, 4n * MS] });
    expect(estimate(slowOnly, 0n, 0n, { commit: true, anchor: true }).boundNs).toBeGreaterThan(1n * MS);
    const l = legs({ ...calm, anchorBacks: [3n * MS, 80n * US, 4n * MS] });
    const e = estimate(l, 0n, 0n, { commit: true, anchor: true });
    // f ∈ [0, f + 80 µs]: about half of 180 µs, plus the drift slack of the durations used.
    expect(abs(e.estimatedNs - truth(l))).toBeLessThanOrEqual(150n * US);
    expect(e.boundNs).toBeLessThanOrEqual(150n * US);
  });

  it("ignores a commit or anchor leg the clocks cannot explain, instead of trusting it", () => {
    const base = { sourcePauseToSendNs: 0n, transferRttNs: 2n * MS, destinationHoldNs: 0n, destinationReceiveToNowNs: 0n };
    const plain = oneSidedEstimate(base);
    // The destination claims the Commit came 1 ms after its answer, the source that it sent it 2 ms after the answer arrived.
    expect(oneSidedEstimate({ ...base, commit: { destinationAnswerToCommitNs: 1n * MS, sourceAnswerToCommitNs: 2n * MS } })).toEqual(plain);
    expect(oneSidedEstimate({ ...base, anchors: [{ destinationAnswerToReceiveNs: 1n * MS, sourceAnswerToSendNs: 2n * MS }] })).toEqual(plain);
  });
});
