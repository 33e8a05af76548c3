"""`petcd`: start a member from etcd's flags, or run a snapshot subcommand.

Exit status: 0 after a clean shutdown, --version or --help; 1 when the
configuration is wrong or the server fails; 2 for a command line petcd does
not understand or does not support (Go's flag package, and so etcd, use 2).
"""

from __future__ import annotations

import faulthandler
import logging
import os
import platform
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version

from petcd.cli.limits import ReserveMonitor, raise_fd_limit
from petcd.cli.logging_setup import LoggingSetupError, setup_logging
from petcd.server import flags
from petcd.server.config import ConfigError, ServerConfig
from petcd.version import ETCD_VERSION as ETCD_API_VERSION

log = logging.getLogger("petcd.cli")


def petcd_version() -> str:
    import petcd

    version = getattr(petcd, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return dist_version("petcd")
    except PackageNotFoundError:
        return "0.1.0"


def version_text() -> str:
    return (
        f"petcd Version: {petcd_version()}\n"
        f"etcd API Version: {ETCD_API_VERSION}\n"
        f"Python Version: {platform.python_version()}\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "cluster":
        from petcd.cli import cluster

        return cluster.main(args[1:])
    if args and args[0] == "migrate":
        from petcd.cli import migrate

        return migrate.main(args[1:])
    if args and args[0] == "wal":
        from petcd.cli import wal

        return wal.main(args[1:])
    try:
        inv = flags.parse(args, os.environ)
    except flags.UsageError as exc:
        print(f"petcd: {exc}", file=sys.stderr)
        if not isinstance(exc, flags.UnsupportedError):
            print("Run 'petcd --help' for the flags petcd accepts.", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"petcd: {exc}", file=sys.stderr)
        return 1
    if inv.action == "version":
        sys.stdout.write(version_text())
        return 0
    if inv.action == "help":
        print(flags.usage())
        return 0
    if inv.action == "snapshot":
        from petcd.cli import snapshot

        return snapshot.main(inv.args)
    assert inv.config is not None
    return run_server(inv.config, inv.notices)


def run_server(cfg: ServerConfig, notices: list[tuple[int, str]]) -> int:
    # First, before anything can open or create a file: an etcd data dir is
    # refused untouched.
    from petcd.storage.etcd_datadir import EtcdDataDirError, refuse_etcd_data_dir

    try:
        refuse_etcd_data_dir(cfg.data_dir, cfg.backend_path(), cfg.wal_dir())
    except EtcdDataDirError as exc:
        print(f"petcd: {exc}", file=sys.stderr)
        return 1
    try:
        setup_logging(cfg.log_level, cfg.log_outputs)
    except LoggingSetupError as exc:
        print(f"petcd: {exc}", file=sys.stderr)
        return 1
    for level, msg in notices:
        log.log(level, msg)
    # A fault in native code (SIGBUS on a db page that vanished, say) then
    # leaves a Python traceback on stderr instead of a silent death.
    faulthandler.enable()
    log.info(
        "starting petcd",
        extra={"fields": {
            "petcd-version": petcd_version(),
            "etcd-api-version": ETCD_API_VERSION,
            "python-version": platform.python_version(),
            "name": cfg.name,
            "data-dir": cfg.data_dir,
            "listen-client-urls": cfg.listen_client_urls,
            "advertise-client-urls": cfg.advertise_client_urls,
            "listen-peer-urls": cfg.listen_peer_urls,
            "initial-advertise-peer-urls": cfg.initial_advertise_peer_urls,
            "initial-cluster": cfg.initial_cluster or ",".join(
                f"{n}={u}" for n, urls in cfg.initial_cluster_map().items() for u in urls
            ),
            "initial-cluster-state": cfg.initial_cluster_state,
            "initial-cluster-token": cfg.initial_cluster_token,
            "heartbeat-interval": f"{cfg.heartbeat_interval_ms}ms",
            "election-timeout": f"{cfg.election_timeout_ms}ms",
            "snapshot-count": cfg.snapshot_count,
            "quota-backend-bytes": cfg.quota_bytes(),
            "max-request-bytes": cfg.max_request_bytes,
            "max-txn-ops": cfg.max_txn_ops,
            "auto-compaction-mode": cfg.auto_compaction_mode,
            "auto-compaction-retention": cfg.auto_compaction_retention,
            "unsafe-no-fsync": cfg.unsafe_no_fsync,
        }},
    )
    monitor = ReserveMonitor(raise_fd_limit()).start()
    try:
        from petcd.embed.etcd import serve

        return serve(cfg)
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        log.critical("petcd stopped: %s", exc, exc_info=True)
        return 1
    finally:
        monitor.stop()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
