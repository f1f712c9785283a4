"""Run sockets are tightened to 0600; other files are left alone."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from vhostlm.nodes.sockets import secure_sockets


def test_sockets_become_0600_and_files_stay(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(tmp_path / "qmp.sock"))
        (tmp_path / "note.txt").write_text("x")
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE((tmp_path / "qmp.sock").stat().st_mode) == 0o755
        assert secure_sockets(tmp_path) == [tmp_path / "qmp.sock"]
        assert stat.S_IMODE((tmp_path / "qmp.sock").stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "note.txt").stat().st_mode) == 0o644
        assert secure_sockets(tmp_path) == []
        assert secure_sockets(tmp_path / "absent") == []
    finally:
        server.close()
