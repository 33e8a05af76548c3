"""The one place that says which etcd release petcd reproduces.

Clients read it from Status (and etcdctl prints it); `petcd --version`
prints it too. Kept in a module of its own, with no imports, so the command
line can show it without loading the server.
"""

from __future__ import annotations

# The etcd release whose API and behaviour petcd reproduces.
ETCD_VERSION = "3.4.23"

# The cluster version a leader sets, through raft, once a new cluster has one:
# etcd stores major.minor.0 of its release (and /version shows it so).
CLUSTER_VERSION = "3.4.0"
