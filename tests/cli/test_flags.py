"""The command line as etcd reads it: flags, ETCD_* variables, --config-file,
and refusing what petcd does not know or support."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from petcd.api.grpc_server import keepalive_from
from petcd.server.config import ConfigError, ServerConfig
from petcd.server.flags import FLAGS, UNSUPPORTED, Invocation, UnsupportedError, UsageError, env_name, parse


def serve(argv: list[str], env: dict[str, str] | None = None) -> Invocation:
    inv = parse(argv, env or {})
    assert inv.action == "serve" and inv.config is not None
    return inv


def cfg_of(argv: list[str], env: dict[str, str] | None = None) -> ServerConfig:
    cfg = serve(argv, env).config
    assert cfg is not None
    return cfg


def test_no_flags_gives_the_defaults() -> None:
    assert cfg_of([]) == ServerConfig()


def test_both_flag_spellings_and_single_dash() -> None:
    a = cfg_of(["--name", "n1", "--snapshot-count=5", "-heartbeat-interval", "50", "-election-timeout=600"])
    assert (a.name, a.snapshot_count, a.heartbeat_interval_ms, a.election_timeout_ms) == ("n1", 5, 50, 600)
    assert a.data_dir == "n1.petcd"
    assert a.initial_cluster_map() == {"n1": ["http://localhost:2380"]}


def test_every_setting_from_flags() -> None:
    c = cfg_of([
        "--name", "m1", "--data-dir", "/tmp/x", "--listen-client-urls", "http://127.0.0.1:1,http://127.0.0.1:2",
        "--advertise-client-urls", "http://h:1", "--listen-peer-urls", "http://127.0.0.1:3",
        "--initial-advertise-peer-urls", "http://h:3", "--initial-cluster", "m1=http://h:3,m2=http://g:3",
        "--initial-cluster-state", "new", "--initial-cluster-token", "tok",
        "--max-request-bytes", "100", "--quota-backend-bytes", "4096", "--max-txn-ops", "7",
        "--auto-compaction-mode", "revision", "--auto-compaction-retention", "10", "--log-level", "warn",
        "--logger", "zap", "--log-outputs", "stdout,default", "--experimental-watch-progress-notify-interval", "5s",
        "--enable-grpc-gateway=false", "--unsafe-no-fsync",
    ])
    assert c.listen_client_urls == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    assert c.advertise_client_urls == ["http://h:1"] and c.listen_peer_urls == ["http://127.0.0.1:3"]
    assert c.initial_cluster_map() == {"m1": ["http://h:3"], "m2": ["http://g:3"]}
    assert (c.initial_cluster_state, c.initial_cluster_token) == ("new", "tok")
    assert (c.max_request_bytes, c.quota_backend_bytes, c.max_txn_ops) == (100, 4096, 7)
    assert (c.auto_compaction_mode, c.auto_compaction_retention, c.log_level) == ("revision", "10", "warn")
    assert c.log_outputs == ["stdout", "stderr"]
    assert c.watch_progress_notify_interval_s == 5.0
    assert c.enable_grpc_gateway is False and c.unsafe_no_fsync is True
    assert c.data_dir == "/tmp/x"


def test_bool_flags_take_values_only_after_equals_as_in_go() -> None:
    assert cfg_of(["--unsafe-no-fsync=true"]).unsafe_no_fsync is True
    assert cfg_of(["--unsafe-no-fsync=0"]).unsafe_no_fsync is False
    with pytest.raises(UsageError, match="'false' is not a valid flag"):
        parse(["--unsafe-no-fsync", "false"], {})
    with pytest.raises(UsageError, match="invalid boolean value 'maybe'"):
        parse(["--unsafe-no-fsync=maybe"], {})


def test_env_vars_apply_and_flags_win() -> None:
    env = {"ETCD_NAME": "fromenv", "ETCD_SNAPSHOT_COUNT": "7", "ETCD_LISTEN_CLIENT_URLS": "http://127.0.0.1:9",
           "ETCD_ADVERTISE_CLIENT_URLS": "http://h:9", "ETCD_UNSAFE_NO_FSYNC": "true"}
    c = cfg_of([], env)
    assert (c.name, c.snapshot_count, c.unsafe_no_fsync) == ("fromenv", 7, True)
    assert c.listen_client_urls == ["http://127.0.0.1:9"]
    inv = serve(["--name", "fromflag"], env)
    assert inv.config is not None and inv.config.name == "fromflag" and inv.config.snapshot_count == 7
    assert (logging.WARNING, "recognized environment variable ETCD_NAME, but unused: shadowed by corresponding flag") \
        in inv.notices


def test_every_supported_flag_has_its_env_var() -> None:
    assert env_name("experimental-watch-progress-notify-interval") == "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL"
    c = cfg_of([], {"ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL": "1m", "ETCD_MAX_TXN_OPS": "3"})
    assert c.watch_progress_notify_interval_s == 60.0 and c.max_txn_ops == 3
    assert all(env_name(n).startswith("ETCD_") for n in FLAGS)


def test_unknown_env_var_is_warned_about() -> None:
    inv = serve([], {"ETCD_NAMEE": "x", "ETCD_UNSUPPORTED_ARCH": "arm", "ETCDCTL_API": "3"})
    warnings = [m for lvl, m in inv.notices if lvl == logging.WARNING]
    assert warnings == ["unrecognized environment variable ETCD_NAMEE=x"]


def test_unsupported_env_var_is_refused() -> None:
    with pytest.raises(UnsupportedError, match=r"flag --client-crl-file is not supported yet \(from ETCD_CLIENT_CRL_FILE\)"):
        parse([], {"ETCD_CLIENT_CRL_FILE": "/x.pem"})


def test_unknown_flag_is_a_usage_error_naming_it() -> None:
    with pytest.raises(UsageError) as e:
        parse(["--name", "x", "--foo", "1"], {})
    assert str(e.value) == "unknown flag: --foo"
    assert not isinstance(e.value, UnsupportedError)


@pytest.mark.parametrize("argv", [["--client-crl-file", "/c"], ["--peer-crl-file=/k"],
                                  ["--discovery", "https://d"], ["--enable-v2"],
                                  ["--force-new-cluster"],
                                  ["--proxy", "on"], ["--cors", "example.com"]])
def test_unsupported_etcd_flags_are_refused(argv: list[str]) -> None:
    name = argv[0].lstrip("-").split("=")[0]
    with pytest.raises(UnsupportedError) as e:
        parse(argv, {})
    assert str(e.value) == f"flag --{name} is not supported yet"


def test_unsupported_flags_at_etcds_default_are_accepted() -> None:
    c = cfg_of(["--enable-v2=false", "--auth-token", "simple", "--max-snapshots", "5", "--cert-file=",
                "--grpc-keepalive-timeout", "20s", "--pre-vote", "--proxy", "off"])
    assert c == ServerConfig()


def test_broad_list_of_etcd_flags_is_known() -> None:
    for name in ("client-crl-file", "peer-crl-file",
                 "peer-cert-allowed-hostname", "discovery", "discovery-srv", "proxy", "enable-v2",
                 "cors", "force-new-cluster", "strict-reconfig-check",
                 "experimental-initial-corrupt-check", "max-wals", "max-concurrent-streams"):
        assert name in UNSUPPORTED
    for name in ("cipher-suites", "tls-min-version", "tls-max-version"):
        assert name in FLAGS
    assert not set(UNSUPPORTED) & set(FLAGS)


def test_tls_version_and_cipher_flags() -> None:
    c = cfg_of(["--cipher-suites", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                "--tls-min-version", "TLS1.2", "--tls-max-version", "TLS1.3"])
    assert c.cipher_suites == ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]
    assert (c.tls_min_version, c.tls_max_version) == ("TLS1.2", "TLS1.3")
    assert (ServerConfig().tls_min_version, ServerConfig().tls_max_version, ServerConfig().cipher_suites) == \
        ("TLS1.2", "", [])


def test_tls_version_and_cipher_keys_in_a_config_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yml"
    f.write_text("cipher-suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_RSA_WITH_AES_128_GCM_SHA256]\n"
                 "tls-min-version: TLS1.2\ntls-max-version: TLS1.3\n")
    c = cfg_of(["--config-file", str(f)])
    assert c.cipher_suites == ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_RSA_WITH_AES_128_GCM_SHA256"]
    assert (c.tls_min_version, c.tls_max_version) == ("TLS1.2", "TLS1.3")


def test_grpc_keepalive_flags_take_go_durations() -> None:
    d = ServerConfig()
    assert (d.grpc_keepalive_min_time_s, d.grpc_keepalive_interval_s, d.grpc_keepalive_timeout_s) == (5.0, 7200.0, 20.0)
    c = cfg_of(["--grpc-keepalive-min-time", "100ms", "--grpc-keepalive-interval=1h30m"],
               {"ETCD_GRPC_KEEPALIVE_TIMEOUT": "2.5s"})
    assert (c.grpc_keepalive_min_time_s, c.grpc_keepalive_interval_s, c.grpc_keepalive_timeout_s) == (0.1, 5400.0, 2.5)
    ka = keepalive_from(c)
    assert (ka.min_time, ka.interval, ka.timeout) == (0.1, 5400.0, 2.5)
    with pytest.raises(UsageError, match="time: missing unit"):
        parse(["--grpc-keepalive-min-time", "5"], {})


def test_grpc_keepalive_zero_leaves_grpcs_defaults() -> None:
    """etcd hands 0 to grpc-go as "not set": grpc-go's 5 minute ping policy,
    and its 2 h / 20 s server pings (never a ping loop with no delay)."""
    ka = keepalive_from(cfg_of(["--grpc-keepalive-min-time=0s", "--grpc-keepalive-interval=0s"]))
    assert (ka.min_time, ka.interval, ka.timeout) == (300.0, 7200.0, 20.0)


def test_grpc_keepalive_from_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "etcd.yaml"
    conf.write_text("grpc-keepalive-min-time: 1s\ngrpc-keepalive-timeout: 3000000000\n")
    c = cfg_of(["--config-file", str(conf)])
    assert (c.grpc_keepalive_min_time_s, c.grpc_keepalive_timeout_s) == (1.0, 3.0)


def test_listen_metrics_urls() -> None:
    assert cfg_of([]).listen_metrics_urls == []
    assert cfg_of(["--listen-metrics-urls", "http://127.0.0.1:1,http://127.0.0.1:2"]).listen_metrics_urls == [
        "http://127.0.0.1:1", "http://127.0.0.1:2"]


def test_metrics_level() -> None:
    """--metrics basic|extensive; etcd takes any other word as basic."""
    assert cfg_of([]).metrics == "basic"
    assert cfg_of(["--metrics", "extensive"]).metrics == "extensive"
    assert cfg_of([]) == cfg_of(["--metrics=basic"])
    assert cfg_of(["--metrics", "bogus"]).metrics == "bogus"


def test_missing_value_and_bad_number() -> None:
    with pytest.raises(UsageError, match="flag needs an argument: --name"):
        parse(["--name"], {})
    with pytest.raises(UsageError, match="invalid value 'lots' for flag --snapshot-count"):
        parse(["--snapshot-count", "lots"], {})
    with pytest.raises(UsageError, match="invalid value 'x' for ETCD_MAX_TXN_OPS"):
        parse([], {"ETCD_MAX_TXN_OPS": "x"})
    with pytest.raises(UsageError, match="time: missing unit"):
        parse(["--experimental-watch-progress-notify-interval", "10"], {})
    with pytest.raises(UsageError, match="valid values are new, existing"):
        parse(["--initial-cluster-state", "old"], {})


def test_stray_argument_is_not_a_valid_flag() -> None:
    with pytest.raises(UsageError, match="'serve' is not a valid flag"):
        parse(["--name", "x", "serve"], {})


def test_version_help_and_snapshot_actions() -> None:
    assert parse(["--version"], {}).action == "version"
    assert parse(["--version=false", "--name", "x"], {}).action == "serve"
    assert parse(["-h"], {}).action == "help"
    assert parse(["--name", "x", "--help"], {}).action == "help"
    inv = parse(["snapshot", "status", "f.db"], {})
    assert (inv.action, inv.args) == ("snapshot", ["status", "f.db"])
    with pytest.raises(UnsupportedError, match="grpc-proxy command is not supported yet"):
        parse(["grpc-proxy", "start"], {})


def test_listen_client_urls_needs_advertise_client_urls_as_in_etcd() -> None:
    with pytest.raises(ConfigError, match="--advertise-client-urls is required when --listen-client-urls is set"):
        parse(["--listen-client-urls", "http://127.0.0.1:1"], {})
    with pytest.raises(ConfigError, match="--advertise-client-urls is required"):
        parse([], {"ETCD_LISTEN_CLIENT_URLS": "http://127.0.0.1:1"})


def test_config_errors_come_from_validation() -> None:
    with pytest.raises(ConfigError, match="couldn't find local name 'x'"):
        parse(["--name", "x", "--initial-cluster", "y=http://localhost:2380"], {})


def test_wal_dir_only_at_its_default() -> None:
    assert cfg_of(["--data-dir", "/d", "--wal-dir", "/d/member/wal"]).data_dir == "/d"
    with pytest.raises(UnsupportedError, match="--wal-dir is not supported yet"):
        parse(["--data-dir", "/d", "--wal-dir", "/elsewhere"], {})


def test_logger_zap_accepted_capnslog_warned_other_refused() -> None:
    assert serve(["--logger", "zap"]).notices == []
    assert any(lvl == logging.WARNING for lvl, _ in serve(["--logger=capnslog"]).notices)
    with pytest.raises(UsageError, match="invalid --logger option 'syslog'"):
        parse(["--logger", "syslog"], {})


def test_snapshot_count_zero_means_default_as_in_etcd() -> None:
    assert cfg_of(["--snapshot-count", "0"]).snapshot_count == 100000


# ---- config file ------------------------------------------------------------------

ETCD_SAMPLE = """\
# etcd's sample configuration (etcd.conf.yml), with values petcd supports
name: 'infra9'
data-dir: {data_dir}
wal-dir:
snapshot-count: 10000
heartbeat-interval: 100
election-timeout: 1000
quota-backend-bytes: 0
listen-peer-urls: http://localhost:2380
listen-client-urls: http://localhost:2379
max-snapshots: 5
max-wals: 5
cors:
initial-advertise-peer-urls: http://localhost:2380
advertise-client-urls: http://localhost:2379
discovery:
discovery-fallback: 'proxy'
discovery-proxy:
discovery-srv:
initial-cluster:
initial-cluster-token: 'etcd-cluster'
initial-cluster-state: 'new'
strict-reconfig-check: false
enable-v2: false
enable-pprof: false
proxy: 'off'
proxy-failure-wait: 5000
proxy-refresh-interval: 30000
proxy-dial-timeout: 1000
proxy-write-timeout: 5000
proxy-read-timeout: 0
client-transport-security:
  cert-file:
  key-file:
  client-cert-auth: false
  trusted-ca-file:
  auto-tls: false
peer-transport-security:
  cert-file:
  key-file:
  client-cert-auth: false
  trusted-ca-file:
  auto-tls: false
debug: false
log-package-levels:
log-outputs: [default]
force-new-cluster: false
"""


def test_etcds_sample_config_file_loads(tmp_path: Path) -> None:
    f = tmp_path / "etcd.conf.yml"
    # strict-reconfig-check: false differs from etcd's default, so it is not in petcd's sample
    f.write_text(ETCD_SAMPLE.format(data_dir=tmp_path / "d").replace("strict-reconfig-check: false\n", ""))
    c = cfg_of(["--config-file", str(f)])
    assert (c.name, c.data_dir, c.snapshot_count) == ("infra9", str(tmp_path / "d"), 10000)
    assert c.listen_client_urls == ["http://localhost:2379"] and c.log_outputs == ["stderr"]
    assert c.initial_cluster_map() == {"infra9": ["http://localhost:2380"]}


def test_config_file_wins_over_flags_and_env(tmp_path: Path) -> None:
    f = tmp_path / "c.yml"
    f.write_text("name: fromfile\nheartbeat-interval: 50\nelection-timeout: 500\n"
                 "experimental-watch-progress-notify-interval: 2000000000\nlog-outputs: [stdout]\n"
                 "unsafe-no-fsync: true\n")
    inv = serve(["--config-file", str(f), "--name", "fromflag", "--snapshot-count", "9"],
                {"ETCD_NAME": "fromenv", "ETCD_MAX_TXN_OPS": "3"})
    c = inv.config
    assert c is not None
    assert (c.name, c.snapshot_count, c.max_txn_ops) == ("fromfile", 100000, 128)
    assert (c.heartbeat_interval_ms, c.election_timeout_ms) == (50, 500)
    assert c.watch_progress_notify_interval_s == 2.0 and c.log_outputs == ["stdout"] and c.unsafe_no_fsync
    assert any("other configuration command line flags and environment variables are ignored" in m
               for _, m in inv.notices)
    # ETCD_CONFIG_FILE names the file too
    assert cfg_of([], {"ETCD_CONFIG_FILE": str(f), "ETCD_NAME": "fromenv"}).name == "fromfile"


def test_config_file_still_rejects_unknown_flags(tmp_path: Path) -> None:
    f = tmp_path / "c.yml"
    f.write_text("name: x\n")
    with pytest.raises(UsageError, match="unknown flag: --bogus"):
        parse(["--config-file", str(f), "--bogus"], {})


def test_config_file_refuses_unsupported_and_unknown_keys(tmp_path: Path) -> None:
    f = tmp_path / "c.yml"
    f.write_text("client-transport-security:\n  crl-file: /x.pem\n")
    with pytest.raises(UnsupportedError, match="flag --client-crl-file is not supported yet"):
        parse(["--config-file", str(f)], {})
    f.write_text("peer-transport-security:\n  allowed-hostname: m1.example\n")
    with pytest.raises(UnsupportedError, match="flag --peer-cert-allowed-hostname is not supported yet"):
        parse(["--config-file", str(f)], {})
    f.write_text("enable-v2: true\n")
    with pytest.raises(UnsupportedError, match="flag --enable-v2 is not supported yet"):
        parse(["--config-file", str(f)], {})
    f.write_text("heartbeat_interval: 100\n")
    with pytest.raises(ConfigError, match="unknown key 'heartbeat_interval'"):
        parse(["--config-file", str(f)], {})


def test_unreadable_or_malformed_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        parse(["--config-file", str(tmp_path / "missing.yml")], {})
    f = tmp_path / "bad.yml"
    f.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot parse config file"):
        parse(["--config-file", str(f)], {})
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a YAML mapping"):
        parse(["--config-file", str(f)], {})


def test_initial_cluster_state_existing_is_accepted(tmp_path: Path) -> None:
    d = tmp_path / "d"
    assert cfg_of(["--data-dir", str(d), "--initial-cluster-state", "existing"]).initial_cluster_state == "existing"


def test_flag_defaults_and_choices_are_the_configs() -> None:
    """What --help shows as a default is what ServerConfig starts with, and
    a flag's choices are the ones ServerConfig.validate accepts."""
    from petcd.server import config as server_config

    # the defaults that are templates, not values
    templated = {"data-dir", "initial-cluster"}
    defaults = ServerConfig()
    for flag in FLAGS.values():
        if flag.attr is None or flag.name in templated:
            continue
        want = getattr(defaults, flag.attr)
        shown = cfg_of([f"--{flag.name}={flag.default}"] if flag.kind == "bool" else [f"--{flag.name}", flag.default],
                       {"ETCD_ADVERTISE_CLIENT_URLS": "http://localhost:2379"}
                       if flag.name == "listen-client-urls" else None)
        assert getattr(shown, flag.attr) == want, flag.name
    assert FLAGS["log-level"].choices == server_config.LOG_LEVELS
    assert FLAGS["initial-cluster-state"].choices == server_config.CLUSTER_STATES
    assert FLAGS["auto-compaction-mode"].choices == server_config.COMPACTION_MODES


def test_pre_vote_flag_reaches_the_raft_config() -> None:
    from petcd.raft import MemoryStorage

    off = cfg_of(["--pre-vote=false"])
    assert off.pre_vote is False
    assert off.raft_config(1, MemoryStorage(), peers=[1], applied=0).pre_vote is False
    on = cfg_of(["--pre-vote"])
    assert on.pre_vote is True and on.raft_config(1, MemoryStorage(), peers=[1], applied=0).pre_vote is True
    assert cfg_of([], {"ETCD_PRE_VOTE": "false"}).pre_vote is False


def test_peer_tls_flags_reach_the_config(tmp_path: Path) -> None:
    peer = ["--listen-peer-urls", "https://127.0.0.1:2380", "--initial-advertise-peer-urls", "https://127.0.0.1:2380"]
    c = cfg_of([*peer, "--peer-cert-file", "/c.pem", "--peer-key-file=/k.pem", "--peer-trusted-ca-file", "/ca.pem",
                "--peer-client-cert-auth", "--peer-cert-allowed-cn", "m1"])
    assert (c.peer_cert_file, c.peer_key_file, c.peer_trusted_ca_file) == ("/c.pem", "/k.pem", "/ca.pem")
    assert c.peer_client_cert_auth and c.peer_cert_allowed_cn == "m1" and not c.peer_auto_tls
    assert cfg_of(peer, {"ETCD_PEER_AUTO_TLS": "true"}).peer_auto_tls
    f = tmp_path / "c.yml"
    f.write_text("listen-peer-urls: https://127.0.0.1:2380\ninitial-advertise-peer-urls: https://127.0.0.1:2380\n"
                 "peer-transport-security:\n  cert-file: /c.pem\n  key-file: /k.pem\n  trusted-ca-file: /ca.pem\n"
                 "  client-cert-auth: true\n  allowed-cn: m1\n  auto-tls: false\n")
    c = cfg_of(["--config-file", str(f)])
    assert (c.peer_cert_file, c.peer_key_file, c.peer_trusted_ca_file) == ("/c.pem", "/k.pem", "/ca.pem")
    assert c.peer_client_cert_auth and c.peer_cert_allowed_cn == "m1"


def test_https_peer_urls_need_a_certificate() -> None:
    peer = ["--listen-peer-urls", "https://127.0.0.1:2380", "--initial-advertise-peer-urls", "https://127.0.0.1:2380"]
    with pytest.raises(ConfigError, match="^cannot listen on TLS for 127.0.0.1:2380: KeyFile and CertFile are not presented$"):
        parse(peer, {})
    with pytest.raises(ConfigError, match=re.escape("KeyFile and CertFile must both be present[key: /k, cert: ]")):
        parse(["--peer-key-file=/k"], {})
    client = ["--listen-client-urls", "https://127.0.0.1:2379", "--advertise-client-urls", "https://127.0.0.1:2379"]
    with pytest.raises(ConfigError, match=re.escape("TLS key/cert (--cert-file, --key-file) must be provided for "
                                                    "client url https://127.0.0.1:2379 with HTTPS scheme")):
        parse(client, {})
    c = cfg_of([*client, "--cert-file", "/c.pem", "--key-file", "/k.pem", "--trusted-ca-file", "/ca.pem",
                "--client-cert-auth"])
    assert (c.cert_file, c.key_file, c.trusted_ca_file, c.client_cert_auth) == ("/c.pem", "/k.pem", "/ca.pem", True)
    assert cfg_of(client, {"ETCD_AUTO_TLS": "true"}).auto_tls
