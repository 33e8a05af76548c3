"""The `petcd` command line: etcd 3.4's flags, ETCD_* variables and --config-file,
turned into a ServerConfig. It sits here, with ServerConfig, rather than in
petcd.cli, because both the command (petcd.cli) and an in-process member
(petcd.embed.member) start a member from the same command line.

Sources, as in etcd: a config file (--config-file or ETCD_CONFIG_FILE), when
given, is the only source and every other flag and variable is ignored (with
a notice); otherwise command-line flags win over ETCD_* environment
variables, which win over the defaults.

Flags follow Go's flag package, which etcd uses: ``-flag`` or ``--flag``,
``--flag value`` or ``--flag=value``; a boolean flag takes its value only
after ``=`` (``--flag`` alone means true); the first argument that is not a
flag ends the flags.

Nothing is ever silently ignored: an unknown flag is a usage error, and an
etcd flag petcd does not implement yet is refused, unless its value is
etcd's default (a config file listing defaults asks for nothing petcd lacks).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from petcd.server.config import (
    CLUSTER_STATES,
    COMPACTION_MODES,
    DEFAULT_SNAPSHOT_COUNT,
    LOG_LEVELS,
    ConfigError,
    ServerConfig,
    parse_go_duration,
)

ENV_PREFIX = "ETCD_"

# ETCD_* variables that are not flags but are etcd's own, so no warning.
_ENV_NOT_FLAGS = frozenset({"ETCD_UNSUPPORTED_ARCH"})


class UsageError(Exception):
    """A command line (or environment, or config file) petcd cannot parse or
    does not support; the command exits with status 2."""


class UnsupportedError(UsageError):
    """An etcd option petcd does not implement yet."""


@dataclass(frozen=True, slots=True)
class Flag:
    """A flag petcd implements: its etcd name, the ServerConfig field it
    sets (None for the ones the parser handles itself), its kind and the
    default shown in --help."""

    name: str
    attr: str | None
    kind: str  # str | int | bool | list | duration
    default: str
    help: str
    choices: tuple[str, ...] = ()


FLAGS: dict[str, Flag] = {
    f.name: f
    for f in (
        Flag("name", "name", "str", "default", "Human-readable name for this member."),
        Flag("data-dir", "data_dir", "str", "${name}.petcd", "Path to the data directory."),
        Flag("wal-dir", None, "str", "", "Path to the dedicated wal directory (only the default, <data-dir>/member/wal, yet)."),
        Flag("snapshot-count", "snapshot_count", "int", "100000", "Number of committed transactions to trigger a snapshot to disk."),
        Flag("heartbeat-interval", "heartbeat_interval_ms", "int", "100", "Time (in milliseconds) of a heartbeat interval."),
        Flag("election-timeout", "election_timeout_ms", "int", "1000", "Time (in milliseconds) for an election to timeout."),
        Flag("listen-peer-urls", "listen_peer_urls", "list", "http://127.0.0.1:2380", "List of URLs to listen on for peer traffic."),
        Flag("listen-client-urls", "listen_client_urls", "list", "http://127.0.0.1:2379", "List of URLs to listen on for client traffic."),
        Flag("quota-backend-bytes", "quota_backend_bytes", "int", "0", "Raise alarms when backend size exceeds the given quota (0 defaults to 2 GiB)."),
        Flag("max-txn-ops", "max_txn_ops", "int", "128", "Maximum number of operations permitted in a transaction."),
        Flag("max-request-bytes", "max_request_bytes", "int", "1572864", "Maximum client request size in bytes the server will accept."),
        Flag("initial-advertise-peer-urls", "initial_advertise_peer_urls", "list", "http://localhost:2380",
             "List of this member's peer URLs to advertise to the rest of the cluster."),
        Flag("initial-cluster", "initial_cluster", "str", "${name}=${initial-advertise-peer-urls}",
             "Initial cluster configuration for bootstrapping."),
        Flag("initial-cluster-state", "initial_cluster_state", "str", "new", "Initial cluster state ('new' or 'existing').",
             CLUSTER_STATES),
        Flag("initial-cluster-token", "initial_cluster_token", "str", "etcd-cluster", "Initial cluster token for the cluster during bootstrap."),
        Flag("advertise-client-urls", "advertise_client_urls", "list", "http://localhost:2379",
             "List of this member's client URLs to advertise to the public."),
        Flag("auto-compaction-retention", "auto_compaction_retention", "str", "0",
             "Auto compaction retention length. 0 means disable auto compaction."),
        Flag("auto-compaction-mode", "auto_compaction_mode", "str", "periodic",
             "Interpret 'auto-compaction-retention' one of: periodic|revision.", COMPACTION_MODES),
        Flag("logger", None, "str", "zap", "petcd always logs zap's JSON lines; 'zap' (or 'capnslog', with a warning)."),
        Flag("log-outputs", "log_outputs", "list", "stderr", "'stderr', 'stdout', 'default' (stderr) or file paths, comma separated."),
        Flag("log-level", "log_level", "str", "info", "Configures log level. Only supports debug, info, warn, error, panic, or fatal.",
             LOG_LEVELS),
        Flag("experimental-watch-progress-notify-interval", "watch_progress_notify_interval_s", "duration", "10m",
             "Duration of periodical watch progress notification."),
        Flag("grpc-keepalive-min-time", "grpc_keepalive_min_time_s", "duration", "5s",
             "Minimum interval duration that a client should wait before pinging server."),
        Flag("grpc-keepalive-interval", "grpc_keepalive_interval_s", "duration", "2h",
             "Frequency duration of server-to-client ping to check if a connection is alive (0 to disable)."),
        Flag("grpc-keepalive-timeout", "grpc_keepalive_timeout_s", "duration", "20s",
             "Additional duration of wait before closing a non-responsive connection (0 to disable)."),
        Flag("enable-grpc-gateway", "enable_grpc_gateway", "bool", "true", "Enable GRPC gateway."),
        Flag("metrics", "metrics", "str", "basic",
             "Set level of detail for exported metrics, specify 'extensive' to include histogram metrics."),
        Flag("pre-vote", "pre_vote", "bool", "true",
             "Enable to run an additional Raft election phase (etcd 3.4's default is false; petcd's is true)."),
        Flag("listen-metrics-urls", "listen_metrics_urls", "list", "",
             "List of URLs to listen on for the metrics and health endpoints."),
        Flag("unsafe-no-fsync", "unsafe_no_fsync", "bool", "false", "Disables fsync, unsafe, will cause data loss."),
        Flag("auth-token", "auth_token", "str", "simple",
             "Specify a v3 authentication token type and its options ('simple' or 'jwt')."),
        Flag("bcrypt-cost", "bcrypt_cost", "int", "10",
             "Specify the cost / strength of the bcrypt algorithm for hashing auth passwords. Valid values are between 4 and 31."),
        Flag("auth-token-ttl", "auth_token_ttl", "int", "300", "Time (in seconds) of the auth-token-ttl."),
        # TLS versions and cipher suites, both ports (etcd 3.5's flags)
        Flag("cipher-suites", "cipher_suites", "list", "",
             "Comma-separated list of supported TLS cipher suites between client/server and peers (empty: OpenSSL's defaults)."),
        Flag("tls-min-version", "tls_min_version", "str", "TLS1.2",
             "Minimum TLS version supported by petcd. Possible values: TLS1.2, TLS1.3."),
        Flag("tls-max-version", "tls_max_version", "str", "",
             "Maximum TLS version supported by petcd. Possible values: TLS1.2, TLS1.3 (empty: the highest there is)."),
        # TLS for clients (https:// client URLs)
        Flag("cert-file", "cert_file", "str", "", "The client port's certificate (PEM)."),
        Flag("key-file", "key_file", "str", "", "The private key of --cert-file (PEM)."),
        Flag("trusted-ca-file", "trusted_ca_file", "str", "",
             "CA certificates (PEM) that client certificates must chain to (default: the system's)."),
        Flag("client-cert-auth", "client_cert_auth", "bool", "false",
             "Accept a client connection only with a client certificate that verifies."),
        Flag("auto-tls", "auto_tls", "bool", "false",
             "Without --cert-file/--key-file, make a self-signed certificate for the client port."),
        # TLS between members (https:// peer URLs)
        Flag("peer-cert-file", "peer_cert_file", "str", "",
             "This member's certificate for peer connections (PEM), presented as server and as client."),
        Flag("peer-key-file", "peer_key_file", "str", "", "The private key of --peer-cert-file (PEM)."),
        Flag("peer-trusted-ca-file", "peer_trusted_ca_file", "str", "",
             "CA certificates (PEM) that other members' certificates must chain to (default: the system's)."),
        Flag("peer-client-cert-auth", "peer_client_cert_auth", "bool", "false",
             "Accept a peer connection only with a client certificate that verifies."),
        Flag("peer-cert-allowed-cn", "peer_cert_allowed_cn", "str", "",
             "Accept only peers whose certificate has this common name."),
        Flag("peer-auto-tls", "peer_auto_tls", "bool", "false",
             "Without --peer-cert-file/--peer-key-file, make a self-signed peer certificate (peers are not verified)."),
        Flag("config-file", None, "str", "", "Path to the server configuration file (then other flags and ETCD_* variables are ignored)."),
        Flag("version", None, "bool", "false", "Print the version and exit."),
    )
}


@dataclass(frozen=True, slots=True)
class Unsupported:
    """An etcd flag petcd does not implement yet. ``default`` is etcd's
    default, which is accepted (it asks for nothing petcd lacks); also_ok
    lists other values that describe what petcd does anyway."""

    name: str
    kind: str  # str | int | bool | duration
    default: str
    also_ok: tuple[str, ...] = ()


_UNSUPPORTED_LIST = (
    # member
    Unsupported("initial-election-tick-advance", "bool", "true"),
    Unsupported("max-snapshots", "int", "5"),
    Unsupported("max-wals", "int", "5"),
    Unsupported("backend-batch-interval", "duration", ""),
    Unsupported("backend-batch-limit", "int", "0"),
    Unsupported("backend-bbolt-freelist-type", "str", "array"),
    Unsupported("max-concurrent-streams", "int", "4294967295"),
    Unsupported("socket-reuse-port", "bool", "false"),
    Unsupported("socket-reuse-address", "bool", "false"),
    Unsupported("listen-client-http-urls", "str", ""),
    # clustering
    Unsupported("discovery", "str", ""),
    Unsupported("discovery-fallback", "str", "proxy"),
    Unsupported("discovery-proxy", "str", ""),
    Unsupported("discovery-srv", "str", ""),
    Unsupported("discovery-srv-name", "str", ""),
    Unsupported("strict-reconfig-check", "bool", "true"),
    Unsupported("enable-v2", "bool", "false"),
    # security
    Unsupported("client-crl-file", "str", ""),
    Unsupported("client-cert-allowed-hostname", "str", ""),
    Unsupported("peer-cert-allowed-hostname", "str", ""),
    Unsupported("peer-crl-file", "str", ""),
    Unsupported("self-signed-cert-validity", "int", "1"),
    Unsupported("cors", "str", "*"),
    Unsupported("host-whitelist", "str", "*"),
    # profiling and monitoring
    Unsupported("enable-pprof", "bool", "false"),
    # logging (deprecated in etcd)
    Unsupported("debug", "bool", "false"),
    Unsupported("log-package-levels", "str", ""),
    Unsupported("enable-log-rotation", "bool", "false"),
    Unsupported("log-rotation-config-json", "str", ""),
    # v2 proxy
    Unsupported("proxy", "str", "off"),
    Unsupported("proxy-failure-wait", "int", "5000"),
    Unsupported("proxy-refresh-interval", "int", "30000"),
    Unsupported("proxy-dial-timeout", "int", "1000"),
    Unsupported("proxy-write-timeout", "int", "5000"),
    Unsupported("proxy-read-timeout", "int", "0"),
    # experimental
    Unsupported("experimental-initial-corrupt-check", "bool", "false"),
    Unsupported("experimental-corrupt-check-time", "duration", "0s"),
    Unsupported("experimental-enable-v2v3", "str", ""),
    Unsupported("experimental-backend-bbolt-freelist-type", "str", "array"),
    Unsupported("experimental-enable-lease-checkpoint", "bool", "false"),
    Unsupported("experimental-compaction-batch-limit", "int", "1000"),
    Unsupported("experimental-peer-skip-client-san-verification", "bool", "false"),
    Unsupported("experimental-warning-apply-duration", "duration", "100ms"),
    Unsupported("experimental-memory-mlock", "bool", "false"),
    Unsupported("experimental-txn-mode-write-with-shared-buffer", "bool", "true"),
    Unsupported("experimental-enable-distributed-tracing", "bool", "false"),
    # unsafe
    Unsupported("force-new-cluster", "bool", "false"),
)
UNSUPPORTED: dict[str, Unsupported] = {u.name: u for u in _UNSUPPORTED_LIST}

# etcd's YAML nests the TLS flags in two sections; key -> the flag it stands for.
_TLS_SECTIONS: dict[str, dict[str, str]] = {
    "client-transport-security": {
        "cert-file": "cert-file",
        "key-file": "key-file",
        "client-cert-auth": "client-cert-auth",
        "trusted-ca-file": "trusted-ca-file",
        "auto-tls": "auto-tls",
        "crl-file": "client-crl-file",
        "allowed-hostname": "client-cert-allowed-hostname",
    },
    "peer-transport-security": {
        "cert-file": "peer-cert-file",
        "key-file": "peer-key-file",
        "client-cert-auth": "peer-client-cert-auth",
        "trusted-ca-file": "peer-trusted-ca-file",
        "auto-tls": "peer-auto-tls",
        "crl-file": "peer-crl-file",
        "allowed-cn": "peer-cert-allowed-cn",
        "allowed-hostname": "peer-cert-allowed-hostname",
    },
}


@dataclass(slots=True)
class Invocation:
    """What the command line asks for. ``action`` is serve, version, help or
    snapshot; ``config`` is set for serve, ``args`` for snapshot. ``notices``
    are (logging level, message) pairs to log once logging is set up."""

    action: str
    config: ServerConfig | None = None
    args: list[str] = field(default_factory=list)
    notices: list[tuple[int, str]] = field(default_factory=list)


@dataclass(slots=True)
class _Value:
    """One setting as given: its raw text (or YAML value) and where from."""

    raw: Any
    source: str  # "flag --x", "ETCD_X", "config file key x"


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> Invocation:
    """Turn argv (without the program name) and the environment into an
    Invocation. Raises UsageError (exit 2) or ConfigError (exit 1)."""
    args = list(argv)
    if args and args[0] == "snapshot":
        return Invocation("snapshot", args=args[1:])
    if args and args[0] in ("gateway", "grpc-proxy"):
        raise UnsupportedError(f"the {args[0]} command is not supported yet")
    flags, rest = _scan_flags(args)
    if "help" in flags:
        return Invocation("help")
    if rest:
        raise UsageError(f"'{rest[0]}' is not a valid flag")
    if "version" in flags and _to_bool(flags["version"].raw, flags["version"].source):
        return Invocation("version")

    notices: list[tuple[int, str]] = []
    config_file = flags["config-file"].raw if "config-file" in flags else environ.get("ETCD_CONFIG_FILE", "")
    if config_file:
        values = _load_config_file(config_file)
        notices.append((logging.INFO, f"loaded server configuration from {config_file!r}; other configuration "
                                      "command line flags and environment variables are ignored if provided"))
        explicit_listen = False
    else:
        values = dict(flags)
        _merge_environment(values, environ, notices)
        explicit_listen = "listen-client-urls" in values and "advertise-client-urls" not in values
    values.pop("version", None)
    values.pop("config-file", None)
    cfg = _build_config(values, notices)
    if explicit_listen:
        raise ConfigError("--advertise-client-urls is required when --listen-client-urls is set explicitly")
    cfg.validate()
    return Invocation("serve", config=cfg, notices=notices)


# ---- command line -------------------------------------------------------------


def _scan_flags(args: list[str]) -> tuple[dict[str, _Value], list[str]]:
    """Go flag-package scanning: returns the flags seen (last one wins) and
    the arguments left after the first non-flag."""
    out: dict[str, _Value] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return out, args[i + 1:]
        if not arg.startswith("-") or arg == "-":
            return out, args[i:]
        body = arg[2:] if arg.startswith("--") else arg[1:]
        if not body or body.startswith("-") or body.startswith("="):
            raise UsageError(f"bad flag syntax: {arg}")
        name, eq, value = body.partition("=")
        i += 1
        if name in ("h", "help"):
            return {"help": _Value("true", "flag --help")}, []
        kind = _kind_of(name)
        if kind is None:
            raise UsageError(f"unknown flag: --{name}")
        if eq:
            raw: str = value
        elif kind == "bool":
            raw = "true"
        else:
            if i >= len(args):
                raise UsageError(f"flag needs an argument: --{name}")
            raw = args[i]
            i += 1
        source = f"flag --{name}"
        if name in UNSUPPORTED:
            _check_unsupported(UNSUPPORTED[name], raw, source)
            continue
        if kind == "bool":
            _to_bool(raw, source)  # a bad boolean is a usage error right here, as in Go
        out[name] = _Value(raw, source)
    return out, []


def _kind_of(name: str) -> str | None:
    if name in FLAGS:
        return FLAGS[name].kind
    if name in UNSUPPORTED:
        return UNSUPPORTED[name].kind
    return None


# ---- environment --------------------------------------------------------------


def env_name(flag: str) -> str:
    """etcd's variable for a flag: ETCD_ + the name in upper snake case."""
    return ENV_PREFIX + flag.upper().replace("-", "_")


def _merge_environment(values: dict[str, _Value], environ: Mapping[str, str],
                       notices: list[tuple[int, str]]) -> None:
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var in _ENV_NOT_FLAGS or var == "ETCD_CONFIG_FILE":
            continue
        name = var[len(ENV_PREFIX):].lower().replace("_", "-")
        raw = environ[var]
        if name == "version":
            notices.append((logging.WARNING, f"environment variable {var} is ignored (use --version)"))
            continue
        if name in UNSUPPORTED:
            _check_unsupported(UNSUPPORTED[name], raw, var)
            continue
        if name not in FLAGS:
            notices.append((logging.WARNING, f"unrecognized environment variable {var}={raw}"))
            continue
        if name in values:
            notices.append((logging.WARNING, f"recognized environment variable {var}, but unused: "
                                             "shadowed by corresponding flag"))
            continue
        notices.append((logging.INFO, f"recognized and used environment variable {var}={raw}"))
        values[name] = _Value(raw, var)


# ---- config file --------------------------------------------------------------


def _load_config_file(path: str) -> dict[str, _Value]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path!r}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse config file {path!r}: {exc}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"config file {path!r} must hold a YAML mapping of etcd's configuration keys")
    out: dict[str, _Value] = {}
    for key, raw in doc.items():
        key = str(key)
        if raw is None:
            continue  # etcd's sample file leaves unset keys empty
        if key in _TLS_SECTIONS:
            out.update(_tls_section(key, raw))
            continue
        source = f"config file key {key!r}"
        if key in UNSUPPORTED:
            _check_unsupported(UNSUPPORTED[key], raw, source)
            continue
        if key not in FLAGS or key in ("config-file", "version"):
            raise ConfigError(f"unknown key {key!r} in config file {path!r}")
        out[key] = _Value(raw, source)
    return out


def _tls_section(section: str, raw: Any) -> dict[str, _Value]:
    """The flags one of etcd's TLS sections of a config file sets (refusing what petcd lacks)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config file key {section!r} must be a mapping")
    keys = _TLS_SECTIONS[section]
    out: dict[str, _Value] = {}
    for key, value in raw.items():
        if value is None:
            continue
        name = keys.get(str(key))
        if name is None:
            raise ConfigError(f"unknown key '{section}.{key}' in config file")
        source = f"config file key '{section}.{key}'"
        if name in UNSUPPORTED:
            _check_unsupported(UNSUPPORTED[name], value, source)
        else:
            out[name] = _Value(value, source)
    return out


# ---- values ---------------------------------------------------------------------


def _check_unsupported(spec: Unsupported, raw: Any, source: str) -> None:
    """Accept etcd's default (or a value describing what petcd does anyway);
    refuse everything else."""
    given = _normalise(spec.kind, raw)
    if given is not None and given in {_normalise(spec.kind, v) for v in (spec.default, *spec.also_ok)}:
        return
    where = "" if source == f"flag --{spec.name}" else f" (from {source})"
    raise UnsupportedError(f"flag --{spec.name} is not supported yet{where}")


def _normalise(kind: str, raw: Any) -> object | None:
    """A comparable form of an unsupported flag's value, or None if it does
    not even parse (then it is certainly not the default)."""
    text = _text(raw)
    try:
        if kind == "bool":
            return _to_bool(text, "")
        if kind == "int":
            return int(text)
        if kind == "duration":
            return 0.0 if text == "" else parse_go_duration(text)
    except (UsageError, ValueError):
        return None
    return text


def _text(raw: Any) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, list | tuple):
        return ",".join(_text(x) for x in raw)
    return str(raw)


_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def _to_bool(raw: Any, source: str) -> bool:
    """Go's strconv.ParseBool."""
    if isinstance(raw, bool):
        return raw
    text = str(raw)
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise UsageError(f"invalid boolean value {text!r} for {source}: parse error")


def _convert(flag: Flag, value: _Value) -> Any:
    raw, source = value.raw, value.source
    kind = flag.kind
    if kind == "bool":
        return _to_bool(raw, source)
    if kind == "int":
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            raise UsageError(f"invalid value {raw!r} for {source}: not an integer")
        try:
            return int(raw)
        except ValueError:
            raise UsageError(f"invalid value {raw!r} for {source}: parse error") from None
    if kind == "duration":
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw / 1e9  # a YAML number is Go's time.Duration: nanoseconds
        try:
            return parse_go_duration(str(raw))
        except ValueError as exc:
            raise UsageError(f"invalid value {raw!r} for {source}: {exc}") from None
    if kind == "list":
        items = raw if isinstance(raw, list) else str(raw).split(",")
        return [str(x).strip() for x in items if str(x).strip()]
    text = _text(raw)
    if flag.choices and text not in flag.choices:
        raise UsageError(f"invalid value {text!r} for {source}: valid values are {', '.join(flag.choices)}")
    return text


def _build_config(values: dict[str, _Value], notices: list[tuple[int, str]]) -> ServerConfig:
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        flag = FLAGS[name]
        converted = _convert(flag, value)
        if flag.attr is not None:
            kwargs[flag.attr] = converted
    if "log_outputs" in kwargs:
        kwargs["log_outputs"] = ["stderr" if o == "default" else o for o in kwargs["log_outputs"]] or ["stderr"]
    if kwargs.get("snapshot_count") == 0:
        kwargs["snapshot_count"] = DEFAULT_SNAPSHOT_COUNT  # etcd: 0 selects the default
    if "logger" in values:
        logger = _text(values["logger"].raw)
        if logger == "capnslog":
            notices.append((logging.WARNING, "--logger=capnslog: petcd logs zap's JSON lines only"))
        elif logger != "zap":
            raise UsageError(f"invalid --logger option {logger!r}")
    cfg = ServerConfig(**kwargs)
    if "wal-dir" in values:
        wal_dir = _text(values["wal-dir"].raw)
        if wal_dir and os.path.abspath(wal_dir) != os.path.abspath(cfg.wal_dir()):
            raise UnsupportedError("flag --wal-dir is not supported yet (only its default, <data-dir>/member/wal)")
    return cfg


def usage() -> str:
    """The --help text: etcd's layout, petcd's flags and defaults."""
    lines = [
        "Usage:",
        "",
        "  petcd [flags]",
        "    Start a petcd server.",
        "",
        "  petcd --version",
        "    Show the version of petcd.",
        "",
        "  petcd -h | --help",
        "    Show the help information about petcd.",
        "",
        "  petcd --config-file",
        "    Path to the server configuration file. Note that if a configuration file is provided,"
        " other command line flags and environment variables will be ignored.",
        "",
        "  petcd snapshot restore FILE --data-dir DIR [--name N --initial-cluster C",
        "                         --initial-cluster-token T --initial-advertise-peer-urls U]",
        "  petcd snapshot status FILE [-w simple|json|table|fields]",
        "    Restore a member's data directory from a snapshot, or describe a snapshot.",
        "",
        "  petcd cluster [--size 1|3|5] [--data-dir DIR] [--base-port PORT]",
        "    Run a local cluster on 127.0.0.1, one process per member, until Ctrl-C"
        " ('petcd cluster --help' for details).",
        "",
        "Flags (each also as ETCD_<NAME>, e.g. ETCD_DATA_DIR for --data-dir):",
    ]
    for f in FLAGS.values():
        if f.name in ("version", "config-file"):
            continue
        lines.append(f"  --{f.name} '{f.default}'")
        lines.append(f"    {f.help}")
    lines.append("")
    lines.append("etcd flags petcd does not support yet (refused unless given etcd's default):")
    names = sorted(UNSUPPORTED)
    for i in range(0, len(names), 3):
        lines.append("  " + ", ".join(f"--{n}" for n in names[i:i + 3]))
    return "\n".join(lines)
