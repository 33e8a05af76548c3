"""petcd/server/urls.py: etcd's URL rule, with etcd's messages."""

from __future__ import annotations

import pytest

from petcd.server.urls import URL, URLError, parse_url, parse_urls


def test_good_urls() -> None:
    assert parse_url("http://127.0.0.1:2380") == URL("http://127.0.0.1:2380", "http", "127.0.0.1", 2380)
    u = parse_url(" https://[::1]:2379 ")
    assert (u.scheme, u.host, u.port, u.tls, u.netloc) == ("https", "::1", 2379, True, "[::1]:2379")
    assert parse_url("http://localhost:1?x=y").netloc == "localhost:1"  # etcd ignores a query


@pytest.mark.parametrize(
    ("text", "reason", "message"),
    [
        ("ftp://127.0.0.1:2379", "scheme", "URL scheme must be http, https, unix, or unixs: ftp://127.0.0.1:2379"),
        ("127.0.0.1:2379", "scheme", "URL scheme must be http, https, unix, or unixs"),
        ("http://127.0.0.1", "address", 'URL address does not have the form "host:port": http://127.0.0.1'),
        ("http://:2379", "address", 'does not have the form "host:port"'),
        ("http://127.0.0.1:2379/v3", "path", "URL must not contain a path: http://127.0.0.1:2379/v3"),
        ("http://127.0.0.1:2379/", "path", "URL must not contain a path"),  # as etcd 3.4 says too
        ("http://127.0.0.1:99999", "syntax", "invalid URL"),
        ("http://[::1:2379", "syntax", "invalid URL"),
    ],
)
def test_bad_urls_get_etcds_messages(text: str, reason: str, message: str) -> None:
    with pytest.raises(URLError, match=message.replace("?", r"\?")) as info:
        parse_url(text)
    assert info.value.reason == reason


def test_a_use_narrows_the_schemes() -> None:
    parse_url("https://127.0.0.1:1")
    with pytest.raises(URLError, match="https URLs are not supported yet: https://127.0.0.1:1") as info:
        parse_url("https://127.0.0.1:1", ("http",))
    assert info.value.reason == "unsupported"


def test_a_list_needs_one_url() -> None:
    assert [u.port for u in parse_urls(["http://a:1", "http://b:2"])] == [1, 2]
    with pytest.raises(URLError, match="no valid URLs given"):
        parse_urls([])
