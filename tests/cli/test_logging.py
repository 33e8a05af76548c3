"""Log lines are zap's JSON: level, ts, caller, msg, then extra fields."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from petcd.cli.logging_setup import LoggingSetupError, ZapJsonFormatter, setup_logging


@pytest.fixture
def clean_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)


def test_a_record_is_one_json_line_with_zaps_fields() -> None:
    rec = logging.LogRecord("petcd.server", logging.WARNING, __file__, 1, "slow apply %dms", (120,), None)
    rec.fields = {"took": "120ms", "expected-duration": "100ms"}
    rec.member = "8e9e05c52164694d"
    line = ZapJsonFormatter().format(rec)
    assert "\n" not in line
    doc = json.loads(line)
    assert list(doc)[:4] == ["level", "ts", "caller", "msg"]
    assert doc["level"] == "warn" and doc["caller"] == "petcd.server" and doc["msg"] == "slow apply 120ms"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["ts"])
    assert doc["took"] == "120ms" and doc["expected-duration"] == "100ms" and doc["member"] == "8e9e05c52164694d"


def test_exceptions_carry_error_and_stacktrace() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    doc = json.loads(ZapJsonFormatter().format(rec))
    assert doc["level"] == "error" and doc["error"] == "boom" and "ValueError" in doc["stacktrace"]


def test_levels_follow_log_level(clean_root: None, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("warn", ["stderr"])
    logging.getLogger("petcd.t").info("hidden")
    logging.getLogger("petcd.t").warning("shown", extra={"fields": {"n": 1}})
    logging.getLogger("petcd.t").critical("worst")
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert [(d["level"], d["msg"]) for d in lines] == [("warn", "shown"), ("fatal", "worst")]
    assert lines[0]["n"] == 1
    setup_logging("panic", ["stderr"])  # panic and fatal keep only the worst
    logging.getLogger("petcd.t").error("hidden too")
    assert capsys.readouterr().err == ""


def test_outputs_stdout_and_file_without_duplicates(clean_root: None, capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path) -> None:
    setup_logging("info", ["stderr"])
    setup_logging("debug", ["stdout", str(tmp_path / "petcd.log")])  # replaces the first setup
    logging.getLogger("petcd.t").debug("once")
    out = capsys.readouterr()
    assert out.err == ""
    assert [json.loads(x)["msg"] for x in out.out.splitlines()] == ["once"]
    assert [json.loads(x)["msg"] for x in (tmp_path / "petcd.log").read_text().splitlines()] == ["once"]


def test_bad_level_or_output(clean_root: None, tmp_path: Path) -> None:
    with pytest.raises(LoggingSetupError, match="unknown log level 'verbose'"):
        setup_logging("verbose", ["stderr"])
    with pytest.raises(LoggingSetupError, match="cannot open log output"):
        setup_logging("info", [str(tmp_path / "no" / "such" / "dir" / "f.log")])
