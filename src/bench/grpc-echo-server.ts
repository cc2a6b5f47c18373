// A bare grpc-js unary echo server, run as its own idle process by the benchmark (`node
// grpc-echo-server.js`): what one gRPC unary round trip costs with nothing of the daemons around it
// (no adapter, no protobuf, no journal, no HTTP API, no sampling) — the honest denominator of the
// blackout ratios. Prints {"port": N} on its first stdout line.

import * as grpc from "@grpc/grpc-js";
import { ECHO_SERVICE } from "./grpc-echo.js";

const server = new grpc.Server();
server.addService(ECHO_SERVICE, {
  Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, call.request),
});
server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    process.stderr.write(`grpc echo server: ${err.message}\n`);
    process.exit(1);
  }
  process.stdout.write(`${JSON.stringify({ port })}\n`);
});
const stop = () => server.tryShutdown(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
