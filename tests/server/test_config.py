"""ServerConfig: etcd's defaults, the data-dir layout, --initial-cluster
parsing and the checks that refuse a member that cannot start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from petcd.server.config import (
    DEFAULT_QUOTA_BYTES,
    ConfigError,
    ServerConfig,
    parse_go_duration,
    parse_initial_cluster,
)


def test_defaults_are_etcds() -> None:
    c = ServerConfig()
    assert c.name == "default"
    assert c.data_dir == "default.petcd"
    assert c.listen_client_urls == ["http://127.0.0.1:2379"]
    assert c.advertise_client_urls == ["http://localhost:2379"]
    assert c.listen_peer_urls == ["http://127.0.0.1:2380"]
    assert c.initial_advertise_peer_urls == ["http://localhost:2380"]
    assert c.initial_cluster_state == "new" and c.initial_cluster_token == "etcd-cluster"
    assert (c.heartbeat_interval_ms, c.election_timeout_ms) == (100, 1000)
    assert (c.snapshot_count, c.max_request_bytes, c.max_txn_ops) == (100000, 1572864, 128)
    assert (c.auto_compaction_mode, c.auto_compaction_retention) == ("periodic", "0")
    assert (c.log_level, c.log_outputs) == ("info", ["stderr"])
    assert c.watch_progress_notify_interval_s == 600.0
    assert c.unsafe_no_fsync is False and c.enable_grpc_gateway is True
    assert c.quota_bytes() == DEFAULT_QUOTA_BYTES == 2 * 1024**3
    assert c.initial_cluster_map() == {"default": ["http://localhost:2380"]}
    c.validate(bootstrapping=True)


def test_list_defaults_are_not_shared() -> None:
    a, b = ServerConfig(), ServerConfig()
    a.listen_client_urls.append("http://127.0.0.1:1")
    assert b.listen_client_urls == ["http://127.0.0.1:2379"]


def test_data_dir_follows_name_and_layout_is_etcds() -> None:
    c = ServerConfig(name="infra1")
    assert c.data_dir == "infra1.petcd"
    c = ServerConfig(data_dir="/var/lib/x")
    assert c.member_dir() == os.path.join("/var/lib/x", "member")
    assert c.wal_dir() == os.path.join("/var/lib/x", "member", "wal")
    assert c.snap_dir() == os.path.join("/var/lib/x", "member", "snap")
    assert c.backend_path() == os.path.join("/var/lib/x", "member", "snap", "db")


def test_initial_cluster_map_gathers_repeated_names() -> None:
    c = ServerConfig(
        name="a",
        initial_cluster=" a=http://10.0.0.2:2380, b=http://10.0.0.3:2380,a=http://10.0.0.1:2380,,c=http://h:1",
    )
    assert c.initial_cluster_map() == {
        "a": ["http://10.0.0.1:2380", "http://10.0.0.2:2380"],
        "b": ["http://10.0.0.3:2380"],
        "c": ["http://h:1"],
    }


def test_empty_initial_cluster_is_this_member_at_its_advertised_urls() -> None:
    c = ServerConfig(name="n1", initial_advertise_peer_urls=["http://b:2", "http://a:1"])
    assert c.initial_cluster_map() == {"n1": ["http://a:1", "http://b:2"]}


@pytest.mark.parametrize("text", ["a", "=http://x:1", "a=", "a=http://x:1,b"])
def test_malformed_initial_cluster_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="name=url"):
        parse_initial_cluster(text)


def test_election_timeout_must_be_five_heartbeats() -> None:
    with pytest.raises(ConfigError) as e:
        ServerConfig(heartbeat_interval_ms=500).validate(bootstrapping=True)
    assert str(e.value) == "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[500ms]"
    with pytest.raises(ConfigError, match=r"--election-timeout\[60000ms\] is too long"):
        ServerConfig(election_timeout_ms=60000).validate(bootstrapping=True)
    with pytest.raises(ConfigError, match="--heartbeat-interval must be >0"):
        ServerConfig(heartbeat_interval_ms=0).validate(bootstrapping=True)


def test_local_name_must_be_in_the_initial_cluster() -> None:
    c = ServerConfig(name="x", initial_cluster="y=http://localhost:2380")
    with pytest.raises(ConfigError) as e:
        c.validate(bootstrapping=True)
    assert str(e.value) == "couldn't find local name 'x' in the initial cluster configuration"
    c.validate(bootstrapping=False)  # a restarting member takes its membership from disk


def test_advertised_peer_urls_must_match_the_initial_cluster() -> None:
    c = ServerConfig(name="a", initial_cluster="a=http://10.0.0.1:2380",
                     initial_advertise_peer_urls=["http://10.0.0.9:2380"])
    with pytest.raises(ConfigError, match="--initial-cluster has a=http://10.0.0.1:2380 but missing from "
                                          "--initial-advertise-peer-urls=http://10.0.0.9:2380"):
        c.validate(bootstrapping=True)


def test_duplicate_peer_urls_are_refused() -> None:
    c = ServerConfig(name="a", initial_cluster="a=http://localhost:2380,b=http://localhost:2380")
    with pytest.raises(ConfigError, match="has duplicate url"):
        c.validate(bootstrapping=True)


@pytest.mark.parametrize(
    ("field", "url", "message"),
    [
        ("listen_client_urls", "https://127.0.0.1:2379", r"TLS key/cert \(--cert-file, --key-file\) must be provided"),
        ("listen_peer_urls", "https://127.0.0.1:2380", "cannot listen on TLS for 127.0.0.1:2380"),
        ("listen_client_urls", "unixs://sock:1", "unixs URLs are not supported yet"),
        ("listen_client_urls", "ftp://127.0.0.1:2379", "URL scheme must be http, https, unix, or unixs"),
        ("listen_client_urls", "http://127.0.0.1", 'does not have the form "host:port"'),
        ("listen_client_urls", "http://127.0.0.1:2379/v3", "URL must not contain a path"),
        ("listen_client_urls", "http://example.com:2379", "expected IP in URL for binding"),
        ("listen_peer_urls", "http://example.com:2380", "expected IP in URL for binding"),
        ("advertise_client_urls", "unix://sock:1", "not supported yet"),
    ],
)
def test_bad_urls_are_refused(field: str, url: str, message: str) -> None:
    c = ServerConfig()
    setattr(c, field, [url])
    with pytest.raises(ConfigError, match=message):
        c.validate(bootstrapping=True)


def test_advertised_host_names_are_fine() -> None:
    ServerConfig(advertise_client_urls=["http://example.com:2379"]).validate(bootstrapping=True)


def test_unknown_cluster_state_and_log_level_are_refused() -> None:
    with pytest.raises(ConfigError, match="unexpected clusterState 'old'"):
        ServerConfig(initial_cluster_state="old").validate(bootstrapping=True)
    with pytest.raises(ConfigError, match="unknown log level 'loud'"):
        ServerConfig(log_level="loud").validate(bootstrapping=True)


def test_quota_bytes() -> None:
    assert ServerConfig(quota_backend_bytes=1 << 20).quota_bytes() == 1 << 20
    assert ServerConfig(quota_backend_bytes=-1).quota_bytes() == 0


def test_compaction_retention_as_etcd_reads_it() -> None:
    assert ServerConfig(auto_compaction_retention="1").compaction_retention() == 3600.0
    assert ServerConfig(auto_compaction_retention="30m").compaction_retention() == 1800.0
    assert ServerConfig(auto_compaction_mode="revision", auto_compaction_retention="1000").compaction_retention() == 1000
    with pytest.raises(ConfigError, match="unknown auto-compaction-mode 'hourly'"):
        ServerConfig(auto_compaction_mode="hourly").validate(bootstrapping=True)
    with pytest.raises(ConfigError, match="invalid auto-compaction-retention"):
        ServerConfig(auto_compaction_mode="revision", auto_compaction_retention="1h").validate(bootstrapping=True)


def test_go_durations() -> None:
    assert parse_go_duration("10m") == 600.0
    assert parse_go_duration("1h30m") == 5400.0
    assert parse_go_duration("500ms") == 0.5
    assert parse_go_duration("1.5s") == 1.5
    assert parse_go_duration("0") == 0.0
    for bad in ("", "5", "m", "1x", "1h 2m"):
        with pytest.raises(ValueError, match="time: "):
            parse_go_duration(bad)


def test_validate_by_default_checks_bootstrap_only_without_a_wal(tmp_path: Path) -> None:
    c = ServerConfig(name="x", data_dir=str(tmp_path / "d"), initial_cluster="y=http://localhost:2380")
    with pytest.raises(ConfigError, match="couldn't find local name"):
        c.validate()
    os.makedirs(c.wal_dir())
    c.validate()


def test_derived_timings_are_etcds() -> None:
    c = ServerConfig()
    assert c.election_ticks() == 10 and c.tick_seconds() == 0.1
    assert c.request_timeout() == 7.0  # etcd: 5 s + 2 election timeouts
    assert c.min_lease_ttl() == 2  # etcd: ceil(1.5 election timeouts)
    slow = ServerConfig(heartbeat_interval_ms=300, election_timeout_ms=3000)
    assert (slow.election_ticks(), slow.request_timeout(), slow.min_lease_ttl()) == (10, 11.0, 5)


def test_raft_config_is_built_from_the_flags() -> None:
    from petcd.raft import MemoryStorage

    storage = MemoryStorage()
    rc = ServerConfig(heartbeat_interval_ms=50, election_timeout_ms=600).raft_config(
        7, storage, peers=[7, 8], applied=3
    )
    assert (rc.id, rc.peers, rc.applied, rc.storage) == (7, [7, 8], 3, storage)
    assert (rc.election_tick, rc.heartbeat_tick, rc.pre_vote, rc.check_quorum) == (12, 1, True, True)
    assert ServerConfig(pre_vote=False).raft_config(1, storage, peers=[], applied=0).pre_vote is False
    rc.validate()
