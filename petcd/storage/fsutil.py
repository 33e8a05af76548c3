"""File-system durability helpers shared by the WAL, snapshot files and the backend."""

from __future__ import annotations

import os


def fsync_dir(path: str) -> None:
    """Make a directory's entries (new, renamed or removed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: str, data: bytes) -> None:
    """Write data to path atomically and durably: a temporary file, fsync,
    rename over path, fsync the directory."""
    tmp = path + ".incoming"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")
