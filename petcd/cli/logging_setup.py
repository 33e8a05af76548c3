"""Logging as etcd's zap logger writes it: one JSON object per line.

Each line has ``level`` (zap's names: debug, info, warn, error, fatal),
``ts`` (ISO 8601, UTC, milliseconds), ``caller`` (the Python logger's name)
and ``msg``, then any extra fields: the keys of a ``fields`` dict passed as
``extra={"fields": {...}}``, and any other attribute given through
``extra``. Log collectors built for etcd's output parse it unchanged.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

# etcd's --log-level names -> Python levels; panic and fatal both mean "only
# the worst", which Python calls CRITICAL.
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "panic": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}

_ZAP_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "fatal",
}

# Attributes every LogRecord has; anything else came in through ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "fields"}


def zap_level(levelno: int) -> str:
    if levelno in _ZAP_NAMES:
        return _ZAP_NAMES[levelno]
    if levelno < logging.INFO:
        return "debug"
    if levelno < logging.WARNING:
        return "info"
    if levelno < logging.ERROR:
        return "warn"
    return "error" if levelno < logging.CRITICAL else "fatal"


class ZapJsonFormatter(logging.Formatter):
    """Formats a record as one zap-style JSON line (no trailing newline)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        doc: dict[str, Any] = {
            "level": zap_level(record.levelno),
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "caller": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for k, v in fields.items():
                doc.setdefault(str(k), v)
        for k, v in vars(record).items():
            if k not in _STANDARD and not k.startswith("_"):
                doc.setdefault(k, v)
        if record.exc_info and record.exc_info[1] is not None:
            doc.setdefault("error", str(record.exc_info[1]))
            doc["stacktrace"] = self.formatException(record.exc_info)
        elif record.stack_info:
            doc["stacktrace"] = record.stack_info
        return json.dumps(doc, default=str, ensure_ascii=False, separators=(",", ":"))


class LoggingSetupError(Exception):
    """An unknown level or an output that cannot be opened."""


def setup_logging(level: str = "info", outputs: list[str] | None = None) -> None:
    """Send every logger's records at or above ``level`` (etcd's names) to
    each output as zap JSON lines. Outputs: "stderr", "stdout", "default"
    (stderr) or a file path (appended to). Replaces earlier handlers this
    function installed, so calling it twice does not double the lines."""
    if level not in LEVELS:
        raise LoggingSetupError(f"unknown log level {level!r} (only supports {', '.join(LEVELS)})")
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h.formatter, ZapJsonFormatter):
            root.removeHandler(h)
            if isinstance(h, logging.FileHandler):
                h.close()
    formatter = ZapJsonFormatter()
    for out in outputs or ["stderr"]:
        handler: logging.Handler
        if out in ("stderr", "default"):
            handler = logging.StreamHandler(sys.stderr)
        elif out == "stdout":
            handler = logging.StreamHandler(sys.stdout)
        else:
            try:
                handler = logging.FileHandler(out, mode="a", encoding="utf-8")
            except OSError as exc:
                raise LoggingSetupError(f"cannot open log output {out!r}: {exc.strerror or exc}") from None
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(LEVELS[level])
    # grpc and asyncio chatter at debug level is not petcd's to show unless asked.
    logging.getLogger("asyncio").setLevel(max(LEVELS[level], logging.WARNING))

