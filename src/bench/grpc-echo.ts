// The bare grpc-js echo method the benchmark's baseline calls: raw bytes in, the same
// bytes out, no protobuf, served by grpc-echo-server.ts in its own process.

import type * as grpc from "@grpc/grpc-js";

export const ECHO_PATH = "/tscmig.bench.Echo/Echo";

const identity = (b: Buffer): Buffer => b;

export const ECHO_SERVICE: grpc.ServiceDefinition = {
  Echo: {
    path: ECHO_PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};
