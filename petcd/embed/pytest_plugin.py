"""pytest plugin (entry point ``pytest11: petcd``): fixtures backed by real
petcd members.

- ``petcd_server``: a running member (``.endpoint`` is "127.0.0.1:PORT");
- ``petcd_client``: a ``petcd.client.Client`` on it, with the keyspace
  emptied before each test (one DeleteRange: well under 10 ms);
- ``petcd_cluster``: three members (``.endpoints``, ``.members``).

Settings (ini file or ``-o name=value``):

- ``petcd_scope``: scope of petcd_server and petcd_cluster: ``session``
  (default: one member for the whole run), ``package``, ``module``, ``class``
  or ``function`` (a new member per test);
- ``petcd_subprocess``: ``true`` runs petcd_server as a ``python -m petcd``
  subprocess instead of in-process (petcd_cluster always uses subprocesses);
- ``petcd_fsync``: ``true`` keeps fsync on (off by default: test data is
  disposable, and the run is faster).

Imports of petcd's server happen only when a fixture is used, so the plugin
costs nothing in suites that do not use it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from petcd.client import Client
    from petcd.embed.member import Cluster, Member

SCOPES = ("session", "package", "module", "class", "function")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("petcd_scope", "scope of the petcd_server and petcd_cluster fixtures", default="session")
    parser.addini("petcd_subprocess", "run petcd_server as a subprocess", type="bool", default=False)
    parser.addini("petcd_fsync", "keep fsync on in the test members", type="bool", default=False)


def _scope(fixture_name: str, config: pytest.Config) -> str:
    scope = str(config.getini("petcd_scope"))
    if scope not in SCOPES:
        raise pytest.UsageError(f"petcd_scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    return scope


@pytest.fixture(scope=_scope)  # type: ignore[arg-type]
def petcd_server(pytestconfig: pytest.Config) -> Iterator[Member]:
    """A running petcd member for the tests of the configured scope."""
    from petcd.embed.member import Member

    m = Member(subprocess=bool(pytestconfig.getini("petcd_subprocess")),
               unsafe_no_fsync=not pytestconfig.getini("petcd_fsync"))
    with m:
        yield m


@pytest.fixture(scope=_scope)  # type: ignore[arg-type]
def petcd_cluster(pytestconfig: pytest.Config) -> Iterator[Cluster]:
    """Three petcd members of one cluster."""
    from petcd.embed.member import Cluster

    with Cluster(3, unsafe_no_fsync=not pytestconfig.getini("petcd_fsync")) as c:
        yield c


@pytest.fixture
def petcd_client(petcd_server: Member) -> Iterator[Client]:
    """A Client on petcd_server; the keyspace is empty when the test starts."""
    from petcd.client import Client

    with Client(petcd_server.endpoint, timeout=30) as c:
        c.delete_range(b"\0", b"\0")
        yield c
