"""/metrics and /health on a 3-member cluster, through each member's client
port: one leader among the scrapes; a member that loses its leader (the two
others stopped) reports itself unhealthy, as etcd's /health does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from petcd.testing.harness import Server, petcd_cluster, wait_for

from .client import Http


@pytest.fixture
def cluster(module_tmp: Path) -> Iterator[list[Server]]:
    d = module_tmp / "c3"
    d.mkdir()
    members = petcd_cluster(d, 3)
    yield members
    for m in members:
        m.stop()


def gauge(url: str, name: str) -> float:
    status, _, body = Http(url).request("GET", "/metrics")
    assert status == 200
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            if s.name == name:
                return float(s.value)
    raise AssertionError(f"{name} not in /metrics")


def health(url: str) -> tuple[int, bytes]:
    status, _, body = Http(url, timeout=30).request("GET", "/health")
    return status, body


def test_one_leader_and_health_without_leader(cluster: list[Server]) -> None:
    urls = [m.client_url for m in cluster]
    wait_for(lambda: sum(gauge(u, "etcd_server_is_leader") for u in urls) == 1, 30, "exactly one leader in the scrapes")
    assert [gauge(u, "etcd_server_has_leader") for u in urls] == [1, 1, 1]
    assert [health(u) for u in urls] == [(200, b'{"health":"true"}')] * 3
    for m in cluster[1:]:
        m.stop()
    survivor = urls[0]
    wait_for(lambda: health(survivor) == (503, b'{"health":"false"}'), 60, "the lone member to turn unhealthy")
    wait_for(lambda: gauge(survivor, "etcd_server_has_leader") == 0, 60, "has_leader 0 on the lone member")
    status, _, body = Http(survivor, timeout=30).request("GET", "/readyz")
    assert status == 503 and b"[-]linearizable_read failed" in body
    assert Http(survivor).request("GET", "/livez")[::2] == (200, b"ok")


def test_listen_metrics_urls(module_tmp: Path) -> None:
    """--listen-metrics-urls: /metrics and /health on a listener of their own."""
    from petcd.testing.harness import free_port, petcd_server

    metrics_url = f"http://127.0.0.1:{free_port()}"
    d = module_tmp / "metrics-url"
    d.mkdir()
    s = petcd_server(d, extra=["--listen-metrics-urls", metrics_url]).start()
    try:
        assert health(metrics_url) == (200, b'{"health":"true"}')
        assert gauge(metrics_url, "etcd_server_has_leader") == 1
        assert Http(metrics_url).request("GET", "/version")[0] == 404  # only metrics and health there
        assert Http(s.client_url).request("GET", "/version")[0] == 200
    finally:
        s.stop()
