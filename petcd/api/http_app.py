"""Everything the client port answers over plain HTTP: the JSON gateway
(petcd/api/gateway.py), ``/version``, ``/health`` (etcd 3.4's rules),
``/livez`` and ``/readyz`` (as etcd 3.5 added them) and ``/metrics``.

``ClientHttp`` is the application the HTTP/1.1 protocol (petcd/api/http1.py)
calls; ``metrics_only`` is what a --listen-metrics-urls listener serves.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from petcd import stats
from petcd.api import jsonpb
from petcd.api.gateway import Gateway
from petcd.api.http1 import Request, Response
from petcd.api.metrics import CONTENT_TYPE, Metrics
from petcd.proto import rpc_pb2

if TYPE_CHECKING:
    from petcd.server.etcd_server import EtcdServer

# etcd's health check waits this long for its read.
HEALTH_TIMEOUT = 5.0
# grpc's default frame allowance over --max-request-bytes (as the gRPC side)
GRPC_OVERHEAD_BYTES = 512 * 1024

_TEXT = [("Content-Type", "text/plain; charset=utf-8")]
_NOSNIFF = [("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff")]


def not_found() -> Response:
    return Response(404, list(_NOSNIFF), b"404 page not found\n")


def method_not_allowed(allow: str | None = None) -> Response:
    headers = ([("Allow", allow)] if allow else []) + list(_NOSNIFF)
    return Response(405, headers, b"Method Not Allowed\n")


class Health:
    """etcd's health checks for one member."""

    def __init__(self, server: EtcdServer) -> None:
        self.s = server

    async def _read(self, linearizable: bool) -> str | None:
        """None when a read of the health key succeeds, else why not."""
        req = rpc_pb2.RangeRequest(key=b"health", serializable=not linearizable)
        try:
            await asyncio.wait_for(self.s.range(req), HEALTH_TIMEOUT)
        except TimeoutError:
            return "etcdserver: request timed out"
        except Exception as exc:
            return str(exc) or type(exc).__name__
        return None

    async def health(self) -> tuple[bool, str]:
        """etcd 3.4's /health: unhealthy with an active alarm, without a
        leader, or when a linearizable read fails."""
        if list(self.s.alarms.list()):
            return False, "ALARM"
        if self.s.leader == 0:
            return False, "RAFT NO LEADER"
        why = await self._read(linearizable=True)
        if why is not None:
            return False, why
        return True, ""

    async def checks(self, names: list[str]) -> list[tuple[str, str | None]]:
        out: list[tuple[str, str | None]] = []
        for name in names:
            if name == "data_corruption":
                bad = self.s.alarms.is_active(rpc_pb2.CORRUPT)
                out.append((name, "alarm activated: CORRUPT" if bad else None))
            elif name == "serializable_read":
                out.append((name, await self._read(linearizable=False)))
            elif name == "linearizable_read":
                out.append((name, await self._read(linearizable=True)))
        return out


LIVEZ = ["serializable_read"]
READYZ = ["data_corruption", "serializable_read", "linearizable_read"]


class ClientHttp:
    """The HTTP application of the client port."""

    def __init__(self, server: EtcdServer, handlers: Mapping[str, Callable[..., Any]],
                 metrics: Metrics | None = None, gateway: bool = True) -> None:
        self.s = server
        self.metrics = metrics or Metrics(server)
        self.health = Health(server)
        self.gateway = Gateway(handlers, server.cfg.max_request_bytes + GRPC_OVERHEAD_BYTES) if gateway else None
        self.routes: dict[str, Callable[[Request], Awaitable[Response]]] = {
            "/version": self.version,
            "/health": self.get_health,
            "/livez": self.livez,
            "/readyz": self.readyz,
            "/metrics": self.get_metrics,
        }

    async def __call__(self, req: Request) -> Response:
        if req.method == "OPTIONS":
            return Response(200)  # etcd answers every CORS preflight so
        path = req.path
        clean = clean_path(path)
        if clean == "/v3":
            clean = "/v3/"  # a subtree etcd's mux serves: its bare name is sent there
        if clean != path:
            return redirect(req, clean)
        route = self.routes.get(path)
        if route is not None:
            return await route(req)
        if self.gateway is not None and self.gateway.owns(path):
            return await self.gateway.handle(req)
        if path.startswith("/livez/") or path.startswith("/readyz/"):
            return await self.single_check(req)
        return not_found()

    async def version(self, req: Request) -> Response:
        if req.method != "GET":
            return method_not_allowed("GET")
        from petcd.server.etcd_server import ETCD_VERSION

        # etcd's words before the first leader has set the version
        cluster = self.s.membership.cluster_version or "not_decided"
        body = jsonpb.dumps({"etcdserver": ETCD_VERSION, "etcdcluster": cluster})
        return Response(200, [("Content-Type", "application/json")], body)

    async def get_health(self, req: Request) -> Response:
        if req.method != "GET":
            return method_not_allowed("GET")
        ok, _why = await self.health.health()
        # etcd_server_health_{success,failures}
        if ok:
            stats.SERVER.health_success += 1
        else:
            stats.SERVER.health_failures += 1
        body = b'{"health":"true"}' if ok else b'{"health":"false"}'
        return Response(200 if ok else 503, list(_TEXT), body)

    async def livez(self, req: Request) -> Response:
        return await self._probe(req, "livez", LIVEZ)

    async def readyz(self, req: Request) -> Response:
        return await self._probe(req, "readyz", READYZ)

    async def _probe(self, req: Request, what: str, names: list[str]) -> Response:
        if req.method not in ("GET", "HEAD"):
            return method_not_allowed()
        excluded = {v for k, v in _query(req.query) if k == "exclude"}
        results = await self.health.checks([n for n in names if n not in excluded])
        failed = [r for r in results if r[1] is not None]
        verbose = any(k == "verbose" for k, _ in _query(req.query))
        if not failed and not verbose:
            return Response(200, list(_NOSNIFF), b"ok")
        lines = []
        for name, why in results:
            lines.append(f"[+]{name} ok" if why is None else f"[-]{name} failed: {why}")
        for name in sorted(excluded & set(names)):
            lines.append(f"[+]{name} excluded: ok")
        lines.append(f"{what} check failed" if failed else f"{what} check passed")
        return Response(503 if failed else 200, list(_NOSNIFF), ("\n".join(lines) + "\n").encode())

    async def single_check(self, req: Request) -> Response:
        what, _, name = req.path.strip("/").partition("/")
        names = LIVEZ if what == "livez" else READYZ
        if name not in names:
            return not_found()
        (_, why), = await self.health.checks([name])
        if why is None:
            return Response(200, list(_NOSNIFF), b"ok")
        return Response(503, list(_NOSNIFF), f"[-]{name} failed: {why}\n{what} check failed\n".encode())

    async def get_metrics(self, req: Request) -> Response:
        # any method, as etcd's promhttp handler
        return Response(200, [("Content-Type", CONTENT_TYPE)], self.metrics.render())


def clean_path(path: str) -> str:
    """The path as Go's ServeMux cleans it before routing: rooted, no empty,
    "." or ".." segments, a trailing slash kept."""
    if not path.startswith("/"):
        path = "/" + path
    out: list[str] = []
    for seg in path.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    clean = "/" + "/".join(out)
    if path.endswith("/") and clean != "/":
        clean += "/"
    return clean


def redirect(req: Request, path: str) -> Response:
    """Go's ServeMux sending a request for an unclean path (or a subtree's
    bare name) to the clean one: 301, with a link in the body for GET/HEAD."""
    location = quote(path, safe="$&+,/:;=@", errors="surrogateescape") + (f"?{req.query}" if req.query else "")
    if req.method not in ("GET", "HEAD"):
        return Response(301, [("Location", location)])
    link = html.escape(location, quote=True).replace("&#x27;", "&#39;")
    return Response(301, [("Content-Type", "text/html; charset=utf-8"), ("Location", location)],
                    f'<a href="{link}">Moved Permanently</a>.\n\n'.encode())


def _query(q: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(q, keep_blank_values=True)


def metrics_only(app: ClientHttp) -> Callable[[Request], Awaitable[Response]]:
    """What --listen-metrics-urls serves: /metrics and /health only."""

    async def serve(req: Request) -> Response:
        if req.path == "/metrics":
            return await app.get_metrics(req)
        if req.path == "/health":
            return await app.get_health(req)
        return not_found()

    return serve
