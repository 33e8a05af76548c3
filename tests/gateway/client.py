"""A small curl-like JSON client over http.client, for the gateway tests."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit


class Http:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        self.conn.request(method, path, body=body, headers=headers or {})
        r = self.conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def post(self, path: str, obj: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        status, _, data = self.request("POST", path, raw, headers)
        return status, json.loads(data) if data.startswith(b"{") else data

    def close(self) -> None:
        self.conn.close()
