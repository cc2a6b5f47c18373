// Bit-exact KVM guest-time arithmetic (x86-64): u64 wrap helpers, the time scale, TSC scaling and
// KVM_SET_TSC_KHZ, kvmclock (pvclock) records and their seqlock, KVM_SET_CLOCK, and vmclock.
export * from "./u64.js";
export * from "./time-scale.js";
export * from "./tsc.js";
export * from "./pvclock.js";
export * from "./set-clock.js";
export * from "./vmclock.js";
