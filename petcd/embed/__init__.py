"""petcd for Python programs: ``Member`` and ``Cluster`` start members with a
temporary data dir and free ports (in-process or as subprocesses); ``Etcd``
is one member inside the caller's asyncio loop; ``serve`` runs one as a
program. The pytest plugin (``petcd.embed.pytest_plugin``) builds fixtures
on them."""

from petcd.embed.etcd import Etcd, serve
from petcd.embed.member import Cluster, EmbedError, Member

__all__ = ["Cluster", "EmbedError", "Etcd", "Member", "serve"]
