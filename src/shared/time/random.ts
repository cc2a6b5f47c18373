// Seeded pseudo-randomness (xoshiro128**, seeded by splitmix32). One seed drives a whole run; a
// `fork(label)` derives an independent stream from the parent's seed and the label only, so adding
// a consumer never shifts the numbers another consumer draws (replay stays stable across changes).

export interface Random {
  /** Uniform integer in [0, 2^32). */
  u32(): number;
  /** Uniform float in [0, 1). */
  float(): number;
  /** Uniform integer in [lo, hi] (inclusive); requires lo <= hi and a span below 2^53. */
  int(lo: number, hi: number): number;
  /** Uniform bigint in [lo, hi] (inclusive). */
  bigint(lo: bigint, hi: bigint): bigint;
  /** True with probability p. */
  chance(p: number): boolean;
  pick<T>(items: readonly T[]): T;
  /** An independent stream determined by this stream's seed and `label`. */
  fork(label: string): Random;
  readonly seed: bigint;
}


/** Log-uniform bigint in [lo, hi] (lo ≤ 0 counts as 1): as many draws per decade, clamped to the range. */
export function logUniform(r: Random, lo: bigint, hi: bigint): bigint {
  if (hi <= lo) return lo;
  const a = Math.log(Number(lo > 0n ? lo : 1n));
  const b = Math.log(Number(hi));
  const v = BigInt(Math.round(Math.exp(a + (b - a) * r.float())));
  return v < lo ? lo : v > hi ? hi : v;
}

function splitmix32(state: { s: number }): number {
  state.s = (state.s + 0x9e3779b9) | 0;
  let z = state.s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/** FNV-1a over the label's UTF-16 code units, mixed with a 64-bit seed: a stable 64-bit child seed. */
export function deriveSeed(seed: bigint, label: string): bigint {
  let h = 0xcbf29ce484222325n ^ (seed & 0xffff_ffff_ffff_ffffn);
  for (let i = 0; i < label.length; i++) {
    h ^= BigInt(label.charCodeAt(i));
    h = (h * 0x100000001b3n) & 0xffff_ffff_ffff_ffffn;
  }
  return h;
}

export class SeededRandom implements Random {
  readonly seed: bigint;
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: bigint | number) {
    this.seed = BigInt.asUintN(64, BigInt(seed));
    const st = { s: Number(this.seed & 0xffff_ffffn) ^ Number((this.seed >> 32n) & 0xffff_ffffn) };
    st.s = (st.s ^ Number((this.seed >> 16n) & 0xffffn)) | 0;
    this.a = splitmix32(st);
    this.b = splitmix32(st);
    this.c = splitmix32(st);
    this.d = splitmix32(st);
    if ((this.a | this.b | this.c | this.d) === 0) this.a = 1;
  }

  u32(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result;
  }

  float(): number {
    // 53 random bits.
    const hi = this.u32() >>> 5;
    const lo = this.u32() >>> 6;
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  int(lo: number, hi: number): number {
    if (!(Number.isInteger(lo) && Number.isInteger(hi) && lo <= hi)) throw new RangeError(`int(${lo}, ${hi})`);
    return lo + Math.floor(this.float() * (hi - lo + 1));
  }

  bigint(lo: bigint, hi: bigint): bigint {
    if (lo > hi) throw new RangeError(`bigint(${lo}, ${hi})`);
    const span = hi - lo + 1n;
    const bits = span.toString(2).length + 64;
    let r = 0n;
    for (let got = 0; got < bits; got += 32) r = (r << 32n) | BigInt(this.u32());
    return lo + (r % span);
  }

  chance(p: number): boolean {
    return p > 0 && this.float() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError("pick from an empty list");
    return items[this.int(0, items.length - 1)] as T;
  }

  fork(label: string): Random {
    return new SeededRandom(deriveSeed(this.seed, label));
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) | 0;
}

/** Stateless hash of (seed, index) to a float in [0, 1): jitter that is a pure function of time. */
export function hashUnit(seed: bigint, index: bigint): number {
  let h = BigInt.asUintN(64, seed ^ (index * 0x9e3779b97f4a7c15n));
  h = BigInt.asUintN(64, (h ^ (h >> 30n)) * 0xbf58476d1ce4e5b9n);
  h = BigInt.asUintN(64, (h ^ (h >> 27n)) * 0x94d049bb133111ebn);
  h ^= h >> 31n;
  return Number(h >> 11n) / 9007199254740992;
}
