"""File-system durability helpers shared by the WAL, snapshot files and the backend."""

from __future__ import annotations

import os
import stat

# etcd's mode for every directory it creates under the data dir: only the
# member's own user may read the keys and the WAL
PRIVATE_DIR_MODE = 0o700


class DirPermissionError(Exception):
    """A directory exists with permissions wider than PRIVATE_DIR_MODE; the
    message is etcd's (fileutil.CheckDirPermission)."""


def make_private_dirs(path: str) -> None:
    """Create path and any missing parents with mode 0700 (as etcd's
    fileutil.TouchDirAll does); directories that exist are left as they are."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(os.path.abspath(path))
    if parent and not os.path.isdir(parent):
        make_private_dirs(parent)
    try:
        os.mkdir(path, PRIVATE_DIR_MODE)
    except FileExistsError:
        if not os.path.isdir(path):
            raise


def check_dir_permission(path: str, mode: int = PRIVATE_DIR_MODE) -> None:
    """Raise DirPermissionError when path grants any permission bit beyond
    mode (etcd 3.4 logs this as a warning and carries on)."""
    st = os.stat(path)
    if stat.S_IMODE(st.st_mode) & ~mode:
        raise DirPermissionError(
            f"directory {go_quote(path)} exist, but the permission is {go_quote(stat.filemode(st.st_mode))}. "
            f"The recommended permission is {go_quote(stat.filemode(stat.S_IFREG | mode))} to prevent possible "
            "unprivileged access to the data."
        )


def go_quote(s: str) -> str:
    """Go's %q for the plain strings used here."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


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
