// Goal: the one-sided estimator's transit interval is exactly as wide as the legs it can measure
// allow, contains the truth whatever the legs and clock rates, and only narrows with extra legs.
// Method: true instants of the exchanges (Handover `open`/probe requests and their answers, Transfer
// and its answer, Commit) drawn by fast-check with stalls on any leg; each host measures its
// durations at its own rate (within ±500 ppm); the estimator's |estimate − truth| must stay ≤ its
// bound, and the commit, anchor and request legs must cut a stalled leg's cost to what the other
// legs leave open.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { oneSidedEstimate } from "../../src/shared/migration/blackout.js";

const US = 1_000n;
const MS = 1_000_000n;

interface Legs {
  /** True instants, ns: earlier exchanges (request out at the source, in at the destination, answer out, answer in); Transfer out/in; answer out/in; Commit out/in. */
  anchors: { reqOut: bigint; reqIn: bigint; out: bigint; in: bigint }[];
  send: bigint;
  recv: bigint;
  answerOut: bigint;
  answerIn: bigint;
  commitOut: bigint;
  commitIn: bigint;
}

/** A host's clock at `ppm` from true time measures a true duration d as d·(1 + ppm·1e-6), truncated. */
const measure = (d: bigint, ppm: bigint) => d + (d * ppm) / 1_000_000n;

function estimate(l: Legs, srcPpm: bigint, dstPpm: bigint, parts: { commit: boolean; anchor: boolean; request?: boolean }) {
  const s = (d: bigint) => measure(d, srcPpm);
  const d = (x: bigint) => measure(x, dstPpm);
  return oneSidedEstimate({
    sourceCaptureToSendNs: 0n,
    transferRttNs: s(l.answerIn - l.send),
    destinationHoldNs: d(l.answerOut - l.recv),
    destinationReceiveToNowNs: d(l.commitIn - l.recv),
    ...(parts.commit ? { commit: { destinationAnswerToCommitNs: d(l.commitIn - l.answerOut), sourceAnswerToCommitNs: s(l.commitOut - l.answerIn) } } : {}),
    ...(parts.anchor ? { anchors: l.anchors.map((a) => ({ destinationAnswerToReceiveNs: d(l.recv - a.out), sourceAnswerToSendNs: s(l.send - a.in) })) } : {}),
    ...(parts.request ? { requests: l.anchors.map((a) => ({ destinationRequestToReceiveNs: d(l.recv - a.reqIn), sourceRequestToSendNs: s(l.send - a.reqOut) })) } : {}),
  });
}

/** The truth the estimate stands for: snapshot read (= send here) → restore (= Commit arrival). */
const truth = (l: Legs) => l.commitIn - l.send;
const abs = (x: bigint) => (x < 0n ? -x : x);

/**
 * Earlier exchanges one after another (request forward leg, hold, answer back leg, then a gap to the
 * next request), then the Transfer. A missing request leg is 0.
 */
function legs(o: { anchorBacks: bigint[]; anchorFwds?: bigint[]; gap: bigint; fwd: bigint; hold: bigint; back: bigint; commitGap: bigint; commitFwd: bigint }): Legs {
  const anchors: Legs["anchors"] = [];
  let t = 0n;
  o.anchorBacks.forEach((b, i) => {
    const reqIn = t + (o.anchorFwds?.[i] ?? 0n);
    const out = reqIn + o.hold;
    anchors.push({ reqOut: t, reqIn, out, in: out + b });
    t = out + b + o.gap;
  });
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
const shape = fc
  .record({ anchorBacks: fc.array(leg, { minLength: 0, maxLength: 4 }), anchorFwds: fc.array(leg, { minLength: 4, maxLength: 4 }), gap: leg, fwd: leg, hold: leg, back: leg, commitGap: leg, commitFwd: leg })
  .map((o) => ({ ...o, anchorFwds: o.anchorFwds.slice(0, o.anchorBacks.length) }));

describe("one-sided estimator", () => {
  it("contains the truth within its bound for any legs, stalls and clock rates, with or without the extra legs", () => {
    fc.assert(
      fc.property(shape, ppm, ppm, fc.boolean(), fc.boolean(), fc.boolean(), (o, sp, dp, commit, anchor, request) => {
        const l = legs(o);
        const e = estimate(l, sp, dp, { commit, anchor, request });
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
        const all = estimate(l, 0n, 0n, { commit: true, anchor: true, request: true }).boundNs;
        expect(all <= estimate(l, 0n, 0n, { commit: true, anchor: true }).boundNs).toBe(true);
        expect(estimate(l, 0n, 0n, { commit: false, anchor: false, request: true }).boundNs <= plain).toBe(true);
      }),
    );
  });

  it("with requests and answers both ways, the error is half the difference of the quickest leg each way, however the Transfer and Commit stalled", () => {
    // The Transfer's own legs and the Commit stall by 3–4 ms (a destination that went idle); the
    // probes are quick: 60–90 µs forward, 50–80 µs back.
    const l = legs({ anchorBacks: [80n * US, 50n * US, 70n * US], anchorFwds: [90n * US, 60n * US, 75n * US], gap: 20n * US, fwd: 3n * MS, hold: 200n * US, back: 4n * MS, commitGap: 50n * US, commitFwd: 3n * MS });
    const without = estimate(l, 0n, 0n, { commit: true, anchor: true });
    expect(abs(without.estimatedNs - truth(l))).toBeGreaterThan(1n * MS); // only the answers bound it: f ∈ [0, f + 50 µs]
    const e = estimate(l, 0n, 0n, { commit: true, anchor: true, request: true });
    // f ∈ [f − 60 µs, f + 50 µs]: error 5 µs, bound 55 µs, each limit widened by 500 ppm of the
    // milliseconds it spans (≈ 6 µs here).
    expect(abs(e.estimatedNs - truth(l))).toBeLessThanOrEqual(10n * US);
    expect(e.boundNs).toBeLessThanOrEqual(65n * US);
    expect(e.boundNs).toBeGreaterThanOrEqual(55n * US);
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
    const base = { sourceCaptureToSendNs: 0n, transferRttNs: 2n * MS, destinationHoldNs: 0n, destinationReceiveToNowNs: 0n };
    const plain = oneSidedEstimate(base);
    // The destination claims the Commit came 1 ms after its answer, the source that it sent it 2 ms after the answer arrived.
    expect(oneSidedEstimate({ ...base, commit: { destinationAnswerToCommitNs: 1n * MS, sourceAnswerToCommitNs: 2n * MS } })).toEqual(plain);
    expect(oneSidedEstimate({ ...base, anchors: [{ destinationAnswerToReceiveNs: 1n * MS, sourceAnswerToSendNs: 2n * MS }] })).toEqual(plain);
    // The destination says the Transfer came 5 ms after the request, the source that it sent it 1 ms after: f ≥ 4 ms > R.
    expect(oneSidedEstimate({ ...base, requests: [{ destinationRequestToReceiveNs: 5n * MS, sourceRequestToSendNs: 1n * MS }] })).toEqual(plain);
  });

  it("limits that contradict each other fall back to the round trip alone", () => {
    const base = { sourceCaptureToSendNs: 0n, transferRttNs: 2n * MS, destinationHoldNs: 0n, destinationReceiveToNowNs: 0n };
    const plain = oneSidedEstimate(base);
    // Each alone fits in [0, 2 ms]; together f ≥ 1.5 ms and f ≤ 0.5 ms: a clock broke its allowance.
    const both = oneSidedEstimate({
      ...base,
      requests: [{ destinationRequestToReceiveNs: 2n * MS, sourceRequestToSendNs: 500n * US }],
      anchors: [{ destinationAnswerToReceiveNs: 1n * MS, sourceAnswerToSendNs: 500n * US }],
    });
    expect(both).toEqual(plain);
  });
});
