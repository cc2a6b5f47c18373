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
  /** True instants, ns: anchor answer out (destination) and in (source); Transfer out/in; answer out/in; Commit out/in. */
  anchorOut: bigint;
  anchorIn: bigint;
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
    ...(parts.anchor ? { anchor: { destinationAnswerToReceiveNs: d(l.recv - l.anchorOut), sourceAnswerToSendNs: s(l.send - l.anchorIn) } } : {}),
  });
}

/** The truth the estimate stands for: snapshot read (= send here) → restore (= Commit arrival). */
const truth = (l: Legs) => l.commitIn - l.send;
const abs = (x: bigint) => (x < 0n ? -x : x);

function legs(o: { anchorBack: bigint; gap: bigint; fwd: bigint; hold: bigint; back: bigint; commitGap: bigint; commitFwd: bigint }): Legs {
  const anchorOut = 0n;
  const anchorIn = anchorOut + o.anchorBack;
  const send = anchorIn + o.gap;
  const recv = send + o.fwd;
  const answerOut = recv + o.hold;
  const answerIn = answerOut + o.back;
  const commitOut = answerIn + o.commitGap;
  const commitIn = commitOut + o.commitFwd;
  return { anchorOut, anchorIn, send, recv, answerOut, answerIn, commitOut, commitIn };
}

const leg = fc.oneof(fc.bigInt({ min: 0n, max: 500n * US }), fc.bigInt({ min: 0n, max: 20n * MS })); // calm or stalled
const ppm = fc.bigInt({ min: -500n, max: 500n });
const shape = fc.record({ anchorBack: leg, gap: leg, fwd: leg, hold: leg, back: leg, commitGap: leg, commitFwd: leg });

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
    const calm = { anchorBack: 100n * US, gap: 300n * US, fwd: 100n * US, hold: 200n * US, back: 100n * US, commitGap: 50n * US, commitFwd: 100n * US };
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

  it("ignores a commit or anchor leg the clocks cannot explain, instead of trusting it", () => {
    const base = { sourcePauseToSendNs: 0n, transferRttNs: 2n * MS, destinationHoldNs: 0n, destinationReceiveToNowNs: 0n };
    const plain = oneSidedEstimate(base);
    // The destination claims the Commit came 1 ms after its answer, the source that it sent it 2 ms after the answer arrived.
    expect(oneSidedEstimate({ ...base, commit: { destinationAnswerToCommitNs: 1n * MS, sourceAnswerToCommitNs: 2n * MS } })).toEqual(plain);
    expect(oneSidedEstimate({ ...base, anchor: { destinationAnswerToReceiveNs: 1n * MS, sourceAnswerToSendNs: 2n * MS } })).toEqual(plain);
  });
});
