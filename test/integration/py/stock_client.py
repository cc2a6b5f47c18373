#!/usr/bin/env python3
"""A stock gRPC client (Python grpcio, not written by tscmig) calling a tscmig server.

Usage: stock_client.py STUBS_DIR HOST:PORT

STUBS_DIR holds stubs compiled with `python3 -m grpc_tools.protoc` from proto/tscmig/v1/migration.proto
(as tscmig/v1/) and from the health proto (as health/v1/, never grpc/, which would shadow grpcio).
Calls Ping, Resolve, Prepare (which the test server refuses) and the health Check, and prints one
JSON object on stdout. Exits non-zero only when it cannot run at all.
"""

import json
import sys

import grpc


def main() -> int:
    stubs_dir, target = sys.argv[1], sys.argv[2]
    sys.path.insert(0, stubs_dir)
    from health.v1 import health_pb2, health_pb2_grpc
    from tscmig.v1 import migration_pb2, migration_pb2_grpc

    out = {}
    # No proxy: the server is on loopback whatever the environment says.
    with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        migration = migration_pb2_grpc.MigrationServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)

        migration.Ping(migration_pb2.PingRequest(), timeout=10)
        out["ping"] = "ok"

        res = migration.Resolve(migration_pb2.ResolveRequest(migration_id="m-1", vm_id="vm-1"), timeout=10)
        out["resolve"] = {
            "decision": migration_pb2.Decision.Name(res.decision),
            # A uint64 beyond 2^53: as a string so JSON parsers keep every digit.
            "generation": str(res.generation),
        }

        try:
            migration.Prepare(migration_pb2.PrepareRequest(migration_id="m-1", guest_tsc_khz=2500000), timeout=10)
            out["prepare_error"] = None
        except grpc.RpcError as e:
            out["prepare_error"] = {
                "code": e.code().name,
                "status": e.code().value[0],
                "details": e.details(),
                "trailers": {k: v for k, v in (e.trailing_metadata() or ()) if k.startswith("tscmig-")},
            }

        out["health"] = {}
        for name in ("", "tscmig.v1.MigrationService"):
            check = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            out["health"][name] = health_pb2.HealthCheckResponse.ServingStatus.Name(check.status)

    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
