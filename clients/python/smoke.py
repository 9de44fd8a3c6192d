#!/usr/bin/env python3
"""A sessiond client in Python (grpcio), from the code `make clients` generates.

Runs one pass over the API against a running server and prints what it saw as
JSON on stdout: create, validate, list, revoke, a NOT_FOUND, an admin
checkpoint (TRUNCATE) and health checks. test/53-python-client.test.ts runs it
against a real server; it is also a starting point for Python backends.

The API key of its principal comes from the variable SESSIOND_API_KEY (never a
flag: argv shows in ps) and goes on every call as "authorization: Bearer <key>";
an admin token, when given, replaces it on admin calls. On a call that fails it
prints what it saw so far with "error": {"code", "details"} and exits 1.

    make clients
    SESSIOND_API_KEY=sk_sessiond_... /usr/bin/python3 clients/python/smoke.py 127.0.0.1:50051 [--ca-file ca.pem] [--admin-token T]

Debian: apt-get install python3-grpcio python3-protobuf protobuf-compiler protobuf-compiler-grpc
"""

import argparse
import collections
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def bearer_interceptor(grpc, key):
    """A client interceptor that adds "authorization: Bearer <key>" to every call
    (unary and streaming) whose own metadata carries no authorization header."""

    class Details(
        collections.namedtuple("Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
        grpc.ClientCallDetails,
    ):
        pass

    class Bearer(
        grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
        grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor,
    ):
        def _with_key(self, d):
            metadata = list(d.metadata or [])
            if not any(k == "authorization" for k, _ in metadata):
                metadata.append(("authorization", f"Bearer {key}"))
            return Details(d.method, d.timeout, metadata, d.credentials, getattr(d, "wait_for_ready", None), getattr(d, "compression", None))

        def intercept_unary_unary(self, continuation, details, request):
            return continuation(self._with_key(details), request)

        def intercept_unary_stream(self, continuation, details, request):
            return continuation(self._with_key(details), request)

        def intercept_stream_unary(self, continuation, details, requests):
            return continuation(self._with_key(details), requests)

        def intercept_stream_stream(self, continuation, details, requests):
            return continuation(self._with_key(details), requests)

    return Bearer()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="host:port of a sessiond server")
    parser.add_argument("--gen", default=os.path.join(HERE, "gen"), help="folder `make clients` generated into")
    parser.add_argument("--ca-file", help="PEM CA bundle: connect with TLS, trusting it")
    parser.add_argument("--cert-file", help="PEM client certificate (mTLS), with --key-file")
    parser.add_argument("--key-file", help="PEM private key of --cert-file")
    parser.add_argument("--admin-token", default=os.environ.get("SESSIOND_ADMIN_TOKEN", ""), help="sent as 'authorization: Bearer <token>' on admin calls")
    parser.add_argument("--subject", default="alice-py", help="subject of the sessions it creates")
    args = parser.parse_args()

    # The generated modules import each other as top-level packages (sessions.v1...).
    sys.path.insert(0, args.gen)
    import grpc
    from google.protobuf.duration_pb2 import Duration
    from sessions.v1 import admin_service_pb2 as admin_pb
    from sessions.v1 import admin_service_pb2_grpc as admin_grpc
    from sessions.v1 import session_service_pb2 as sessions_pb
    from sessions.v1 import session_service_pb2_grpc as sessions_grpc
    import health_pb2
    import health_pb2_grpc

    if args.ca_file or args.cert_file:
        def read(path):
            if not path:
                return None
            with open(path, "rb") as f:
                return f.read()
        creds = grpc.ssl_channel_credentials(read(args.ca_file), read(args.key_file), read(args.cert_file))
        channel = grpc.secure_channel(args.address, creds)
    else:
        channel = grpc.insecure_channel(args.address)
    api_key = os.environ.get("SESSIOND_API_KEY", "")
    if api_key:
        channel = grpc.intercept_channel(channel, bearer_interceptor(grpc, api_key))

    timeout = 10
    admin_md = [("authorization", f"Bearer {args.admin_token}")] if args.admin_token else []
    sessions = sessions_grpc.SessionServiceStub(channel)
    admin = admin_grpc.AdminServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    out = {"grpc_version": grpc.__version__}

    with channel:
        try:
            ready, call = health.Check.with_call(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
            md = dict(call.initial_metadata())
            live = health.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=timeout)
            out["health"] = {
                "status": health_pb2.HealthCheckResponse.ServingStatus.Name(ready.status),
                "liveness": health_pb2.HealthCheckResponse.ServingStatus.Name(live.status),
                "journal_mode": md.get("x-sessiond-journal-mode"),
                "wal_frames": md.get("x-sessiond-wal-frames"),
            }

            created = sessions.CreateSession(
                sessions_pb.CreateSessionRequest(
                    server_id="web-py", subject=args.subject, attributes={"lang": "python"},
                    ttl=Duration(seconds=3600), idle_timeout=Duration(seconds=600),
                ),
                timeout=timeout,
            )
            s = created.session
            out["create"] = {
                "id": s.id, "server_id": s.server_id, "subject": s.subject, "attributes": dict(s.attributes),
                "token_length": len(created.token), "etag": s.etag,
                "lifetime_seconds": s.expire_time.seconds - s.create_time.seconds,
            }

            v = sessions.ValidateSession(sessions_pb.ValidateSessionRequest(token=created.token, touch=True), timeout=timeout)
            out["validate"] = {"valid": v.valid, "id": v.session.id}

            listed = sessions.ListSessions(sessions_pb.ListSessionsRequest(subject=args.subject, page_size=10), timeout=timeout)
            out["list"] = {"ids": [x.id for x in listed.sessions], "next_page_token": listed.next_page_token}

            revoked = sessions.RevokeSessions(sessions_pb.RevokeSessionsRequest(subject=args.subject), timeout=timeout)
            after = sessions.ValidateSession(sessions_pb.ValidateSessionRequest(token=created.token), timeout=timeout)
            out["revoke"] = {
                "revoked_count": revoked.revoked_count,
                "valid_after": after.valid,
                "reason_after": sessions_pb.InvalidReason.Name(after.reason),
            }

            try:
                sessions.GetSession(sessions_pb.GetSessionRequest(id=s.id), timeout=timeout)
                out["get_revoked"] = {"code": "OK"}
            except grpc.RpcError as err:
                out["get_revoked"] = {"code": err.code().name, "details": err.details()}

            cp = admin.Checkpoint(
                admin_pb.CheckpointRequest(mode=admin_pb.CHECKPOINT_MODE_TRUNCATE), metadata=admin_md, timeout=timeout,
            )
            out["checkpoint"] = {
                "mode": admin_pb.CheckpointMode.Name(cp.mode), "busy": cp.busy, "log_frames": cp.log_frames,
                "checkpointed_frames": cp.checkpointed_frames, "wal_bytes": cp.wal_bytes,
            }
        except grpc.RpcError as err:
            # A failed call ends the pass: what it saw so far, and the status, for the caller to assert on.
            out["error"] = {"code": err.code().name, "details": err.details()}
            json.dump(out, sys.stdout, indent=2, sort_keys=True)
            sys.stdout.write("\n")
            sys.stderr.write(f"smoke.py: {err.code().name}: {err.details()}\n")
            return 1

    json.dump(out, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
