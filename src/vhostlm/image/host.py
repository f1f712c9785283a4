"""Host helpers the image builder's modules share: running commands, dpkg queries, file hashes."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from vhostlm.errors import SetupError

BIN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
"""Where to look for host programs, whatever PATH the caller has."""


def run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; a missing program becomes a SetupError."""
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise SetupError(f"{cmd[0]} is not installed or not in PATH: {exc}") from exc


def last_line(proc: subprocess.CompletedProcess[str]) -> str:
    """Last non-empty line of a failed command's output, for a one-line error message."""
    lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit code {proc.returncode}"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's content."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dpkg_version(package: str) -> str | None:
    """Installed version of a Debian package, or None when it is not installed."""
    proc = run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev} ${Version}", package])
    if proc.returncode != 0 or not proc.stdout.startswith("ii"):
        return None
    return proc.stdout.split()[-1]
