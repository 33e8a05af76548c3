"""ServerConfig: everything one petcd member is started with.

The field names are what the server reads; the defaults are etcd 3.4's (the
data directory is ``<name>.petcd`` instead of ``<name>.etcd``, and the client
and peer listeners bind 127.0.0.1 rather than localhost). ``validate`` turns a
bad combination into a ``ConfigError`` carrying etcd's message for the same
mistake, so people and scripts that know etcd recognise it.
"""

from __future__ import annotations

import ipaddress
import math
import os
import random
import re
import ssl
from dataclasses import dataclass, field

from petcd.raft import Config as RaftConfig
from petcd.raft import MemoryStorage
from petcd.server.tls import TLSConfigError, cipher_suite_names, tls_version
from petcd.server.urls import URLError, parse_url

# etcd's DefaultQuotaBytes: the backend quota when --quota-backend-bytes is 0.
DEFAULT_QUOTA_BYTES = 2 * 1024 * 1024 * 1024
# etcd refuses election timeouts longer than this (maxElectionMs).
MAX_ELECTION_MS = 50000
# etcd's default --snapshot-count, also used when 0 is given.
DEFAULT_SNAPSHOT_COUNT = 100000

LOG_LEVELS = ("debug", "info", "warn", "error", "panic", "fatal")
CLUSTER_STATES = ("new", "existing")
COMPACTION_MODES = ("periodic", "revision")


class ConfigError(Exception):
    """A configuration petcd cannot start with; str() is the message for the user."""


@dataclass(slots=True)
class ServerConfig:
    """One member's configuration (etcd's embed.Config, the parts petcd has).

    ``data_dir`` holds the resolved directory once constructed: an empty value
    becomes ``<name>.petcd``. An empty ``initial_cluster`` means this member
    alone, at its advertised peer URLs; ``initial_cluster_map`` applies that.
    """

    name: str = "default"
    data_dir: str = ""
    listen_client_urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:2379"])
    advertise_client_urls: list[str] = field(default_factory=lambda: ["http://localhost:2379"])
    listen_peer_urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:2380"])
    initial_advertise_peer_urls: list[str] = field(default_factory=lambda: ["http://localhost:2380"])
    initial_cluster: str = ""
    initial_cluster_state: str = "new"
    initial_cluster_token: str = "etcd-cluster"
    heartbeat_interval_ms: int = 100
    election_timeout_ms: int = 1000
    snapshot_count: int = DEFAULT_SNAPSHOT_COUNT
    max_request_bytes: int = 1572864
    quota_backend_bytes: int = 0
    max_txn_ops: int = 128
    auto_compaction_mode: str = "periodic"
    auto_compaction_retention: str = "0"
    log_level: str = "info"
    log_outputs: list[str] = field(default_factory=lambda: ["stderr"])
    watch_progress_notify_interval_s: float = 600.0
    # gRPC keepalive on the client port (etcd's --grpc-keepalive-*): the
    # shortest interval between client pings the server tolerates, how long a
    # connection stays silent before the server pings it, and how long the
    # server waits for that ping's ack before closing the connection.
    grpc_keepalive_min_time_s: float = 5.0
    grpc_keepalive_interval_s: float = 7200.0
    grpc_keepalive_timeout_s: float = 20.0
    unsafe_no_fsync: bool = False
    # etcd 3.4 defaults to false; petcd runs pre-vote unless told not to
    # (etcd 3.5 made it the default), so a member coming back from a
    # partition does not depose a healthy leader.
    pre_vote: bool = True
    # TLS on the client URLs (etcd's --cert-file & co.; petcd/server/tls.py)
    cert_file: str = ""
    key_file: str = ""
    trusted_ca_file: str = ""
    client_cert_auth: bool = False
    auto_tls: bool = False
    # TLS on the peer URLs (etcd's --peer-* security flags; petcd/server/tls.py)
    peer_cert_file: str = ""
    peer_key_file: str = ""
    peer_trusted_ca_file: str = ""
    peer_client_cert_auth: bool = False
    peer_auto_tls: bool = False
    peer_cert_allowed_cn: str = ""
    # both ports' TLS (etcd 3.5's --cipher-suites, --tls-min-version, --tls-max-version)
    cipher_suites: list[str] = field(default_factory=list)
    tls_min_version: str = "TLS1.2"
    tls_max_version: str = ""
    # The JSON gateway on the client port (/health, /version, /metrics are served either way).
    enable_grpc_gateway: bool = True
    # --metrics: "extensive" adds grpc_server_handling_seconds (any other value is basic, as etcd takes it).
    metrics: str = "basic"
    # Extra listeners serving /metrics and /health only, as etcd's --listen-metrics-urls.
    listen_metrics_urls: list[str] = field(default_factory=list)
    # auth: the token scheme (--auth-token), simple tokens' TTL in seconds, bcrypt's cost
    auth_token: str = "simple"
    auth_token_ttl: int = 300
    bcrypt_cost: int = 10

    def __post_init__(self) -> None:
        if not self.data_dir:
            self.data_dir = f"{self.name}.petcd"

    # ---- on-disk layout (etcd's) --------------------------------------------

    def member_dir(self) -> str:
        return os.path.join(self.data_dir, "member")

    def wal_dir(self) -> str:
        return os.path.join(self.member_dir(), "wal")

    def snap_dir(self) -> str:
        return os.path.join(self.member_dir(), "snap")

    def backend_path(self) -> str:
        return os.path.join(self.snap_dir(), "db")

    # ---- derived values -------------------------------------------------------

    def initial_cluster_map(self) -> dict[str, list[str]]:
        """Member name -> its peer URLs (sorted, as etcd stores them).

        A name repeated in ``initial_cluster`` collects several URLs. Raises
        ConfigError on a malformed entry.
        """
        if not self.initial_cluster.strip():
            return {self.name: sorted(self.initial_advertise_peer_urls)}
        return parse_initial_cluster(self.initial_cluster)

    def quota_bytes(self) -> int:
        """The backend quota in bytes: 0 selects etcd's 2 GiB default; a
        negative setting disables the quota, which is returned as 0."""
        if self.quota_backend_bytes == 0:
            return DEFAULT_QUOTA_BYTES
        return max(0, self.quota_backend_bytes)

    def compaction_retention(self) -> float | int:
        """The auto-compaction retention: seconds (float) in periodic mode,
        where a bare number means hours; a revision count (int) in revision
        mode. 0 means auto compaction is off."""
        return parse_compaction_retention(self.auto_compaction_mode, self.auto_compaction_retention)

    def election_ticks(self) -> int:
        """The election timeout in heartbeat ticks (raft ticks once per
        heartbeat interval), at least 1."""
        return max(1, self.election_timeout_ms // self.heartbeat_interval_ms)

    def tick_seconds(self) -> float:
        """How often the raft core ticks: once per heartbeat interval."""
        return self.heartbeat_interval_ms / 1000.0

    def request_timeout(self) -> float:
        """How long a request waits for raft before it times out: etcd's
        5 s plus two election timeouts."""
        return 5.0 + 2 * self.election_timeout_ms / 1000.0

    def min_lease_ttl(self) -> int:
        """etcd's minimum lease TTL: 1.5 election timeouts, in whole
        seconds, rounded up, so a lease outlives a leader election."""
        return math.ceil((3 * self.election_ticks() // 2) * self.heartbeat_interval_ms / 1000.0)

    def raft_config(self, member_id: int, storage: MemoryStorage, *, peers: list[int], applied: int) -> RaftConfig:
        """The raft core's configuration for this member: the one place
        where flags become raft settings. ``peers`` only when starting a
        new cluster; ``applied`` is the index the state machine holds."""
        return RaftConfig(
            id=member_id,
            peers=list(peers),
            election_tick=self.election_ticks(),
            heartbeat_tick=1,
            storage=storage,
            applied=applied,
            rng=random.Random(),
            pre_vote=self.pre_vote,
            check_quorum=True,
            max_inflight_msgs=512,
            max_size_per_msg=1 << 20,
        )

    # ---- checks -----------------------------------------------------------------

    def validate(self, *, bootstrapping: bool | None = None) -> None:
        """Raise ConfigError, with etcd's message where etcd has one, for a
        configuration a member cannot start with.

        The cluster checks (local name present, advertised peer URLs matching
        the initial cluster, no duplicate URLs) only apply when bootstrapping a
        new data directory, as in etcd: a restarting member takes its
        membership from disk. ``bootstrapping`` None means "no WAL yet".
        """
        if bootstrapping is None:
            bootstrapping = not os.path.isdir(self.wal_dir())
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError(f"KeyFile and CertFile must both be present[key: {self.key_file}, cert: {self.cert_file}]")
        check_tls_versions(self.cipher_suites, self.tls_min_version, self.tls_max_version)
        client_tls = bool(self.cert_file or self.auto_tls)
        for u in self.listen_client_urls:
            check_url(u, "--listen-client-urls", bind=True, tls=True)
            if parse_url(u).tls and not client_tls:
                raise ConfigError(f"TLS key/cert (--cert-file, --key-file) must be provided for client url {u} "
                                  "with HTTPS scheme")
        if bool(self.peer_cert_file) != bool(self.peer_key_file):
            raise ConfigError(f"KeyFile and CertFile must both be present"
                              f"[key: {self.peer_key_file}, cert: {self.peer_cert_file}]")
        peer_tls = bool(self.peer_cert_file or self.peer_auto_tls)
        for u in self.listen_peer_urls:
            check_url(u, "--listen-peer-urls", bind=True, tls=True)
            if parse_url(u).tls and not peer_tls:
                raise ConfigError(f"cannot listen on TLS for {parse_url(u).netloc}: KeyFile and CertFile are not presented")
        for u in self.advertise_client_urls:
            check_url(u, "--advertise-client-urls", tls=True)
        for u in self.initial_advertise_peer_urls:
            check_url(u, "--initial-advertise-peer-urls", tls=True)
        if not self.listen_client_urls:
            raise ConfigError("--listen-client-urls must name at least one URL")
        if self.initial_cluster_state not in CLUSTER_STATES:
            raise ConfigError(f"unexpected clusterState {self.initial_cluster_state!r}")
        if self.heartbeat_interval_ms <= 0:
            raise ConfigError(f"--heartbeat-interval must be >0 (set to {self.heartbeat_interval_ms}ms)")
        if self.election_timeout_ms <= 0:
            raise ConfigError(f"--election-timeout must be >0 (set to {self.election_timeout_ms}ms)")
        if 5 * self.heartbeat_interval_ms > self.election_timeout_ms:
            raise ConfigError(
                f"--election-timeout[{self.election_timeout_ms}ms] should be at least as 5 times as "
                f"--heartbeat-interval[{self.heartbeat_interval_ms}ms]"
            )
        if self.election_timeout_ms > MAX_ELECTION_MS:
            raise ConfigError(
                f"--election-timeout[{self.election_timeout_ms}ms] is too long, "
                f"and should be set less than {MAX_ELECTION_MS}ms"
            )
        if self.snapshot_count <= 0:
            raise ConfigError(f"--snapshot-count must be >0 (set to {self.snapshot_count})")
        if self.max_request_bytes <= 0:
            raise ConfigError(f"--max-request-bytes must be >0 (set to {self.max_request_bytes})")
        if self.max_txn_ops <= 0:
            raise ConfigError(f"--max-txn-ops must be >0 (set to {self.max_txn_ops})")
        if self.watch_progress_notify_interval_s <= 0:
            raise ConfigError("--experimental-watch-progress-notify-interval must be >0")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"unknown log level {self.log_level!r} (only supports {', '.join(LOG_LEVELS)})")
        self.compaction_retention()
        cluster = self.initial_cluster_map()
        for urls in cluster.values():
            for u in urls:
                check_url(u, "--initial-cluster", tls=True)
        if bootstrapping:
            self._check_bootstrap(cluster)

    def _check_bootstrap(self, cluster: dict[str, list[str]]) -> None:
        if self.name not in cluster:
            raise ConfigError(f"couldn't find local name {self.name!r} in the initial cluster configuration")
        seen: set[str] = set()
        for urls in cluster.values():
            for u in urls:
                if u in seen:
                    raise ConfigError(f"initial cluster {format_initial_cluster(cluster)} has duplicate url")
                seen.add(u)
        mine = cluster[self.name]
        advertised = sorted(self.initial_advertise_peer_urls)
        if mine != advertised:
            listed = ",".join(f"{self.name}={u}" for u in mine)
            raise ConfigError(
                f"--initial-cluster has {listed} but missing from "
                f"--initial-advertise-peer-urls={','.join(advertised)}"
            )


def parse_initial_cluster(text: str) -> dict[str, list[str]]:
    """Parse etcd's ``name=url,name=url,...``; a repeated name gathers URLs.
    The URLs of each member come back sorted."""
    out: dict[str, list[str]] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, url = item.partition("=")
        name, url = name.strip(), url.strip()
        if not sep or not name or not url:
            raise ConfigError(f"--initial-cluster: {item!r} is not of the form name=url")
        out.setdefault(name, []).append(url)
    for urls in out.values():
        urls.sort()
    return out


def format_initial_cluster(cluster: dict[str, list[str]]) -> str:
    return ",".join(f"{name}={u}" for name, urls in cluster.items() for u in urls)


def check_tls_versions(cipher_suites: list[str], min_version: str, max_version: str) -> None:
    """ConfigError, in etcd 3.5's words, for an unknown cipher suite or TLS
    version, or a minimum above the maximum."""
    try:
        cipher_suite_names(cipher_suites)
        lo, hi = tls_version(min_version), tls_version(max_version)
    except TLSConfigError as exc:
        raise ConfigError(str(exc)) from None
    if hi is not None and lo is not None and lo > hi:
        raise ConfigError(f"min version ({min_version}) is greater than max version ({max_version})")
    if lo is ssl.TLSVersion.TLSv1_3 and cipher_suites:
        # TLS 1.3's suites are not configurable (in Go nor in OpenSSL's cipher list)
        raise ConfigError("cipher suites cannot be configured when only TLS1.3 is enabled")


def check_url(url: str, flag: str, *, bind: bool = False, tls: bool = False) -> None:
    """Raise ConfigError unless url is an http://host:port URL without a path
    (or https, where petcd has TLS: tls=True). For listeners (bind=True) the
    host must be an IP address or localhost, as etcd requires."""
    try:
        u = parse_url(url, ("http", "https") if tls else ("http",))
    except URLError as exc:
        # etcd names the flag for what it cannot parse at all; its other messages stand alone
        raise ConfigError(f"{flag}: {exc}" if exc.reason in ("syntax", "unsupported") else str(exc)) from None
    if bind and u.host != "localhost":
        try:
            ipaddress.ip_address(u.host)
        except ValueError:
            raise ConfigError(f"expected IP in URL for binding ({url})") from None


_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Parse a Go duration ("10m", "1h30m", "500ms", "1.5s", "0") into seconds.
    Raises ValueError with Go's wording for anything else."""
    s = text.strip()
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"time: invalid duration {text!r}")
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            if re.match(r"(\d+(?:\.\d*)?|\.\d+)$", s[pos:]):
                raise ValueError(f"time: missing unit in duration {text!r}")
            raise ValueError(f"time: invalid duration {text!r}")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def parse_compaction_retention(mode: str, retention: str) -> float | int:
    """etcd's reading of --auto-compaction-retention: an integer is hours in
    periodic mode and revisions in revision mode; periodic mode also takes a
    Go duration. Returns seconds (periodic) or revisions (revision)."""
    if mode not in COMPACTION_MODES:
        raise ConfigError(f"unknown auto-compaction-mode {mode!r}")
    text = (retention or "0").strip()
    try:
        n = int(text)
    except ValueError:
        n = None
    if n is not None:
        if n < 0:
            raise ConfigError(f"invalid auto-compaction-retention {retention!r}: must not be negative")
        return float(n * 3600) if mode == "periodic" else n
    if mode == "revision":
        raise ConfigError(f"invalid auto-compaction-retention {retention!r} (revision mode takes an integer)")
    try:
        seconds = parse_go_duration(text)
    except ValueError as exc:
        raise ConfigError(f"invalid auto-compaction-retention {retention!r}: {exc}") from None
    if seconds < 0:
        raise ConfigError(f"invalid auto-compaction-retention {retention!r}: must not be negative")
    return seconds
