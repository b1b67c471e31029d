"""A real grpcio (gRPC C-core) client on the agent's API socket, for agent/tests/it/grpcio.rs.

    grpcio_client.py SOCKET PROTO_ROOT

Generates the agent's stubs from PROTO_ROOT/attestmesh/agent/v1/agent.proto with grpcio-tools,
dials unix://SOCKET twice (with the authority grpcio chooses for a unix target, and with the raw
socket path as grpc-java sends it), and prints one JSON object with what every call returned:
{"calls": {name: {"ok": ...} | {"error": CODE, "details": ...}}}. The Rust test asserts on it.
It exits non-zero only when it cannot run at all (a missing package, stubs that do not build).
"""

import importlib
import json
import sys
import tempfile

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_tools import protoc

# grpcio-reflection ships only the v1alpha messages; v1 is the same wire format under another
# service name, and the agent serves v1.
from grpc_reflection.v1alpha import reflection_pb2

REFLECTION_V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
TIMEOUT = 20


def stubs(proto_root):
    out = tempfile.mkdtemp(prefix="attestmesh-grpcio-")
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            "attestmesh/agent/v1/agent.proto",
        ]
    )
    if code != 0:
        sys.exit(f"grpc_tools.protoc failed on {proto_root}/attestmesh/agent/v1/agent.proto")
    sys.path.insert(0, out)
    return (
        importlib.import_module("attestmesh.agent.v1.agent_pb2"),
        importlib.import_module("attestmesh.agent.v1.agent_pb2_grpc"),
    )


def call(results, name, fn):
    try:
        results[name] = {"ok": fn()}
    except grpc.RpcError as error:
        results[name] = {"error": error.code().name, "details": error.details()}


def reflection(channel, request):
    info = channel.stream_stream(
        REFLECTION_V1,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    (response,) = list(info(iter([request]), timeout=TIMEOUT))
    return response


def list_services(channel):
    response = reflection(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
    return sorted(s.name for s in response.list_services_response.service)


def symbol(channel, name):
    response = reflection(
        channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=name)
    )
    if response.HasField("error_response"):
        return {"error_code": response.error_response.error_code}
    return {"files": len(response.file_descriptor_response.file_descriptor_proto)}


def main():
    socket, proto_root = sys.argv[1], sys.argv[2]
    pb, pb_grpc = stubs(proto_root)
    results = {}
    channels = {
        # grpcio picks the authority for a unix target itself (the socket path, escaped).
        "default": grpc.insecure_channel(f"unix://{socket}"),
        # grpc-java and older C-core send the path as it is.
        "raw_path": grpc.insecure_channel(
            f"unix://{socket}", options=[("grpc.default_authority", socket)]
        ),
    }
    for label, channel in channels.items():
        with channel:
            agent = pb_grpc.AgentStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            # Several calls on one connection: later requests refer to HPACK entries the
            # first ones added.
            for i in range(3):
                call(
                    results,
                    f"{label}.GetMeshStatus.{i}",
                    lambda: agent.GetMeshStatus(pb.GetMeshStatusRequest(), timeout=TIMEOUT).phase,
                )
            call(
                results,
                f"{label}.GetSelf",
                lambda: agent.GetSelf(pb.GetSelfRequest(), timeout=TIMEOUT).member_id,
            )
            for service in ["", "attestmesh.agent.v1.Agent"]:
                call(
                    results,
                    f"{label}.Health.Check({service})",
                    lambda: health_pb2.HealthCheckResponse.ServingStatus.Name(
                        health.Check(
                            health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT
                        ).status
                    ),
                )
            call(results, f"{label}.reflection.list", lambda: list_services(channel))
            for name in ["attestmesh.agent.v1.Agent", "attestmesh.indexer.v1.Indexer"]:
                call(results, f"{label}.reflection.symbol({name})", lambda: symbol(channel, name))
    print(json.dumps({"grpcio": grpc.__version__, "calls": results}, indent=1))


if __name__ == "__main__":
    main()
