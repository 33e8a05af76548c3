"""The one place that says which etcd release petcd reproduces.

Clients read it from Status (and etcdctl prints it); `petcd --version`
prints it too. Kept in a module of its own, with no imports, so the command
line can show it without loading the server.
"""

from __future__ import annotations

# The etcd release whose API and behaviour petcd reproduces.
ETCD_VERSION = "3.4.23"
