"""etcd's grpc-gateway: its v3 API as JSON over HTTP, under ``/v3/`` and
``/v3beta/`` (the prefixes etcd 3.4 answers; ``/v3alpha/`` is gone).

Every call goes to the same handler the gRPC side calls for that method
(looked up by its gRPC path, ``/etcdserverpb.KV/Range``), so validation,
auth, errors and headers are the gRPC side's. What is the gateway's own:
the routes, the JSON mapping (petcd/api/jsonpb.py), errors as
``{"error","message","code"}`` with the HTTP status grpc-gateway gives each
gRPC code, the ``Authorization`` header as the call's token, and streams
(watch, lease keep-alive, snapshot, election observe) as one
``{"result": ...}`` object per line of a chunked response.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from google.protobuf.descriptor import FileDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from petcd.api import jsonpb
from petcd.api.http1 import BadBody, BodyTooLarge, Request, Response
from petcd.http2.grpc import Messages
from petcd.proto import rpc_pb2

log = logging.getLogger("petcd.gateway")

PREFIXES = ("/v3", "/v3beta")

# path under a prefix -> gRPC method path (etcd 3.4's rpc.proto, v3lock.proto
# and v3election.proto HTTP annotations, including their additional bindings)
ROUTES: dict[str, str] = {
    "/kv/range": "/etcdserverpb.KV/Range",
    "/kv/put": "/etcdserverpb.KV/Put",
    "/kv/deleterange": "/etcdserverpb.KV/DeleteRange",
    "/kv/txn": "/etcdserverpb.KV/Txn",
    "/kv/compaction": "/etcdserverpb.KV/Compact",
    "/watch": "/etcdserverpb.Watch/Watch",
    "/lease/grant": "/etcdserverpb.Lease/LeaseGrant",
    "/lease/revoke": "/etcdserverpb.Lease/LeaseRevoke",
    "/kv/lease/revoke": "/etcdserverpb.Lease/LeaseRevoke",
    "/lease/keepalive": "/etcdserverpb.Lease/LeaseKeepAlive",
    "/lease/timetolive": "/etcdserverpb.Lease/LeaseTimeToLive",
    "/kv/lease/timetolive": "/etcdserverpb.Lease/LeaseTimeToLive",
    "/lease/leases": "/etcdserverpb.Lease/LeaseLeases",
    "/kv/lease/leases": "/etcdserverpb.Lease/LeaseLeases",
    "/cluster/member/add": "/etcdserverpb.Cluster/MemberAdd",
    "/cluster/member/remove": "/etcdserverpb.Cluster/MemberRemove",
    "/cluster/member/update": "/etcdserverpb.Cluster/MemberUpdate",
    "/cluster/member/list": "/etcdserverpb.Cluster/MemberList",
    "/cluster/member/promote": "/etcdserverpb.Cluster/MemberPromote",
    "/maintenance/alarm": "/etcdserverpb.Maintenance/Alarm",
    "/maintenance/status": "/etcdserverpb.Maintenance/Status",
    "/maintenance/defragment": "/etcdserverpb.Maintenance/Defragment",
    "/maintenance/hash": "/etcdserverpb.Maintenance/Hash",
    "/maintenance/snapshot": "/etcdserverpb.Maintenance/Snapshot",
    "/maintenance/transfer-leadership": "/etcdserverpb.Maintenance/MoveLeader",
    "/auth/enable": "/etcdserverpb.Auth/AuthEnable",
    "/auth/disable": "/etcdserverpb.Auth/AuthDisable",
    "/auth/authenticate": "/etcdserverpb.Auth/Authenticate",
    "/auth/user/add": "/etcdserverpb.Auth/UserAdd",
    "/auth/user/get": "/etcdserverpb.Auth/UserGet",
    "/auth/user/list": "/etcdserverpb.Auth/UserList",
    "/auth/user/delete": "/etcdserverpb.Auth/UserDelete",
    "/auth/user/changepw": "/etcdserverpb.Auth/UserChangePassword",
    "/auth/user/grant": "/etcdserverpb.Auth/UserGrantRole",
    "/auth/user/revoke": "/etcdserverpb.Auth/UserRevokeRole",
    "/auth/role/add": "/etcdserverpb.Auth/RoleAdd",
    "/auth/role/get": "/etcdserverpb.Auth/RoleGet",
    "/auth/role/list": "/etcdserverpb.Auth/RoleList",
    "/auth/role/delete": "/etcdserverpb.Auth/RoleDelete",
    "/auth/role/grant": "/etcdserverpb.Auth/RoleGrantPermission",
    "/auth/role/revoke": "/etcdserverpb.Auth/RoleRevokePermission",
    "/lock/lock": "/v3lockpb.Lock/Lock",
    "/lock/unlock": "/v3lockpb.Lock/Unlock",
    "/election/campaign": "/v3electionpb.Election/Campaign",
    "/election/proclaim": "/v3electionpb.Election/Proclaim",
    "/election/leader": "/v3electionpb.Election/Leader",
    "/election/observe": "/v3electionpb.Election/Observe",
    "/election/resign": "/v3electionpb.Election/Resign",
}

# grpc-gateway's HTTP status for each gRPC code (runtime.HTTPStatusFromCode)
HTTP_STATUS = {
    0: 200, 1: 408, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429,
    9: 412, 10: 409, 11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401,
}
REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    408: "Request Timeout", 409: "Conflict", 412: "Precondition Failed", 429: "Too Many Requests",
    500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable", 504: "Gateway Timeout",
}
_CODE_NAMES = [
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
]
# A JSON body may be this many times the largest request message (base64
# and escapes) before it is refused unread.
JSON_FACTOR = 4
JSON_HEADERS = [("Content-Type", "application/json"), ("Grpc-Metadata-Content-Type", "application/grpc")]
_ERROR_HEADERS = [("Content-Type", "application/json")]
# An error the gRPC server answered (a trailers-only response): grpc-gateway
# declares and sends its trailer metadata, so the body goes chunked.
_SERVER_ERROR_HEADERS = _ERROR_HEADERS + [("Trailer", "Grpc-Trailer-Content-Type")]
_SERVER_ERROR_TRAILERS = [("Grpc-Trailer-Content-Type", "application/grpc")]


class GatewayAbort(Exception):
    """A call ended with a gRPC status through the gateway's context."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def code_number(code: Any) -> int:
    """The number of a gRPC status code given as an int, an IntEnum or a
    grpc.StatusCode (whose value is (number, name))."""
    if isinstance(code, int):
        return int(code)
    value = getattr(code, "value", None)
    if isinstance(value, tuple):
        return int(value[0])
    if isinstance(value, int):
        return value
    return 2


class GatewayContext:
    """What a service handler sees of a gateway call, shaped like the gRPC
    side's context: metadata (the token from ``Authorization``), no
    deadline, and ``abort`` to end the call with a status."""

    def __init__(self, metadata: list[tuple[str, str]], peer: str) -> None:
        self._metadata = metadata
        self._peer = peer
        self.cancelled = False
        # as the HTTP/2 front end's context: the metadata as raw header
        # pairs (the auth check reads ``token``/``authorization`` there),
        # and no verified client certificate
        self.headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in metadata]
        self.client_cn = ""

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self._metadata

    def metadata_value(self, key: str) -> str | None:
        found: str | None = None
        for k, v in self._metadata:
            if k == key:
                found = v
        return found

    def time_remaining(self) -> float | None:
        return None

    def peer(self) -> str:
        return self._peer

    def abort(self, code: Any, message: str = "") -> NoReturn:
        # Raises at once: works whether the caller awaits it (grpc.aio's
        # abort is a coroutine) or not.
        raise GatewayAbort(code_number(code), message)

    def set_code(self, code: Any) -> None:  # grpc.aio context compatibility
        pass

    def set_details(self, details: str) -> None:
        pass


@dataclass(frozen=True)
class Call:
    """A routed method: its gRPC path, descriptor and handler."""

    path: str
    method: MethodDescriptor
    request_cls: type[Message]
    response_cls: type[Message]
    handler: Callable[..., Any]


def method_descriptors(files: Iterable[FileDescriptor]) -> dict[str, MethodDescriptor]:
    """gRPC path -> method descriptor for every service in files."""
    out: dict[str, MethodDescriptor] = {}
    for f in files:
        for svc in f.services_by_name.values():
            for m in svc.methods:
                out[f"/{svc.full_name}/{m.name}"] = m
    return out


def handlers_of(services: Iterable[object], files: Iterable[FileDescriptor] | None = None) -> dict[str, Callable[..., Any]]:
    """gRPC path -> bound handler for servicer objects whose class names
    their service (KVService serves etcdserverpb.KV, and so on)."""
    by_service: dict[str, object] = {}
    for svc in services:
        name = type(svc).__name__.removesuffix("Service").removesuffix("Servicer")
        by_service[name] = svc
    out: dict[str, Callable[..., Any]] = {}
    for path, m in method_descriptors(files if files is not None else _proto_files()).items():
        impl = by_service.get(m.containing_service.name)
        fn = getattr(impl, m.name, None) if impl is not None else None
        if fn is not None:
            out[path] = fn
    return out


def _proto_files() -> list[FileDescriptor]:
    files: list[FileDescriptor] = [rpc_pb2.DESCRIPTOR]
    for mod in ("petcd.proto.v3lock_pb2", "petcd.proto.v3election_pb2"):
        try:
            files.append(__import__(mod, fromlist=["DESCRIPTOR"]).DESCRIPTOR)
        except ImportError:  # the lock and election services are optional
            pass
    return files


class Gateway:
    """The JSON API. ``handle`` answers a request whose path is under a
    gateway prefix; anything else is not its business (``owns``)."""

    def __init__(self, handlers: Mapping[str, Callable[..., Any]], max_request_bytes: int) -> None:
        self.max_body = max_request_bytes
        descriptors = method_descriptors(_proto_files())
        self.calls: dict[str, Call] = {}
        for suffix, path in ROUTES.items():
            m = descriptors.get(path)
            handler = handlers.get(path)
            if m is None:
                continue
            if handler is None:
                handler = _unimplemented(path)
            call = Call(path, m, GetMessageClass(m.input_type), GetMessageClass(m.output_type), handler)
            for prefix in PREFIXES:
                self.calls[prefix + suffix] = call

    @staticmethod
    def owns(path: str) -> bool:
        return any(path.startswith(p + "/") for p in PREFIXES)

    async def handle(self, req: Request) -> Response:
        call = self.calls.get(req.path)
        if call is None or req.method != "POST":
            return self._refuse(call)
        # calls are counted (grpc_server_*_total) by the handlers themselves,
        # which the gRPC side registered counted (metrics.counted)
        return await self._handle(call, req)

    def _refuse(self, call: Call | None) -> Response:
        if call is None:
            return Response(404, [("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff")],
                            b"Not Found\n")
        return Response(405, [("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff")],
                        b"Method Not Allowed\n")

    async def _handle(self, call: Call, req: Request) -> Response:
        timeout_header = req.header("grpc-timeout")
        timeout = grpc_timeout(timeout_header) if timeout_header else None
        if timeout_header and timeout is None:
            return error_response(3, f"invalid grpc-timeout: {timeout_header}")
        # the deadline runs from here, as the context grpc-gateway makes first
        deadline = None if not timeout else time.monotonic() + timeout
        ctx = GatewayContext(_metadata(req), "")
        m = call.method
        if m.client_streaming:
            return await self._bidi(call, req, ctx, deadline)
        broken: BadBody | None = None
        try:
            body = await req.body.read(JSON_FACTOR * self.max_body)
        except BodyTooLarge:
            # far too large to hold: answered without reading the rest
            return error_response(8, self._too_large(req.body.buffered), close=True, from_server=True)
        except BadBody as exc:
            # As grpc-gateway's JSON decoder: a request whole before the
            # fault is served, else the fault is the (InvalidArgument) error.
            if not exc.data.strip():
                return error_response(3, str(exc), close=True)
            body, broken = exc.data, exc
        try:
            request = jsonpb.parse(body, call.request_cls()) if body.strip() else call.request_cls()
        except jsonpb.JsonError as exc:
            if broken is not None:  # the request had not ended before the fault
                return error_response(3, str(broken), close=True)
            return error_response(3, str(exc))  # (server streams too: InvalidArgument, as etcd 3.4 answers)
        size = request.ByteSize()
        if size > self.max_body:
            # as etcd's gateway, whose gRPC hop refuses the encoded message
            return error_response(8, self._too_large(size), from_server=True)
        if m.server_streaming:
            return await self._server_stream(call, request, ctx, deadline)
        try:
            remaining = None if deadline is None else deadline - time.monotonic()
            resp = await _unless_ended(call.handler(request, ctx), req, remaining)
        except DeadlineExceeded:
            return error_response(4, _DEADLINE)
        except ClientGone:
            # as Go's server cancels the request's context when the client
            # stops sending: the call is cancelled (a lock or campaign
            # waiting in its queue leaves it), and gRPC's client says so
            return error_response(1, "context canceled")
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            return error_response(*status_of(exc), from_server=True)
        return Response(200, list(JSON_HEADERS), self._json(call, resp))

    def _too_large(self, size: int) -> str:
        return f"grpc: received message larger than max ({size} vs. {self.max_body})"

    def _json(self, call: Call, resp: Any) -> bytes:
        if isinstance(resp, (bytes, bytearray, memoryview)):
            resp = call.response_cls.FromString(bytes(resp))
        return jsonpb.to_json(resp)

    async def _server_stream(self, call: Call, request: Message, ctx: GatewayContext,
                             deadline: float | None = None) -> Response:
        gen = call.handler(request, ctx)
        return await self._stream_response(call, gen, deadline)

    async def _bidi(self, call: Call, req: Request, ctx: GatewayContext, deadline: float | None = None) -> Response:
        """Watch and LeaseKeepAlive: request objects from the body as they
        arrive; the first one is read before answering, so that a bad one
        gets an error response as etcd's gateway gives it."""
        objects = jsonpb.ObjectStream(JSON_FACTOR * self.max_body)
        first: list[Message] = []
        rest: list[Any] = []  # objects that came with the first, read (and refused) later
        it = aiter(req.body)
        try:
            while not first:
                try:
                    chunk = await anext(it)
                except StopAsyncIteration:
                    break
                got = objects.feed(chunk)
                if got:
                    first.append(jsonpb.from_obj(got[0], call.request_cls()))
                    rest = got[1:]
        except jsonpb.JsonError as exc:
            return error_response(2, str(exc))
        except BadBody as exc:  # (grpc-gateway passes the read error on as is: Unknown)
            return error_response(2, str(exc), close=True)

        async def requests() -> AsyncIterator[Message]:
            for msg in first:
                yield msg
            try:
                for obj in rest:
                    yield jsonpb.from_obj(obj, call.request_cls())
                async for chunk in it:
                    for obj in objects.feed(chunk):
                        yield jsonpb.from_obj(obj, call.request_cls())
            except (BadBody, jsonpb.JsonError):
                pass  # as grpc-gateway: a body that breaks later ends the requests, not the stream
            if call.path == "/etcdserverpb.Watch/Watch":
                # The body has ended; like etcd, a watch goes on until the
                # client goes away (a keep-alive stream ends with its body).
                await req.closed.wait()

        gen = call.handler(requests(), ctx)
        return await self._stream_response(call, gen, deadline)

    async def _stream_response(self, call: Call, gen: AsyncIterator[Any], deadline: float | None = None) -> Response:
        """Wait for the first message (an error before it is an error
        response), then stream the rest, one JSON object per line."""
        def remaining() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        try:
            first = await asyncio.wait_for(anext(gen), remaining())
        except TimeoutError:
            # the gRPC client's own error, while it waited for the stream's
            # headers: the unary error form, with no trailer
            await _close(gen)
            return error_response(4, _DEADLINE)
        except StopAsyncIteration:
            # a stream that ended before its first message sent no header
            # metadata: no Grpc-Metadata-Content-Type
            return Response(200, list(_ERROR_HEADERS), stream=_empty())
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            # as grpc-gateway: the stream's error object with the status
            # the code maps to, sent chunked, without header metadata
            code, message = status_of(exc)
            return Response(HTTP_STATUS.get(code, 500), list(_ERROR_HEADERS),
                            stream=_one(stream_error_line(code, message)))

        async def lines() -> AsyncIterator[bytes]:
            try:
                yield self._line(call, first)
                try:
                    while True:
                        try:
                            item = await asyncio.wait_for(anext(gen), remaining())
                        except StopAsyncIteration:
                            break
                        except TimeoutError:  # the Grpc-Timeout passed: the stream ends so
                            yield stream_error_line(4, _DEADLINE)
                            break
                        yield self._line(call, item)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    code, message = status_of(exc)
                    yield stream_error_line(code, message)
            finally:
                await _close(gen)

        return Response(200, list(JSON_HEADERS), stream=lines())

    def _line(self, call: Call, item: Any) -> bytes:
        """A streamed message as a line, or several (Messages) as a line each."""
        if isinstance(item, Messages):
            return b"".join([self._line(call, m) for m in item])
        return b'{"result":' + self._json(call, item) + b"}\n"


class ClientGone(Exception):
    """The client stopped sending or went away before the call ended."""


_DEADLINE = "context deadline exceeded"


class DeadlineExceeded(Exception):
    """The call's Grpc-Timeout passed before it ended."""


_TIMEOUT_DIGITS = re.compile(r"[+-]?[0-9]+")
_TIMEOUT_UNITS = {"H": 3600 * 10**9, "M": 60 * 10**9, "S": 10**9, "m": 10**6, "u": 10**3, "n": 1}


def grpc_timeout(value: str) -> float | None:
    """Seconds from a Grpc-Timeout header as grpc-gateway reads it (a
    decimal int64, sign allowed, then one unit letter; the product in
    nanoseconds wraps as Go's int64 does), None if it does not read; 0 is
    no deadline at all."""
    unit = _TIMEOUT_UNITS.get(value[-1:])
    digits = value[:-1]
    if unit is None or not _TIMEOUT_DIGITS.fullmatch(digits):
        return None
    n = int(digits)
    if not -(1 << 63) <= n < (1 << 63):
        return None
    ns = (n * unit + (1 << 63)) % (1 << 64) - (1 << 63)
    return ns / 1e9


async def _unless_ended(call: Awaitable[Any], req: Request, timeout: float | None = None) -> Any:
    """call's result; ClientGone if the client ends its side of the
    connection first, DeadlineExceeded if the timeout passes first (either
    way the call is cancelled where it waits). The call runs in the caller's
    task: a callback and a timer cancel it, no task or wait per call."""
    await asyncio.sleep(0)  # (an end of file that came with the request is seen first)
    over: type[Exception] | None = None
    if req.ended.is_set():
        # already over (the client half-closed after its request)
        over = ClientGone
    elif timeout is not None and timeout <= 0:
        over = DeadlineExceeded
    if over is not None:
        # Go's gRPC client refuses a call whose context is done without making it
        if asyncio.iscoroutine(call):
            call.close()
        raise over
    task = asyncio.current_task()
    assert task is not None
    cancels = task.cancelling()
    why: list[type[Exception]] = []

    def stop(kind: type[Exception]) -> None:
        if not why:
            why.append(kind)
            task.cancel()

    def gone() -> None:
        stop(ClientGone)

    req.on_end.append(gone)
    timer = None if timeout is None else asyncio.get_running_loop().call_later(timeout, stop, DeadlineExceeded)
    try:
        return await call
    except asyncio.CancelledError:
        # ours alone (a cancel from elsewhere, such as the connection's
        # loss, stays a cancel)
        if why and task.cancelling() == cancels + 1:
            task.uncancel()
            raise why[0] from None
        raise
    finally:
        if timer is not None:
            timer.cancel()
        if gone in req.on_end:
            req.on_end.remove(gone)


async def _close(gen: AsyncIterator[Any]) -> None:
    aclose = getattr(gen, "aclose", None)
    if aclose is not None:
        await aclose()


async def _one(chunk: bytes) -> AsyncIterator[bytes]:
    yield chunk


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


def _unimplemented(path: str) -> Callable[..., Any]:
    service = path.split("/")[1]

    async def handler(request: Any, context: Any) -> Any:
        raise GatewayAbort(12, f"unknown service {service}")

    return handler


def _metadata(req: Request) -> list[tuple[str, str]]:
    """gRPC metadata from HTTP headers as grpc-gateway forwards them: the
    ``Authorization`` header (etcd reads it as the token) and any
    ``Grpc-Metadata-*`` header."""
    md: list[tuple[str, str]] = []
    for k, v in req.headers:
        if k == "authorization":
            md.append(("authorization", v))
            md.append(("token", v))
        elif k.startswith("grpc-metadata-"):
            md.append((k.removeprefix("grpc-metadata-"), v))
    return md


def status_of(exc: BaseException) -> tuple[int, str]:
    """The gRPC status (number, message) a handler's exception stands for."""
    if isinstance(exc, GatewayAbort):
        return exc.code, exc.message
    code = getattr(exc, "code", None)
    message = getattr(exc, "message", None)
    if code is not None and isinstance(message, str) and not callable(code):
        return code_number(code), message  # the front end's RpcError
    from petcd.api import errors  # here: errors imports grpc, the gateway need not

    c, text = errors.status_of(exc)
    if code_number(c) == 2:
        log.error("unexpected error serving a gateway request: %r", exc, exc_info=exc)
    return code_number(c), text


def error_body(code: int, message: str) -> bytes:
    return jsonpb.dumps({"error": message, "message": message, "code": code})


def error_response(code: int, message: str, close: bool = False, from_server: bool = False) -> Response:
    """etcd's gateway error: {"error","message","code"} with the HTTP status
    grpc-gateway maps the code to. from_server: the status came from the
    gRPC server (not from the gateway's own reading of the request), and
    the answer carries the trailer etcd's gateway forwards."""
    if from_server:
        return Response(HTTP_STATUS.get(code, 500), list(_SERVER_ERROR_HEADERS), error_body(code, message),
                        close=close, trailers=list(_SERVER_ERROR_TRAILERS))
    return Response(HTTP_STATUS.get(code, 500), list(_ERROR_HEADERS), error_body(code, message), close=close)


def stream_error_line(code: int, message: str) -> bytes:
    """A stream's error, as grpc-gateway v1 writes it: the last thing in the
    body, with no newline after it (unlike the messages before it)."""
    status = HTTP_STATUS.get(code, 500)
    return jsonpb.dumps({"error": {
        "grpc_code": code, "http_code": status, "message": message, "http_status": REASONS.get(status, ""),
    }})
