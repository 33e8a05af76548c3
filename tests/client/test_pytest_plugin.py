"""The pytest plugin, run the way users run it: a test file using each
fixture, in a pytest of its own (pytester), against real members."""

from __future__ import annotations

import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]


def _plugin_args() -> list[str]:
    """Load the plugin by name unless it is installed (then its entry point loads it)."""
    installed = any(ep.value == "petcd.embed.pytest_plugin" for ep in entry_points(group="pytest11"))
    return [] if installed else ["-p", "petcd.embed.pytest_plugin"]


@pytest.fixture
def runner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    return pytester


def test_entry_point_is_declared() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"]["pytest11"]["petcd"] == "petcd.embed.pytest_plugin"


def test_fixtures_in_a_test_file(runner: pytest.Pytester) -> None:
    runner.makepyfile(test_uses_petcd="""
        import time
        from petcd.client import Client

        SEEN = []

        def test_server(petcd_server):
            host, port = petcd_server.endpoint.split(":")
            assert host == "127.0.0.1" and int(port) > 0
            with Client(petcd_server.endpoint) as c:
                assert c.put("from-server-test", "1") > 0
            SEEN.append(petcd_server.endpoint)

        def test_client_starts_empty(petcd_client, petcd_server):
            assert petcd_client.get_range("\\0", "\\0") == []   # the previous test's key is gone
            petcd_client.put("k", "v")
            SEEN.append(petcd_server.endpoint)

        def test_client_starts_empty_again(petcd_client):
            assert petcd_client.get("k") is None
            best = 1.0
            for _ in range(5):   # the per-test reset; best of 5 so a busy box does not decide
                t = time.perf_counter()
                petcd_client.delete_range("\\0", "\\0")
                best = min(best, time.perf_counter() - t)
            assert best < 0.010

        def test_one_member_per_session(petcd_server):
            assert len(set(SEEN + [petcd_server.endpoint])) == 1

        def test_cluster(petcd_cluster):
            assert len(petcd_cluster.endpoints) == 3
            with Client(petcd_cluster.endpoints) as c:
                rev = c.put("replicated", "yes")
            for ep in petcd_cluster.endpoints:
                with Client(ep) as one:
                    kv = one.get("replicated")
                    assert kv is not None and kv.mod_revision == rev
    """)
    result = runner.runpytest_subprocess(*_plugin_args(), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)


def test_function_scope_option_gives_each_test_its_own_member(runner: pytest.Pytester) -> None:
    runner.makeini("""
        [pytest]
        petcd_scope = function
        petcd_subprocess = true
    """)
    runner.makepyfile(test_scoped="""
        ENDPOINTS = []

        def test_a(petcd_server):
            ENDPOINTS.append(petcd_server.endpoint)
            assert petcd_server.subprocess

        def test_b(petcd_server):
            assert petcd_server.endpoint not in ENDPOINTS
    """)
    result = runner.runpytest_subprocess(*_plugin_args(), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_bad_scope_is_a_usage_error(runner: pytest.Pytester) -> None:
    runner.makeini("""
        [pytest]
        petcd_scope = forever
    """)
    runner.makepyfile(test_x="def test_x(petcd_server):\n    pass\n")
    result = runner.runpytest_subprocess(*_plugin_args(), "-p", "no:cacheprovider")
    assert "petcd_scope must be one of" in result.stdout.str() + result.stderr.str()


def test_first_member_starts_within_a_second() -> None:
    import time

    from petcd.embed import Member

    t = time.perf_counter()
    with Member(unsafe_no_fsync=True) as m:
        elapsed = time.perf_counter() - t
        assert m.running
    assert elapsed < 1.0, f"the first member took {elapsed:.2f}s"
