"""Test support that ships with petcd: tools other packages' tests (and outside users) can reuse.

Nothing here is imported by the server; it exists so that test suites can check
petcd's guarantees (for example, linearizability of recorded client histories).
"""

from petcd.testing.linearizability import CheckResult, CheckTimeout, HistoryError, Op, Value, check, check_key

__all__ = ["CheckResult", "CheckTimeout", "HistoryError", "Op", "Value", "check", "check_key"]
