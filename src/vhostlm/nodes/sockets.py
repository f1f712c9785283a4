"""Unix sockets of a run (QMP, consoles, vhost-user) readable and writable by root only.

QEMU and testpmd create their sockets with the process umask (usually 0755 / 0775); the
socket directory is 0700 already, and the sockets themselves are set to 0600 as soon as
they exist, so neither a wider directory nor a copied path gives anyone else a monitor.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from pathlib import Path

from vhostlm.errors import UsageError

SOCKET_MODE = 0o600


def secure_sockets(directory: Path) -> list[Path]:
    """chmod 0600 every unix socket in `directory` that is wider; the ones changed."""
    changed = []
    for path in sorted(directory.iterdir()) if directory.is_dir() else []:
        with contextlib.suppress(FileNotFoundError):  # a socket can go while we look
            st = path.lstat()
            if stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) != SOCKET_MODE:
                os.chmod(path, SOCKET_MODE)
                changed.append(path)
    return changed


def check_socket_free(path: Path) -> None:
    """UsageError when a program already listens on unix socket `path`; drop a stale file."""
    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # nobody listens: a leftover of a crashed run
        return
    finally:
        probe.close()
    raise UsageError(
        f"vhost socket {path} is in use by another program: stop it or use another path"
    )
