"""An in-process petcd member, for Python programs and tests."""

from petcd.embed.etcd import Etcd, serve

__all__ = ["Etcd", "serve"]
