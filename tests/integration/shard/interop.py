"""interop.py: a Python gRPC client (Debian python3-grpcio, run with
/usr/bin/python3) against a running japlaid-shard.

Checks that the wire API works from another gRPC implementation, with
stubs generated from proto/ at run time: health, Stats, a Search whose
answer parses (Python's protobuf also checks that strings are UTF-8) and
is well-ordered, INVALID_ARGUMENT with a field-naming detail, and
UNIMPLEMENTED for an unknown method.

usage: interop.py HOST:PORT PROTO_DIR GRPC_PROTO_DIR
Exit 0 on success, 1 on a failed check (message on stderr).
"""
import importlib.util
import math
import os
import random
import shutil
import struct
import sys
import tempfile

import grpc
from grpc_tools import protoc


def fail(msg):
    print("interop: " + msg, file=sys.stderr)
    sys.exit(1)


def main():
    addr, proto_dir, grpc_proto_dir = sys.argv[1:4]
    out = tempfile.mkdtemp(prefix="japlaid-interop-")
    files = ["japlaid/v1/types.proto", "japlaid/v1/shard.proto", "grpc/health/v1/health.proto"]
    rc = protoc.main(["protoc", "-I" + proto_dir, "-I" + grpc_proto_dir, "--python_out=" + out]
                     + files)
    if rc != 0:
        fail("protoc failed (%d)" % rc)
    sys.path.insert(0, out)
    from japlaid.v1 import shard_pb2, types_pb2
    # The generated grpc/health/v1 package would clash with the installed
    # `grpc` package: load it from its file.
    spec = importlib.util.spec_from_file_location(
        "health_pb2", os.path.join(out, "grpc", "health", "v1", "health_pb2.py"))
    health_pb2 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(health_pb2)

    ch = grpc.insecure_channel(addr)

    def unary(method, req, resp_type):
        call = ch.unary_unary(method, request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=resp_type.FromString)
        return call(req, timeout=30)

    h = unary("/grpc.health.v1.Health/Check",
              health_pb2.HealthCheckRequest(service="japlaid.v1.Shard"),
              health_pb2.HealthCheckResponse)
    if h.status != health_pb2.HealthCheckResponse.SERVING:
        fail("health is %d, not SERVING" % h.status)

    st = unary("/japlaid.v1.Shard/Stats", shard_pb2.ShardStatsRequest(),
               shard_pb2.ShardStatsResponse).stats
    if st.dim <= 0 or len(st.codebook_hash) != 32 or st.n_documents <= 0:
        fail("implausible stats: %s" % st)

    rng = random.Random(7)
    nq = 8
    vals = []
    for _ in range(nq):
        row = [rng.gauss(0, 1) for _ in range(st.dim)]
        norm = math.sqrt(sum(v * v for v in row))
        vals.extend(v / norm for v in row)
    req = shard_pb2.ShardSearchRequest(
        n_queries=1, nq=nq, dim=st.dim, queries=struct.pack("<%df" % len(vals), *vals),
        params=types_pb2.SearchParams(k=5), model_identity=st.model_identity)
    res = unary("/japlaid.v1.Shard/Search", req, shard_pb2.ShardSearchResponse)
    hits = res.results[0].hits
    if len(hits) != 5:
        fail("expected 5 hits, got %d" % len(hits))
    for i, hit in enumerate(hits):
        if hit.rank != i + 1:
            fail("hit %d has rank %d" % (i, hit.rank))
        if i and hits[i - 1].score < hit.score:
            fail("scores not in descending order")
        if hit.passage_id >> 40 != st.partition_id or not hit.document_id:
            fail("bad hit %s" % hit)

    req.params.k = 0
    try:
        unary("/japlaid.v1.Shard/Search", req, shard_pb2.ShardSearchResponse)
        fail("k=0 was accepted")
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.INVALID_ARGUMENT or "params.k" not in e.details():
            fail("k=0 gave %s %r" % (e.code(), e.details()))

    try:
        unary("/japlaid.v1.Shard/Nope", shard_pb2.ShardStatsRequest(), shard_pb2.ShardStatsResponse)
        fail("unknown method answered")
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.UNIMPLEMENTED:
            fail("unknown method gave %s" % e.code())
    print("interop: ok (%d hits, partition %d)" % (len(hits), st.partition_id))


if __name__ == "__main__":
    try:
        main()
    finally:
        for d in [p for p in sys.path if "japlaid-interop-" in p]:
            shutil.rmtree(d, ignore_errors=True)
