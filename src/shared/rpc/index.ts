// The gRPC transport of tscmig: protobuf-es services on grpc-js, with health and reflection.
export {
  asBuffer,
  decodeMessage,
  decodeMetadataValue,
  definePartialService,
  defineRawService,
  defineService,
  encodeMetadataValue,
  errorDetailsOfMetadata,
  errorMetadata,
  grpcPathOf,
  METADATA_KEYS,
  toBuffer,
  toGrpcImplementation,
  toGrpcServiceDefinition,
} from "./adapter.js";
export type { Decoded, ExchangeHandler, HandlerContext, RawServiceImpl, RpcLog, ServiceImpl, ServiceRegistration, UnaryHandler } from "./adapter.js";
export { createRpcServer, descriptorFilesOf } from "./server.js";
export type { RpcServer, RpcServerOptions, RpcServerTls } from "./server.js";
export { createRpcClient, tscmigErrorOfStatus } from "./client.js";
export type { ExchangeCall, RpcCallOptions, RpcClient, RpcClientOptions, RpcClientTls, RpcExchange, UnaryCall } from "./client.js";
