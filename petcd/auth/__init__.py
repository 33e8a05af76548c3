"""Auth: users, roles, permissions and tokens, as etcd 3.4 has them.

- :mod:`petcd.auth.store`: the store (the backend's auth buckets) and the
  checks every request goes through;
- :mod:`petcd.auth.permissions`: per-user merged permission intervals;
- :mod:`petcd.auth.tokens`: ``simple`` and ``jwt`` tokens;
- :mod:`petcd.auth.errors`: etcd's errors, with their gRPC statuses.
"""

from petcd.auth.errors import AuthError
from petcd.auth.store import AuthStore
from petcd.auth.tokens import AuthInfo, TokenProvider, new_token_provider

__all__ = ["AuthError", "AuthInfo", "AuthStore", "TokenProvider", "new_token_provider"]
