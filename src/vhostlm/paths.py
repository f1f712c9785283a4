"""Checks of the paths a user gives (--output, --junit) before anything starts.

A run that finds out at its end that it cannot write its results has wasted its time and
would end in a traceback; these checks say which option is wrong, in one line, first.
Nothing is created: writability is probed with a temporary directory that is removed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from vhostlm.errors import UsageError


def _nearest_existing(path: Path) -> Path:
    """`path` or its closest ancestor that exists."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def _check_writable_dir(option: str, directory: Path) -> None:
    try:
        probe = tempfile.mkdtemp(prefix=".vhostlm-probe-", dir=directory)
    except OSError as exc:
        raise UsageError(f"{option}: cannot write in {directory}: {exc.strerror or exc}") from exc
    Path(probe).rmdir()


def check_output_dir(option: str, path: Path) -> None:
    """`path` is a directory, or can be made one: every existing part of it is a writable
    directory."""
    if not str(path):
        raise UsageError(f"{option}: empty path")
    path = path.absolute()
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise UsageError(f"{option}: {existing} is not a directory")
    _check_writable_dir(option, existing)


def check_file_target(option: str, path: Path) -> None:
    """A file can be written at `path`: it is no directory, and its directory is (or can
    be made) a writable one."""
    if not str(path):
        raise UsageError(f"{option}: empty path")
    path = path.absolute()
    if path.is_dir():
        raise UsageError(f"{option}: {path} is a directory, not a file")
    existing = _nearest_existing(path.parent)
    if not existing.is_dir():
        raise UsageError(f"{option}: {existing} is not a directory")
    _check_writable_dir(option, existing)
