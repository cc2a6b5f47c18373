// Goal: a merge sums the count maps of shard reports by their own keys, whatever the key: a report
// naming an outcome or fault site "constructor" or "toString" sums to a number, never to the text of
// an inherited function. Method: two hand-built folds through the report JSON codec and mergeFolds.

import { describe, expect, it } from "vitest";
import { emptyResult } from "../../src/chaos/campaign.js";
import { decodeFold, encodeFold, mergeFolds } from "../../src/chaos/shard.js";

const whole = { mode: "sim" as const, seed: 1n, runs: 2 };

function fold(shard: number) {
  const f = emptyResult(whole);
  f.totals.runs = 1;
  f.outcomes = { constructor: 1, toString: 2, committed: 3 };
  f.faultSites = { hasOwnProperty: 4 };
  return decodeFold(JSON.parse(JSON.stringify(encodeFold(f))), `shard-${shard}.json`);
}

describe("merging shard folds' count maps", () => {
  it("sums keys that name Object.prototype members as counts", () => {
    const m = mergeFolds([fold(0), fold(1)], whole);
    expect(m.outcomes).toEqual({ constructor: 2, toString: 4, committed: 6 });
    expect(m.faultSites).toEqual({ hasOwnProperty: 8 });
  });
});
